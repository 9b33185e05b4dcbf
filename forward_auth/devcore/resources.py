"""HTTP layer of the dev core: Falcon resources, middleware and error rendering.

Resources only parse input and call :class:`forward_auth.devcore.state.DevCore`; every
answer is HTTP 200 JSON except auth failures (401 ``Invalid API key``) and bad
input (400 with a plain-text message).

Test-only endpoints (they need the API key too, when one is set):

- ``POST /dev/keys/rotate`` -> ``{"status": "OK", "kid": <new signing kid>}``
- ``POST /dev/tokens`` with ``{"version": 1-5, "claims": {...}, "key": "dynamic" |
  "static" | "foreign", "header": {...}, "sessionHandle": ...}``, all optional; a
  ``null`` claim or header value removes it -> ``{"token": ...}``
- ``POST /dev/sessions`` with ``{"userId", "tenantId"?, "userDataInJWT"?,
  "userDataInDatabase"?, "enableAntiCsrf"?, "useDynamicSigningKey"?}`` -> the
  answer of session creation.
- ``GET /dev/requests`` -> ``{"requests": [[method, path], ...], "counts": {"METHOD path": n}}``:
  the last 1000 requests this core received, oldest first, and every request since start
  counted (for counting what a verifier asked).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import falcon

from .access_token import PUBLIC_TENANT
from .state import DevCore

SUPPORTED_CDI_VERSIONS = ("5.4",)

JWKS_MAX_AGE_SECONDS = 3600
"""JWKS ``Cache-Control`` max-age. The real core uses the time until its next key
rotation minus 60 s; this core rotates only on request, and a rotated-in key has a
new kid that verifiers fetch on sight, so an hour is safe."""

_APP_PREFIX = re.compile(r"^/appid-[^/]+(?=/)")
_TENANT_PREFIX = re.compile(r"^/(?P<tenant>[^/]+)(?P<path>/recipe(?:/.*)?)$")
_JWKS_PATH = "/.well-known/jwks.json"
_NO_API_KEY_PATHS = frozenset({_JWKS_PATH, "/hello"})
_NO_CDI_VERSION_PATHS = frozenset({_JWKS_PATH, "/hello", "/apiversion"})
_JSON_TYPE_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    dict: "an object",
    list: "an array",
}

_T = TypeVar("_T")
_D = TypeVar("_D")


class CoreMiddleware:
    """Normalises core paths and enforces the API key and ``cdi-version`` rules.

    ``/appid-<id>`` prefixes are dropped, and a ``/<tenantId>`` prefix before
    ``/recipe/...`` moves to ``req.context.tenant_id`` (default ``public``), so
    routes only see the bare API path.
    """

    def __init__(self, core: DevCore) -> None:
        self._core = core

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Rewrite the path for routing, then check the API key and CDI version."""
        self._core.record_request(req.method, req.path)
        path = _APP_PREFIX.sub("", req.path, count=1)
        req.context.tenant_id = PUBLIC_TENANT
        match = _TENANT_PREFIX.match(path)
        if match and match["tenant"] != "recipe":
            req.context.tenant_id = match["tenant"]
            path = match["path"]
        req.path = path
        if path not in _NO_API_KEY_PATHS and not self._core.accepts_api_key(_presented_api_key(req)):
            raise falcon.HTTPUnauthorized(description="Invalid API key")
        version = req.get_header("cdi-version")
        if path in _NO_CDI_VERSION_PATHS or version is None:
            return
        if version not in SUPPORTED_CDI_VERSIONS:
            raise falcon.HTTPBadRequest(description=f"cdi-version {version} not supported")


def serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Render every HTTP error as plain text, like the core does."""
    resp.content_type = falcon.MEDIA_TEXT
    resp.text = exc.description or exc.title


def reject_bad_input(
    req: falcon.Request, resp: falcon.Response, exc: ValueError, params: dict[str, Any]
) -> None:
    """Turn a ``ValueError`` from parsing or from :class:`DevCore` into a 400."""
    raise falcon.HTTPBadRequest(description=str(exc))


def add_routes(app: falcon.App, core: DevCore) -> None:
    """Mount every core and ``/dev/`` endpoint on ``app``."""
    app.add_route("/hello", _Hello())
    app.add_route("/apiversion", _ApiVersion())
    app.add_route(_JWKS_PATH, _Jwks(core))
    app.add_route("/recipe/jwt/jwks", _DeprecatedJwks(core))
    app.add_route("/user/id", _UserById())
    app.add_route("/recipe/session", _Session(core))
    app.add_route("/recipe/session/verify", _Verify(core))
    app.add_route("/recipe/session/refresh", _Refresh(core))
    app.add_route("/recipe/session/regenerate", _Regenerate(core))
    app.add_route("/recipe/session/remove", _Remove(core))
    app.add_route("/recipe/session/user", _UserSessions(core))
    app.add_route("/recipe/session/data", _SessionData(core))
    app.add_route("/recipe/jwt/data", _JwtData(core))
    app.add_route("/dev/keys/rotate", _DevRotateKeys(core))
    app.add_route("/dev/tokens", _DevTokens(core))
    app.add_route("/dev/sessions", _DevSessions(core))
    app.add_route("/dev/requests", _DevRequests(core))


class _Resource:
    def __init__(self, core: DevCore) -> None:
        self._core = core


class _Hello:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "Hello"


class _ApiVersion:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"versions": list(SUPPORTED_CDI_VERSIONS)}


class _Jwks(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"keys": self._core.jwks()}
        resp.cache_control = [f"max-age={JWKS_MAX_AGE_SECONDS}", "must-revalidate"]


class _DeprecatedJwks(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"keys": self._core.jwks(), "status": "OK"}


class _UserById:
    """There is no user store, so every user id is unknown."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.get_param("userId", required=True)
        resp.media = {"status": "UNKNOWN_USER_ID_ERROR"}


