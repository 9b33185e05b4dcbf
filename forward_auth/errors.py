"""One error hierarchy; every leaf maps to exactly one HTTP outcome (see ``answers.py``).

Two families, as in PyJWT: the *session* is bad (401/440/403, the frontend refreshes or
logs in), or *we* could not check it (5xx, retryable: never a 401, which would send the
frontend into a refresh loop).
"""

from __future__ import annotations

from typing import Any


class ForwardAuthError(Exception):
    """Root of every error this service answers with."""

    reason = "error"

    def __init__(self, detail: str = "", *, reason: str | None = None) -> None:
        super().__init__(detail or self.__class__.__doc__ or "")
        if reason is not None:
            self.reason = reason

    @property
    def detail(self) -> str:
        return str(self)


class SessionError(ForwardAuthError):
    """The request's session is not acceptable (SuperTokens' own error types)."""


class Unauthorised(SessionError):
    """SuperTokens UNAUTHORISED: no session, or the core says it has ended."""

    reason = "unauthorised"

    def __init__(self, detail: str = "", *, clear_tokens: bool, reason: str | None = None) -> None:
        super().__init__(detail, reason=reason)
        self.clear_tokens = clear_tokens


class TryRefreshToken(SessionError):
    """SuperTokens TRY_REFRESH_TOKEN: the access token cannot be used; refresh it."""

    reason = "try-refresh-token"


class InvalidClaims(SessionError):
    """SuperTokens INVALID_CLAIMS: the session lacks a required claim value."""

    reason = "invalid-claims"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("claim validation failed")
        self.errors = errors


class BadRequest(ForwardAuthError):
    """The caller's request to this service is malformed (JSON API only)."""

    reason = "bad-request"


class BodyTooLarge(BadRequest):
    """The caller's JSON body is over the limit (413)."""

    reason = "body-too-large"


class ServiceUnavailable(ForwardAuthError):
    """We cannot decide now; retrying later may succeed (503)."""

    reason = "unavailable"


class KeysUnavailable(ServiceUnavailable):
    """No signing key set could be obtained from any core."""

    reason = "keys-unavailable"


class CoreUnavailable(ServiceUnavailable):
    """No SuperTokens core could be reached."""

    reason = "core-unavailable"


class CoreError(ForwardAuthError):
    """A core answered something we cannot use (bad gateway, 502)."""

    reason = "core-error"


class SessionApiError(ForwardAuthError):
    """A session API call that cannot be answered as asked (see ``session_api.py``)."""


class UnknownSession(SessionApiError):
    """The core knows no live session with this handle (404)."""

    reason = "unknown-session"


class ApiKeyRefused(SessionApiError):
    """No bearer secret, or not the session API's (401, no detail)."""

    reason = "api-key"


class PeerRefused(SessionApiError):
    """The caller is not in ``session_api_trusted``, or came through a proxy (403)."""

    reason = "untrusted-peer"
