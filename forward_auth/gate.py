"""The session gate: the pure verifier wired to its two network edges (JWKS, core)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import cachetools

from . import claims, metrics, verifier
from . import token as tokens
from .core import CoreClient
from .credentials import Credentials
from .errors import CoreError, InvalidClaims
from .jwks import JwksFetcher
from .settings import Settings

#: Seconds a verified signature is trusted without checking it again (and never past ``exp``).
VERIFIED_TTL_CAP = 300.0


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
        # Entries live until the token's exp (wall clock), at most VERIFIED_TTL_CAP seconds.
        self._verified: cachetools.TLRUCache[bytes, float] = cachetools.TLRUCache(
            maxsize=settings.verified_cache_size,
            ttu=lambda _digest, exp, at: min(exp, at + VERIFIED_TTL_CAP),
            timer=now,
        )
        self._lock = threading.Lock()

    def verify(self, creds: Credentials, policy: verifier.Policy) -> verifier.Session | None:
        """The verified session, ``None`` for "no session" (optional), or a SessionError."""
        selection = verifier.select(creds, policy, self.settings)
        if selection is None:
            return None
        token = selection.token
        now = self._now()
        self._check_signature(token, now)
        verifier.check_local(selection, creds, self.settings, now=now)
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

    def _check_signature(self, token: tokens.AccessToken, now: float) -> None:
        """Verify once per token: a verified signature is remembered until the token expires."""
        digest = hashlib.sha256(token.raw.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            until = self._verified.get(digest)
        hit = until is not None and now < until
        metrics.CACHE.labels(cache="signature", result="hit" if hit else "miss").inc()
        if hit:
            return
        if token.version >= 3:
            key = self.keys.key_for(token.kid or "")
            candidates = [key] if key is not None else []
        else:
            candidates = self.keys.all_keys()
        tokens.verify_signature(token, candidates, now=now)
        if self._verified.maxsize:
            with self._lock:
                self._verified[digest] = token.valid_until

    @staticmethod
    def _with_claims(session: verifier.Session, policy: verifier.Policy, now: float) -> verifier.Session:
        """The session, once its claims satisfy the policy's validators (else INVALID_CLAIMS)."""
        errors = claims.failures(policy.claims, session.payload, now * 1000)
        if errors:
            raise InvalidClaims(errors)
        return session
