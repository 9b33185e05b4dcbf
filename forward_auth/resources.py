"""Thin Falcon resources: HTTP in, a gate call, HTTP out. Errors go to ``app.py``'s handlers."""

from __future__ import annotations

import json
import json.encoder
import logging
import time
from typing import Any
from urllib.parse import quote

import falcon

from . import credentials, metrics, navigation, redirects, verifier
from .decision_cache import CACHEABLE
from .errors import BadRequest, BodyTooLarge, ForwardAuthError, TryRefreshToken, Unauthorised
from .gate import Gate
from .headers import apply_headers, header_value, reuse_until, session_headers
from .peers import TrustedPeers
from .policy import PolicyFile, Rule
from .query import Params, forwarded_session_data, policy_from, rule_for
from .session_data import SessionData
from .settings import Settings

log = logging.getLogger(__name__)
_json_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


class VerifyResource:
    """``/verify``: any method; the original request comes in the proxy's headers."""

    def __init__(self, gate: Gate, policies: PolicyFile | None = None) -> None:
        self._gate = gate
        self._policies = policies
        self._trusted_peer = TrustedPeers(gate.settings.trusted_proxies)
        self._session_data = SessionData(gate.core, gate.settings.session_data_cache_seconds)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        headers = credentials.environ_headers(req.env)
        trusted = self._trusted_peer(req)
        creds = credentials.from_headers(headers, method=req.method, uri=req.relative_uri,
                                         trusted=trusted, sdk_profile=self._gate.settings.sdk_profile)
        proxied = credentials.proxied(headers)
        # A redirect names the original URI only when a trusted proxy said what it was (else
        # redirectToPath would be /verify and its policy query).
        self._decide(req, resp, creds, req.params, proxied=proxied, headers=headers, navigable=proxied and trusted)

    def on_get_path(self, req: falcon.Request, resp: falcon.Response, path: str) -> None:
        """``/verify/<original path>`` (Envoy ext_authz): the request *is* the original one, so
        its method and path are the original ones (no forwarded header is read), and its query
        string is the client's: it never chooses the policy (the policy file does)."""
        # Falcon has decoded the path once; quote it again so that the policy decodes it once, as
        # it does a forwarded URI.
        raw = quote("/" + path, safe="/!$&'()*+,;=:@~")
        query = f"?{req.query_string}" if req.query_string else ""
        headers = credentials.without_forwarding(credentials.environ_headers(req.env))
        creds = credentials.from_headers(headers, method=req.method, uri=raw + query, trusted=False,
                                         sdk_profile=self._gate.settings.sdk_profile)
        self._decide(req, resp, creds, {}, proxied=True, headers=headers, navigable=True)

    def _decide(self, req: falcon.Request, resp: falcon.Response, creds: credentials.Credentials,
                params: Params, *, proxied: bool, headers: credentials.HeaderGetter, navigable: bool) -> None:
        """Decide; an allowed answer to a proxy is its headers only, to a person (curl) also JSON.
        A browser navigation's denial is a redirect or a page (``app.py``), when targets are set."""
        settings = self._gate.settings
        req.context.original = f"{header_value(creds.method)} {header_value(creds.path)}"  # no query, no forged lines
        resp.set_header("Cache-Control", "no-store")
        if settings.cors_preflight and creds.method == "OPTIONS" and req.get_header("Access-Control-Request-Method"):
            return _allow(req, resp, "preflight", proxied)
        rule = rule_for(params, creds, self._policies)
        if rule is not None:
            resp.set_header("X-Forward-Auth-Rule", header_value(rule.name))
            if rule.session == "public":
                return _allow(req, resp, "public", proxied)
        policy = policy_from(params, settings, rule)
        try:
            session = self._gate.verify(creds, policy)
        except ForwardAuthError:  # only a denial asks whether a person's browser is waiting
            req.context.navigation = _navigation(settings, rule, creds, headers) if navigable else None
            raise
        if session is None:
            return _allow(req, resp, "no-session", proxied)
        req.context.user_id, req.context.tenant_id = session.user_id, session.tenant_id
        forwarded = self._forwarded(params, rule, creds, session)
        apply_headers(resp, session_headers(settings, rule, session, creds.anti_csrf, forwarded))
        _allow(req, resp, "ok", proxied, session)
        if verifier.replayable(session, policy) and "X-Session-Data" not in forwarded:  # the core's data may change
            until = reuse_until(settings, session, time.time()) if settings.proxy_cache_seconds else None
            if until is not None:  # nginx reads X-Accel-Expires only when it comes before the no-store
                resp.delete_header("Cache-Control")
                resp.set_header("X-Accel-Expires", f"@{until}")
                resp.set_header("Cache-Control", "no-store")
            req.env[CACHEABLE] = {"until": session.expiry_ms / 1000, "request": req.context.original,
                                  "user_id": session.user_id, "tenant_id": session.tenant_id,
                                  "rule": rule.name if rule is not None else None}

    def _forwarded(self, params: Params, rule: Rule | None, creds: credentials.Credentials,
                   session: verifier.Session) -> dict[str, str | None]:
        """The session object's opt-in headers: ``X-Session-Data`` (may wait on the core) and
        ``X-Access-Token`` (the token the request carried, or the one the core just minted)."""
        forwarded: dict[str, str | None] = {}
        if forwarded_session_data(params, rule):
            forwarded["X-Session-Data"] = self._session_data.header_value(session)
        if rule is not None and rule.access_token:
            fresh = session.new_access_token
            raw = fresh.token if fresh else creds.bearer_token if session.transfer_method == "header" else creds.cookie_token
            forwarded["X-Access-Token"] = header_value(raw or "")
        return forwarded

    on_post = on_put = on_patch = on_delete = on_head = on_options = on_get
    on_post_path = on_put_path = on_patch_path = on_delete_path = on_head_path = on_options_path = on_get_path


def _navigation(settings: Settings, rule: Rule | None, creds: credentials.Credentials,
                headers: credentials.HeaderGetter) -> redirects.Navigation | None:
    """Where a denied browser navigation goes (``app.py`` answers it), or ``None``: an API call,
    or no target for it (no ``login_url``, a host not allowed)."""
    if not navigation.is_navigation(headers, rule.on_denied if rule else None):
        return None
    targets = redirects.targets_for(settings, rule, creds.host)
    return None if targets is None else redirects.Navigation(targets, creds.method, creds.uri)


#: The ``message`` of an allowed answer's JSON, by its reason.
_MESSAGES = {"ok": "ok", "no-session": "no session", "public": "public", "preflight": "preflight"}


def _allow(req: falcon.Request, resp: falcon.Response, reason: str, proxied: bool,
           session: verifier.Session | None = None) -> None:
    """An allowed answer: to a proxy its headers only (nginx keeps an upstream connection only
    after an empty answer); to a person (a direct ``curl``) also JSON: the session, or the reason."""
    req.context.allow_reason = reason
    if proxied:
        resp.data = b""
    elif session is not None:  # compact, from json's C string encoder: Falcon's media handler costs more
        resp.data = (f'{{"message":"ok","userId":{_json_string(session.user_id)},"sessionHandle":'
                     f'{_json_string(session.handle)},"tenantId":{json.dumps(session.tenant_id)}}}').encode("ascii")
        resp.content_type = falcon.MEDIA_JSON
    else:
        resp.media = {"message": _MESSAGES[reason]}


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
        req.context.user_id, req.context.tenant_id = session.user_id, session.tenant_id
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
