"""The session API for upstreams: the seeds' session object by handle, for backends without an SDK.

Off unless ``session_api: true``; on the main port, or (``session_api_bind``) on an address the
main process serves alone. Every call must come from a ``session_api_trusted`` peer, directly
(a request that a proxy relayed is refused: it names a client in ``X-Forwarded-For`` and
friends), and send ``Authorization: Bearer <session_api_key>``. Each is one core call with the
core's API key (the payload merge two: it reads, then writes once), answered with SuperTokens'
statuses:

    GET   /sessions/{handle}                        the session's information
    PUT   /sessions/{handle}/data                   updateSessionDataInDatabase (a JSON object)
    PATCH /sessions/{handle}/access-token-payload   mergeIntoAccessTokenPayload (null removes a key)
    POST  /sessions/{handle}/revoke                 revokeSession
    POST  /users/{userId}/sessions/revoke           every session of a user (``?tenantId=`` for one tenant)
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Any

import falcon

from .core import CoreClient, SessionInformation
from .errors import ApiKeyRefused, BadRequest, PeerRefused, UnknownSession
from .peers import TrustedPeers
from .resources import _json_body
from .settings import Settings

#: Claims the core sets itself: a merge may not touch them (the SDK's ``protected_props``).
PROTECTED_CLAIMS = frozenset({"sub", "iat", "exp", "sessionHandle", "parentRefreshTokenHash1", "refreshTokenHash1",
                              "antiCsrfToken", "rsub", "tId"})
#: Headers a proxy adds to what it relays: the caller is a client of the proxy, not an upstream.
RELAY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Uri", "X-Original-URI", "Via")
log = logging.getLogger(__name__)
_TENANT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_ID = 512


class Guard:
    """The peer (trusted, not relayed), then the bearer secret (compared in constant time)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.session_api_key is not None  # settings.validate
        self._trusted = TrustedPeers(settings.session_api_trusted)
        self._key = settings.session_api_key.encode("utf-8")

    def check(self, req: falcon.Request) -> None:
        if not self._trusted(req.remote_addr) or any(req.get_header(name) is not None for name in RELAY_HEADERS):
            raise PeerRefused(f"session API call from {req.remote_addr or 'a unix socket'} refused")
        scheme, _, presented = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode("utf-8", "replace"),
                                                                  self._key):
            raise ApiKeyRefused("session API call without the session API key")


def _id(value: str, what: str) -> str:
    if not value or len(value) > _MAX_ID:
        raise BadRequest(f"the {what} must be 1 to {_MAX_ID} characters", reason="bad-request")
    return value


def _information(info: SessionInformation) -> dict[str, Any]:
    """supertokens-node's ``SessionInformation`` names."""
    return {"status": "OK", "sessionHandle": info.handle, "userId": info.user_id,
            "recipeUserId": info.recipe_user_id, "tenantId": info.tenant_id, "timeCreated": info.created_ms,
            "expiry": info.expiry_ms, "customClaimsInAccessTokenPayload": info.access_token_payload,
            "sessionDataInDatabase": info.session_data}


class _Resource:
    def __init__(self, guard: Guard, core: CoreClient) -> None:
        self._guard = guard
        self._core = core


class SessionResource(_Resource):
    """``GET /sessions/{handle}``: ``getSessionInformation``."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, handle: str) -> None:
        self._guard.check(req)
        info = self._core.session_information(_id(handle, "session handle"))
        if info is None:
            raise UnknownSession(f"no session {handle!r}")
        resp.media = _information(info)


class SessionDataResource(_Resource):
    """``PUT /sessions/{handle}/data``: ``updateSessionDataInDatabase`` (replaces the data)."""

    def on_put(self, req: falcon.Request, resp: falcon.Response, handle: str) -> None:
        self._guard.check(req)
        data = _json_body(req)  # a JSON object, else 400 (413 over 1 MiB)
        if not self._core.update_session_data(_id(handle, "session handle"), data):
            raise UnknownSession(f"no session {handle!r}")
        resp.media = {"status": "OK"}


class AccessTokenPayloadResource(_Resource):
    """``PATCH /sessions/{handle}/access-token-payload``: ``mergeIntoAccessTokenPayload`` by handle,
    as the SDK does it offline (read the payload, write the merge once): the frontend receives it
    with its next token (a refresh, or a ``checkDatabase`` answer)."""

    def on_patch(self, req: falcon.Request, resp: falcon.Response, handle: str) -> None:
        self._guard.check(req)
        update = _json_body(req)
        protected = sorted(update.keys() & PROTECTED_CLAIMS)
        if protected:
            raise BadRequest(f"the core sets {', '.join(protected)} itself", reason="bad-request")
        info = self._core.session_information(_id(handle, "session handle"))
        if info is None:
            raise UnknownSession(f"no session {handle!r}")
        merged = {key: value for key, value in {**info.access_token_payload, **update}.items() if value is not None}
        if not self._core.update_access_token_payload(handle, merged):
            raise UnknownSession(f"session {handle!r} ended during the merge")
        resp.media = {"status": "OK", "customClaimsInAccessTokenPayload": merged}


class SessionRevokeResource(_Resource):
    """``POST /sessions/{handle}/revoke``: ``revokeSession``."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, handle: str) -> None:
        self._guard.check(req)
        if not self._core.revoke_sessions([_id(handle, "session handle")]):
            raise UnknownSession(f"no session {handle!r}")
        resp.media = {"status": "OK", "sessionHandlesRevoked": [handle]}


class UserSessionsRevokeResource(_Resource):
    """``POST /users/{userId}/sessions/revoke[?tenantId=t]``: ``revokeAllSessionsForUser``."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        self._guard.check(req)
        tenant = req.get_param("tenantId")
        if tenant is not None and not _TENANT.fullmatch(tenant):
            raise BadRequest("tenantId must be 1 to 64 letters, digits, '-' or '_'", reason="bad-request")
        revoked = self._core.revoke_user_sessions(_id(user_id, "user id"), tenant)
        resp.media = {"status": "OK", "sessionHandlesRevoked": revoked}


class CallLog:
    """Falcon middleware: one log line per session API call (method, path, status, peer; never the key)."""

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        if isinstance(resource, _Resource):
            log.info("session API %s %s: %d (peer %s)", req.method, req.path, resp.status_code,
                     req.remote_addr or "unix socket")


def add_routes(app: falcon.App, settings: Settings, core: CoreClient) -> None:
    """Mount the session API on ``app`` (``settings.session_api`` must be true)."""
    guard = Guard(settings)
    app.add_middleware(CallLog())
    app.add_route("/sessions/{handle}", SessionResource(guard, core))
    app.add_route("/sessions/{handle}/data", SessionDataResource(guard, core))
    app.add_route("/sessions/{handle}/access-token-payload", AccessTokenPayloadResource(guard, core))
    app.add_route("/sessions/{handle}/revoke", SessionRevokeResource(guard, core))
    app.add_route("/users/{user_id}/sessions/revoke", UserSessionsRevokeResource(guard, core))
