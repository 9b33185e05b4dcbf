"""Thin Falcon resources: HTTP in, a gate call, HTTP out. Errors go to ``app.py``'s handlers."""

from __future__ import annotations

import base64
import functools
import json
import json.encoder
import logging
import re
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any
from urllib.parse import quote

import falcon

from . import claims, credentials, metrics, verifier
from .cookies import ResponseHeaders, new_access_token_headers
from .decision_cache import CACHEABLE
from .errors import BadRequest, ForwardAuthError, TryRefreshToken, Unauthorised
from .gate import Gate
from .policy import AmbiguousPath, PolicyFile, Rule
from .settings import Settings, parse_bool

log = logging.getLogger(__name__)
#: Longest claim header value passed on; longer ones are left out (and named) rather than cut.
MAX_HEADER_VALUE = 4096
_json_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_HEADER_SAFE = re.compile(r"[\x21-\x24\x26-\x7e]*")  # printable ASCII but space and %


def header_value(text: str) -> str:
    """A header-safe rendering: printable ASCII but space and ``%`` as-is, the rest percent-encoded.

    Spaces are encoded because servers strip them at the ends of header values (`` admin ``
    would reach the upstream as ``admin``); control characters could split headers.
    """
    if _HEADER_SAFE.fullmatch(text):  # user ids, handles, tenants: nearly always
        return text
    return "".join(
        ch if 0x20 < ord(ch) < 0x7F and ch != "%" else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for ch in text
    )


Params = Mapping[str, "str | list[str]"]


@functools.lru_cache(maxsize=64)
def _environ_name(header: str) -> str:
    name = header.upper().replace("-", "_")
    return name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"


def environ_headers(environ: Mapping[str, Any]) -> credentials.HeaderGetter:
    """A case-insensitive header getter over a WSGI environ: Falcon's ``get_header`` without its
    per-call name translation (a dozen header reads per decision)."""
    return lambda name: environ.get(_environ_name(name))


def _flag(params: Params, name: str) -> bool | None:
    raw = params.get(name)
    if isinstance(raw, list):
        raw = raw[0]
    if raw is None:
        return None
    value = parse_bool(raw)
    if value is None:
        raise BadRequest(f"query parameter {name}={raw!r} must be true or false", reason="bad-policy")
    return value


def _values(params: Params, name: str) -> list[str]:
    """A repeatable, comma-separable query parameter (``?requireRole=a,b`` or ``?requireRole=a&requireRole=b``)."""
    raw = params.get(name) or []
    return [item.strip() for value in ([raw] if isinstance(raw, str) else raw) for item in value.split(",")
            if item.strip()]


def _claim_validators(params: Params) -> tuple[claims.Validator, ...]:
    """One SDK ``includes`` validator per required role or permission, as ``verify_session`` would run."""
    validators = [claims.Validator(claims.ROLE, "includes", role) for role in _values(params, "requireRole")]
    validators += [claims.Validator(claims.PERMISSION, "includes", perm) for perm in _values(params, "requirePermission")]
    if _flag(params, "requireEmailVerified"):
        validators.append(claims.Validator(claims.EMAIL_VERIFIED, "has_value", True))
    return tuple(validators)


def policy_from(params: Params, settings: Settings, rule: Rule | None = None) -> verifier.Policy:
    """The per-request policy: the matched rule (or the settings), overridden by query parameters."""
    base = rule.to_policy(settings.check_database) if rule else verifier.Policy(check_database=settings.check_database)
    if not params:
        return base
    required, anti_csrf, check_db = (_flag(params, "sessionRequired"), _flag(params, "antiCsrf"),
                                     _flag(params, "checkDatabase"))
    return verifier.Policy(
        session_required=base.session_required if required is None else required,
        anti_csrf_check=base.anti_csrf_check if anti_csrf is None else anti_csrf,
        check_database=base.check_database if check_db is None else check_db,
        claims=base.claims + _claim_validators(params),
    )


