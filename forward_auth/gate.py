"""The session gate: the pure verifier wired to its two network edges (JWKS, core)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import cachetools

from . import claims, metrics, signature, verifier
from . import token as tokens
from .blocking import will_block
from .core import CoreClient
from .credentials import Credentials
from .errors import CoreError, InvalidClaims
from .jwks import JwksFetcher
from .settings import Settings

#: Seconds a verified signature is trusted without checking it again (and never past ``exp``).
VERIFIED_TTL_CAP = 300.0
_SIGNATURE_HIT = metrics.CACHE.labels(cache="signature", result="hit")
_SIGNATURE_MISS = metrics.CACHE.labels(cache="signature", result="miss")


class _Remembered(NamedTuple):
    """A token whose signature verified (all but its text, which each request brings), the second
    it is trusted until, and the sessions built from it so far (by transfer method)."""

    version: int
    kid: str | None
    payload: dict[str, Any]
    until: float
    sessions: dict[str, verifier.Session]


def _digest(raw: str) -> bytes:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).digest()


class Gate:
    """Decides on one request's session exactly as the ``sdk_profile``'s SDK (python's ``get_session``, node's ``getSession``)."""

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
        self.now = now  # the clock every decision reads
        # Verified tokens by digest: an LRU bound, and the time limit checked on every read (a
        # TLRU cache costs ~10x more per lookup).
        self._verified: cachetools.LRUCache[bytes, _Remembered] = cachetools.LRUCache(
            maxsize=settings.verified_cache_size)
        self._lock = threading.Lock()

    def verify(self, creds: Credentials, policy: verifier.Policy) -> verifier.Session | None:
        """The verified session, ``None`` for "no session" (optional), or a SessionError."""
        now = self.now()
        profile = self.settings.sdk_profile
        seen: dict[str, tuple[bytes, _Remembered | None]] = {}

        def parse(raw: str) -> tokens.AccessToken:
            _, known = seen[raw] = self._lookup(raw, now)
            return tokens.parse(raw, sdk_profile=profile) if known is None else tokens.AccessToken(raw, known.version, known.kid,
                                                                               known.payload)

        selection = verifier.select(creds, policy, self.settings, parse=parse)
        if selection is None:
            return None
        token = selection.token
        if verifier.needs_core(token, policy):
            will_block()  # before any counter: on the worker's event loop the request goes to the core pool
        digest, known = seen[token.raw]
        if known is None:
            verified = self._check_signature(token, now, digest)
        else:
            metrics.TALLY.count(_SIGNATURE_HIT)
            verified = known
        verifier.check_local(selection, creds, self.settings, now=now)
        if not verifier.needs_core(token, policy):
            session = verified.sessions.get(selection.transfer_method)
            if session is None:
                session = verified.sessions[selection.transfer_method] = verifier.session_from_token(
                    selection, sdk_profile=profile)._replace(trusted_until=verified.until)
            return self._with_claims(session, policy, now)
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
                new_payload = tokens.parse(core_session.access_token.token, sdk_profile=profile).payload
            except tokens.MalformedToken:
                raise CoreError("core returned an unparsable access token", reason="core-bad-answer") from None
        return self._with_claims(verifier.session_from_core(selection, core_session, new_payload), policy, now)

    def _lookup(self, raw: str, now: float) -> tuple[bytes, _Remembered | None]:
        """The token's digest and its remembered verification, if still trusted (b"" when off)."""
        if not self._verified.maxsize:
            return b"", None
        digest = _digest(raw)
        with self._lock:
            known = self._verified.get(digest)
        if known is None or now >= known.until:
            return digest, None
        return digest, known

    def _check_signature(self, token: tokens.AccessToken, now: float, digest: bytes) -> _Remembered:
        """Verify the signature; remember the verified token (by ``digest``) until it expires."""
        if token.version >= 3:
            key = self.keys.key_for(token.kid or "")
            candidates = [key] if key is not None else []
        else:
            candidates = self.keys.all_keys()
        metrics.TALLY.count(_SIGNATURE_MISS)  # counted once the keys are at hand (a request handed to the core pool asks again)
        signature.verify_signature(token, candidates, now=now, skew=self.settings.clock_skew_seconds,
                                sdk_profile=self.settings.sdk_profile)
        # Trusted until exp, at most the cap; not past now when nothing is remembered (verified_cache_size: 0).
        until = min(token.valid_until, now + VERIFIED_TTL_CAP) if digest else now
        verified = _Remembered(token.version, token.kid, token.payload, until, {})
        if digest:
            with self._lock:
                self._verified[digest] = verified
        return verified

    def _with_claims(self, session: verifier.Session, policy: verifier.Policy, now: float) -> verifier.Session:
        """The session, once its claims satisfy the policy's validators (else INVALID_CLAIMS)."""
        errors = claims.failures(policy.claims, session.payload, now * 1000, sdk_profile=self.settings.sdk_profile)
        if errors:
            raise InvalidClaims(errors)
        return session