class _Session(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = _json_body(req)
        resp.media = self._core.create_session(
            req.context.tenant_id,
            _required(body, "userId", str),
            _required(body, "userDataInJWT", dict),
            _required(body, "userDataInDatabase", dict),
            use_dynamic_key=_optional(body, "useDynamicSigningKey", bool, True),
            enable_anti_csrf=_required(body, "enableAntiCsrf", bool),
        )

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._core.session_information(req.get_param("sessionHandle", required=True))


class _Verify(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = _json_body(req)
        resp.media = self._core.verify_session(
            _required(body, "accessToken", str),
            anti_csrf_token=_optional(body, "antiCsrfToken", str, None),
            do_anti_csrf_check=_required(body, "doAntiCsrfCheck", bool),
            enable_anti_csrf=_required(body, "enableAntiCsrf", bool),
            check_database=_required(body, "checkDatabase", bool),
        )


class _Refresh(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = _json_body(req)
        resp.media = self._core.refresh_session(
            _required(body, "refreshToken", str),
            anti_csrf_token=_optional(body, "antiCsrfToken", str, None),
            enable_anti_csrf=_required(body, "enableAntiCsrf", bool),
            use_dynamic_key=_optional(body, "useDynamicSigningKey", bool, None),
        )


class _Regenerate(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = _json_body(req)
        resp.media = self._core.regenerate_access_token(
            _required(body, "accessToken", str), _optional(body, "userDataInJWT", dict, None)
        )


class _Remove(_Resource):
    """Revoke by ``sessionHandles``, or every session of ``userId``."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = _json_body(req)
        user_id = _optional(body, "userId", str, None)
        handles = _optional(body, "sessionHandles", list, None)
        if user_id is not None and handles is None:
            across_tenants = _optional(body, "revokeAcrossAllTenants", bool, True)
            tenant = None if across_tenants else req.context.tenant_id
            resp.media = self._core.remove_user_sessions(user_id, tenant)
            return
        if handles is None or user_id is not None:
            raise ValueError('give exactly one of "userId" and "sessionHandles"')
        if not all(isinstance(handle, str) for handle in handles):
            raise ValueError('"sessionHandles" must be an array of strings')
        resp.media = self._core.remove_sessions(handles)


class _UserSessions(_Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user_id = req.get_param("userId", required=True)
        across_tenants = req.get_param_as_bool("fetchAcrossAllTenants", default=True)
        tenant = None if across_tenants else req.context.tenant_id
        resp.media = self._core.session_handles_for_user(user_id, tenant)


class _SessionData(_Resource):
    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = _json_body(req)
        resp.media = self._core.update_session_data(
            _required(body, "sessionHandle", str), _required(body, "userDataInDatabase", dict)
        )


class _JwtData(_Resource):
    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = _json_body(req)
        resp.media = self._core.update_access_token_payload(
            _required(body, "sessionHandle", str), _required(body, "userDataInJWT", dict)
        )


class _DevRotateKeys(_Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "OK", "kid": self._core.rotate_keys()}


class _DevTokens(_Resource):
    """Mint a token: ``{"version", "claims", "key", "header", "sessionHandle"}``, all optional."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = _json_body(req)
        token = self._core.mint_token(
            version=_optional(body, "version", int, 5),
            claim_overrides=_optional(body, "claims", dict, {}),
            key=_optional(body, "key", str, "dynamic"),
            header_overrides=_optional(body, "header", dict, None),
            session_handle=_optional(body, "sessionHandle", str, None),
        )
        resp.media = {"token": token}


class _DevSessions(_Resource):
    """Create a session for ``userId`` without an SDK; same answer as create."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = _json_body(req)
        resp.media = self._core.create_session(
            _optional(body, "tenantId", str, req.context.tenant_id),
            _required(body, "userId", str),
            _optional(body, "userDataInJWT", dict, {}),
            _optional(body, "userDataInDatabase", dict, {}),
            use_dynamic_key=_optional(body, "useDynamicSigningKey", bool, True),
            enable_anti_csrf=_optional(body, "enableAntiCsrf", bool, False),
        )


class _DevRequests(_Resource):
    """The requests this core received, for tests that count a verifier's calls."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"requests": [list(pair) for pair in self._core.request_log()],
                      "counts": self._core.request_counts()}


def _presented_api_key(req: falcon.Request) -> str | None:
    """Read the key from ``api-key``, else from ``Authorization`` (with or without ``Bearer``)."""
    key = req.get_header("api-key")
    if key is not None:
        return key
    authorization = req.get_header("Authorization")
    if authorization is None:
        return None
    if authorization[:7].lower() == "bearer ":
        authorization = authorization[7:]
    return authorization.strip()


def _json_body(req: falcon.Request) -> Mapping[str, Any]:
    body = req.get_media(default_when_empty={})
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


def _required(body: Mapping[str, Any], name: str, kind: type[_T]) -> _T:
    value = body.get(name)
    if value is None:
        raise ValueError(f'missing field "{name}"')
    return _checked(name, value, kind)


def _optional(body: Mapping[str, Any], name: str, kind: type[_T], default: _D) -> _T | _D:
    value = body.get(name)
    return default if value is None else _checked(name, value, kind)


def _checked(name: str, value: Any, kind: type[_T]) -> _T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f'field "{name}" must be {_JSON_TYPE_NAMES[kind]}')
    return value
