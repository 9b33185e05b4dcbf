"""Thin Falcon resources: HTTP in, a gate call, HTTP out. Errors go to ``app.py``'s handlers
(``/verify`` answers its own: :mod:`forward_auth.endpoint`)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import falcon

from . import credentials, metrics, verifier
from .endpoint import Incoming, Verify
from .errors import BadRequest, BodyTooLarge, ForwardAuthError, TryRefreshToken, Unauthorised
from .gate import Gate


class VerifyResource:
    """``/verify`` and ``/verify/<original path>`` under Falcon: the endpoint's answer, sent as it is."""

    def __init__(self, verify: Verify) -> None:
        self._verify = verify

    def on_get(self, req: falcon.Request, resp: falcon.Response, path: str | None = None) -> None:
        """The route's own path (``//verify`` and ``/%2Fverify`` are routed here too), never the spelling."""
        env = req.env
        headers = {name[5:].lower().replace("_", "-"): value for name, value in env.items() if name[:5] == "HTTP_"}
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if env.get(name):
                headers[name.lower().replace("_", "-")] = env[name]
        route = "/verify" if path is None else "/verify" + _original_path(env, path)
        answer = self._verify(Incoming(req.method, route, req.query_string, headers, req.remote_addr))
        resp.status = answer.status
        for name, value in answer.headers:
            if name == "set-cookie":
                resp.append_header(name, value)
            else:
                resp.set_header(name, value)
        resp.data = answer.body

    on_post = on_put = on_patch = on_delete = on_head = on_options = on_get
    on_get_path = on_post_path = on_put_path = on_patch_path = on_delete_path = on_head_path = on_options_path = on_get


def _original_path(env: dict[str, Any], path: str) -> str:
    """The original path of ``/verify/<path>`` as the client sent it (percent-encoded), so that the
    policy decodes it once and sees an encoded ``/`` or ``%``: the request target's own when the
    server gives it (``RAW_URI``: gunicorn, the ASGI adapter of the built-in server and granian), else Falcon's decoded path,
    its bytes encoded again."""
    raw = str(env.get("RAW_URI") or "").partition("?")[0]
    if raw.startswith("/verify/"):
        return raw[len("/verify"):]
    return quote("/" + path, safe="/!$&'()*+,;=:@~", encoding="latin-1")  # PEP 3333: bytes as latin-1


class SessionsResource:
    """``POST /sessions/verify``: the legacy ``getSession(accessToken, antiCsrfToken,
    doAntiCsrfCheck, idRefreshToken)`` as JSON, for callers that are not proxies."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = _json_body(req)
        access = _optional_str(body, "accessToken")
        id_refresh = _optional_str(body, "idRefreshToken")
        anti_csrf = _optional_str(body, "antiCsrfToken")
        do_check = body.get("doAntiCsrfCheck", False)
        if not isinstance(do_check, bool):
            raise BadRequest("doAntiCsrfCheck must be a boolean", reason="bad-request")
        if access is None:
            raise TryRefreshToken("no access token given", reason="no-access-token")
        settings = self._gate.settings
        if settings.legacy and id_refresh is None:
            raise Unauthorised("no idRefreshToken given", clear_tokens=True, reason="no-id-refresh-token")
        if do_check and settings.effective_anti_csrf == "VIA_CUSTOM_HEADER":
            # The SDK raises here too: a custom header is a property of a browser request.
            raise BadRequest("doAntiCsrfCheck needs anti_csrf VIA_TOKEN (VIA_CUSTOM_HEADER is checked per request)",
                             reason="bad-request")
        creds = credentials.Credentials(method="POST", uri=req.path, cookie_token=access,
                                        id_refresh_token=id_refresh, anti_csrf=anti_csrf)
        session = self._gate.verify(creds, verifier.Policy(anti_csrf_check=do_check))
        if session is None:  # only optional policies answer "no session"; keep the type checker honest
            raise Unauthorised("no session", clear_tokens=False, reason="no-token")
        decision = req.context.decision
        decision.user_id, decision.tenant_id = session.user_id, session.tenant_id
        answer: dict[str, Any] = {
            "status": "OK",
            "session": {"handle": session.handle, "userId": session.user_id, "userDataInJWT": session.payload,
                        "tenantId": session.tenant_id, "recipeUserId": session.recipe_user_id},
        }
        fresh = session.new_access_token
        if fresh is not None:
            answer["accessToken"] = {"token": fresh.token, "expiry": fresh.expiry_ms, "createdTime": fresh.created_ms}
        resp.media = answer


#: The largest JSON body ``POST /sessions/verify`` reads (a SuperTokens access token is a few KB).
MAX_BODY = 1 << 20


def _json_body(req: falcon.Request) -> dict[str, Any]:
    data = req.bounded_stream.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise BodyTooLarge(f"the body is over the limit of {MAX_BODY} bytes (1 MiB)")
    try:
        body = json.loads(data or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the body is not JSON", reason="bad-request") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", reason="bad-request")
    return body


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{name} must be a string", reason="bad-request")
    return value


class MetricsResource:
    """``/metrics``: Prometheus exposition, every worker added up; never behind auth."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data, resp.content_type = metrics.exposition()


class HealthResource:
    """``/healthz``: the process is alive."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class ReadyResource:
    """``/readyz``: signing keys are loaded and not older than the allowed staleness."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self._gate.keys.keys()
        except ForwardAuthError:
            pass  # reported through status() below
        status = self._gate.keys.status()
        resp.media = {"status": "ready" if status["usable"] else "not ready", "jwks": status}
        if not status["usable"]:
            resp.status = falcon.HTTP_503
