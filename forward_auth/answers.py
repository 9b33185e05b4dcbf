"""The one place where errors become HTTP answers: SuperTokens' statuses and bodies."""

from __future__ import annotations

import json
from typing import Any, Protocol

from . import pages, redirects
from .cookies import clearing_headers
from .errors import (
    ApiKeyRefused,
    BadRequest,
    BodyTooLarge,
    CoreError,
    ForwardAuthError,
    InvalidClaims,
    PeerRefused,
    ServiceUnavailable,
    TryRefreshToken,
    Unauthorised,
    UnknownSession,
)
from .headers import Response, apply_headers
from .settings import Settings


class MediaResponse(Response, Protocol):
    """What an error answer is written into: Falcon's response, or :class:`~forward_auth.endpoint.Reply`."""

    status: Any
    media: Any
    data: bytes | None
    content_type: str | None


def compact_json(media: Any) -> str:
    """JSON as supertokens-python writes it (no spaces), in ASCII: a token's text, whatever it
    holds (a lone surrogate too), cannot fail to encode, nor be changed by a header's trip."""
    return json.dumps(media, separators=(",", ":"))


def internal_error(resp: MediaResponse) -> None:
    """Our own bug, answered: fail closed with a 500 (the caller logs the traceback, never a token)."""
    resp.status = 500
    resp.media = {"message": "internal error"}
    resp.set_header("X-Forward-Auth-Reason", "internal-error")


class ErrorAnswers:
    """Maps the error hierarchy to SuperTokens' statuses and bodies."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def status_and_body(self, ex: ForwardAuthError) -> tuple[int, dict[str, Any]]:
        if isinstance(ex, Unauthorised):
            return self._settings.session_expired_status, {"message": "unauthorised"}
        if isinstance(ex, TryRefreshToken):
            return self._settings.session_expired_status, {"message": "try refresh token"}
        if isinstance(ex, InvalidClaims):
            return self._settings.invalid_claim_status, {"message": "invalid claim", "claimValidationErrors": ex.errors}
        if isinstance(ex, BadRequest):
            return 413 if isinstance(ex, BodyTooLarge) else 400, {"message": ex.detail}
        if isinstance(ex, UnknownSession):
            return 404, {"status": "UNAUTHORISED", "message": "no session has this handle"}
        if isinstance(ex, ApiKeyRefused):
            return 401, {"message": "unauthorised"}
        if isinstance(ex, PeerRefused):
            return 403, {"message": "forbidden"}
        # Our own trouble: the reason only; core addresses and answers stay in the log.
        if isinstance(ex, ServiceUnavailable):
            return 503, {"message": ex.reason}
        if isinstance(ex, CoreError):
            return 502, {"message": ex.reason}
        return 500, {"message": "internal error"}

    def apply(self, resp: MediaResponse, ex: ForwardAuthError, navigation: redirects.Navigation | None) -> None:
        """Write the answer to ``ex`` into ``resp``: JSON, or for a person's browser
        (``navigation``) a redirect to sign in (or refresh), or a page."""
        denial = redirects.denial(ex, navigation) if navigation is not None else None
        if denial is None:
            resp.status, resp.media = self.status_and_body(ex)
        else:
            resp.status = denial.status
            if denial.page is None:
                resp.set_header("Location", str(denial.location))
                resp.data = b""
            else:
                resp.data, resp.content_type = denial.page, pages.HTML
        resp.set_header("Cache-Control", "no-store")
        resp.set_header("X-Forward-Auth-Reason", ex.reason)
        if isinstance(ex, Unauthorised) and ex.clear_tokens:
            apply_headers(resp, clearing_headers(self._settings))
        if isinstance(ex, ServiceUnavailable):
            resp.set_header("Retry-After", "1")