def rule_for(params: Params, creds: credentials.Credentials, policies: PolicyFile | None) -> Rule | None:
    """``?policy=<name>`` names a rule; otherwise the policy file's first matching rule, if any."""
    name = params.get("policy")
    if isinstance(name, list):
        name = name[0]
    if name is None:
        if policies is None:
            return None
        try:
            return policies.current().select(creds.host, creds.path, creds.method)
        except AmbiguousPath as exc:
            raise BadRequest(str(exc), reason="ambiguous-path") from None
    rule = policies.current().named(name) if policies else None
    if rule is None:
        raise BadRequest(f"no policy rule named {name!r}" + ("" if policies else " (no policy_file is set)"),
                         reason="bad-policy")
    return rule


def claim_headers(rule: Rule, session: verifier.Session) -> tuple[dict[str, str], list[str]]:
    """The rule's claim headers for this session, and the names left out because too large."""
    values: dict[str, str] = {}
    for header, key in rule.headers:
        value, _ = claims.claim_value(session.payload, key)
        if value is not None:
            if isinstance(value, list):  # a comma inside an item is encoded: ["a,b"] is not ["a", "b"]
                values[header] = ",".join(header_value(_text(item)).replace(",", "%2C") for item in value)
            else:
                values[header] = header_value(_text(value))
    if rule.forward_payload:
        compact = json.dumps(session.payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
        values["X-Access-Token-Payload"] = base64.urlsafe_b64encode(compact).decode("ascii").rstrip("=")
    omitted = [name for name, value in values.items() if len(value) > MAX_HEADER_VALUE]
    return {k: v for k, v in values.items() if k not in omitted}, omitted


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


class TrustedPeers:
    """Whether the TCP peer may tell us the original request (a unix socket is local); remembered
    per address, as a proxy reconnects from the same few."""

    def __init__(self, networks: tuple[IPv4Network | IPv6Network, ...]) -> None:
        self._networks = networks
        self._remembered = functools.lru_cache(maxsize=1024)(self._trusted)

    def __call__(self, req: falcon.Request) -> bool:
        return not req.remote_addr or self._remembered(req.remote_addr)

    def _trusted(self, address: str) -> bool:
        try:
            peer = ip_address(address)
        except ValueError:
            return False
        return any(peer in network for network in self._networks)


def apply_headers(resp: falcon.Response, headers: ResponseHeaders) -> None:
    """Add the headers; Set-Cookie values are also kept in ``resp.context.set_cookies``."""
    for name, value in headers.items:
        if name.lower() == "set-cookie":
            resp.append_header("Set-Cookie", value)
            resp.context.setdefault("set_cookies", []).append(value)
        else:
            resp.set_header(name, value)


def identity_headers(session: verifier.Session) -> dict[str, str]:
    """What the token proved, as the headers a proxy copies to the upstream."""
    return {
        "X-User-Id": header_value(session.user_id),
        "X-Session-Handle": header_value(session.handle),
        "X-Tenant-Id": header_value(session.tenant_id),
        "X-Recipe-User-Id": header_value(session.recipe_user_id),
        "X-Session-Expiry": str(session.expiry_ms),
        "X-Session-Created": str(session.created_ms),
    }


def promotion_headers(settings: Settings, session: verifier.Session, anti_csrf: str | None) -> ResponseHeaders:
    """Set-Cookie / st-access-token and front-token (and the request's ``anti-csrf`` value, as
    the SDK echoes it) for a token the core re-minted."""
    fresh = session.new_access_token
    if fresh is None:
        return ResponseHeaders()
    return new_access_token_headers(
        settings,
        transfer_method=session.transfer_method,
        token=fresh.token,
        user_id=session.user_id,
        expiry_ms=fresh.expiry_ms,
        payload=session.payload,
        anti_csrf=anti_csrf,
    )


def _no_forwarding(get: credentials.HeaderGetter) -> credentials.HeaderGetter:
    """A header getter that hides the forwarded-request headers."""
    def getter(name: str) -> str | None:
        return None if name.lower().startswith(("x-forwarded-", "x-original-")) else get(name)
    return getter


class VerifyResource:
    """``/verify``: any method; the original request comes in the proxy's headers."""

    def __init__(self, gate: Gate, policies: PolicyFile | None = None) -> None:
        self._gate = gate
        self._policies = policies
        self._trusted_peer = TrustedPeers(gate.settings.trusted_proxies)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        creds = credentials.from_headers(environ_headers(req.env), method=req.method, uri=req.relative_uri,
                                         trusted=self._trusted_peer(req))
        self._decide(req, resp, creds, req.params)

    def on_get_path(self, req: falcon.Request, resp: falcon.Response, path: str) -> None:
        """``/verify/<original path>`` (Envoy ext_authz): the request *is* the original one, so
        its method and path are the original ones (no forwarded header is read), and its query
        string is the client's: it never chooses the policy (the policy file does)."""
        # Falcon has decoded the path once; quote it again so that the policy decodes it once, as
        # it does a forwarded URI.
        raw = quote("/" + path, safe="/!$&'()*+,;=:@~")
        query = f"?{req.query_string}" if req.query_string else ""
        creds = credentials.from_headers(_no_forwarding(environ_headers(req.env)), method=req.method, uri=raw + query,
                                         trusted=False)
        self._decide(req, resp, creds, {})

    def _decide(self, req: falcon.Request, resp: falcon.Response, creds: credentials.Credentials,
                params: Params) -> None:
        settings = self._gate.settings
        req.context.original = f"{header_value(creds.method)} {header_value(creds.path)}"  # no query, no forged lines
        resp.set_header("Cache-Control", "no-store")
        if settings.cors_preflight and creds.method == "OPTIONS" and req.get_header("Access-Control-Request-Method"):
            resp.media = {"message": "preflight"}
            return
        rule = rule_for(params, creds, self._policies)
        if rule is not None:
            resp.set_header("X-Forward-Auth-Rule", header_value(rule.name))
            if rule.session == "public":
                resp.media = {"message": "public"}
                return
        policy = policy_from(params, settings, rule)
        session = self._gate.verify(creds, policy)
        if session is None:
            resp.media = {"message": "no session"}
            return
        req.context.user_id, req.context.tenant_id = session.user_id, session.tenant_id
        for name, value in identity_headers(session).items():
            resp.set_header(name, value)
        if rule is not None:
            forwarded, omitted = claim_headers(rule, session)
            for name, value in forwarded.items():
                resp.set_header(name, value)
            if omitted:
                resp.set_header("X-Forward-Auth-Omitted", ",".join(omitted))
                log.warning("claim headers over %d bytes left out: %s", MAX_HEADER_VALUE, ", ".join(omitted))
        apply_headers(resp, promotion_headers(settings, session, creds.anti_csrf))
        # Written here, compact as every other answer, from json's own C string encoder: Falcon's
        # media handler (and json.dumps with separators) cost more than the JSON itself.
        # _allow_reason reads "no media" as "ok".
        resp.data = (f'{{"message":"ok","userId":{_json_string(session.user_id)},"sessionHandle":'
                     f'{_json_string(session.handle)},"tenantId":{_json_string(session.tenant_id)}}}').encode("ascii")
        resp.content_type = falcon.MEDIA_JSON
        if session.new_access_token is None and not policy.check_database and not any(
                validator.max_age_seconds is not None for validator in policy.claims):
            req.env[CACHEABLE] = {"until": session.expiry_ms / 1000, "request": req.context.original,
                                  "user_id": session.user_id, "tenant_id": session.tenant_id,
                                  "rule": rule.name if rule is not None else None}

    on_post = on_put = on_patch = on_delete = on_head = on_options = on_get
    on_post_path = on_put_path = on_patch_path = on_delete_path = on_head_path = on_options_path = on_get_path


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


def _json_body(req: falcon.Request) -> dict[str, Any]:
    try:
        body = json.loads(req.bounded_stream.read(1 << 20) or b"null")
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
