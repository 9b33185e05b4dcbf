"""The session gate: the pure verifier wired to its two network edges (JWKS, core)."""

from __future__ import annotations

import time
from collections.abc import Callable

from . import claims, verifier
from . import token as tokens
from .core import CoreClient
from .credentials import Credentials
from .errors import CoreError, InvalidClaims
from .jwks import JwksFetcher
from .settings import Settings


class Gate:
    """Decides on one request's session exactly as supertokens-python's ``get_session``."""

    def __init__(
        self,
        settings: Settings,
        keys: JwksFetcher,
        core: CoreClient,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.core = core
        self._now = now

    def verify(self, creds: Credentials, policy: verifier.Policy) -> verifier.Session | None:
        """The verified session, ``None`` for "no session" (optional), or a SessionError."""
        selection = verifier.select(creds, policy, self.settings)
        if selection is None:
            return None
        token = selection.token
        if token.version >= 3:
            key = self.keys.key_for(token.kid or "")
            candidates = [key] if key is not None else []
        else:
            candidates = self.keys.all_keys()
        now = self._now()
        verifier.check_local(selection, candidates, creds, self.settings, now=now)
        if not verifier.needs_core(token, policy):
            return self._with_claims(verifier.session_from_token(selection), policy, now)
        mode = self.settings.effective_anti_csrf
        core_session = self.core.verify_session(
            token.raw,
            anti_csrf_token=creds.anti_csrf,
            do_anti_csrf_check=selection.anti_csrf_check,
            enable_anti_csrf=mode == "VIA_TOKEN",
            check_database=policy.check_database,
            token_expiry_ms=token.expiry_ms,
        )
        new_payload = None
        if core_session.access_token is not None and token.version >= 3:
            try:
                new_payload = tokens.parse(core_session.access_token.token).payload
            except tokens.MalformedToken:
                raise CoreError("core returned an unparsable access token", reason="core-bad-answer") from None
        return self._with_claims(verifier.session_from_core(selection, core_session, new_payload), policy, now)

    @staticmethod
    def _with_claims(session: verifier.Session, policy: verifier.Policy, now: float) -> verifier.Session:
        """The session, once its claims satisfy the policy's validators (else INVALID_CLAIMS)."""
        errors = claims.failures(policy.claims, session.payload, now * 1000)
        if errors:
            raise InvalidClaims(errors)
        return session
