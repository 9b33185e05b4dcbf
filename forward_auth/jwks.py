"""The core's signing keys: a cached JWKS fetcher that survives rotation and outages.

- Fresh for the core's ``Cache-Control: max-age`` (capped by ``jwks_cache_seconds``).
- An unknown ``kid`` triggers one refetch, at most once per cooldown; concurrent callers
  wait for that single fetch instead of starting their own.
- When every core fails, the last good key set keeps serving for ``jwks_max_stale_seconds``
  past its freshness; after that :class:`KeysUnavailable` (503, never a 401).
- A failed fetch never replaces or wipes the cache.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cachetools
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm

from . import metrics, tracing
from .blocking import may_block
from .errors import KeysUnavailable
from .transport import Transport, TransportError

log = logging.getLogger(__name__)
JWKS_PATH = "/.well-known/jwks.json"
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class KeySet:
    """RSA verification keys by ``kid``, with when they were fetched and how long they are fresh."""

    keys: dict[str, RSAPublicKey]
    fetched_at: float
    fresh_for: float
    source: str

    def expired_for(self, now: float) -> float:
        """Seconds past freshness (negative while fresh)."""
        return now - (self.fetched_at + self.fresh_for)


def parse_jwks(data: bytes) -> dict[str, RSAPublicKey]:
    """RS256 signing keys of a JWKS document; raise ValueError if it holds none."""
    document = json.loads(data.decode("utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, RSAPublicKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not isinstance(jwk.get("kid"), str):
            continue
        if jwk.get("alg", "RS256") != "RS256" or jwk.get("use", "sig") != "sig":
            continue
        try:
            key = RSAAlgorithm.from_jwk(jwk)
        except Exception:  # noqa: BLE001 - one bad key must not hide the good ones
            log.warning("jwks: skipping unusable key %s", jwk.get("kid"))
            continue
        if isinstance(key, RSAPublicKey):
            keys[jwk["kid"]] = key
    if not keys:
        raise ValueError("JWKS holds no RS256 signing key")
    return keys


def max_age(cache_control: str | None) -> float | None:
    """The ``max-age`` of a Cache-Control header, if any."""
    match = _MAX_AGE.search(cache_control or "")
    return float(match.group(1)) if match else None


class JwksFetcher:
    """Fetches and caches the JWKS of one or more cores (tried in order)."""

    def __init__(
        self,
        core_urls: Sequence[str],
        transport: Transport,
        *,
        cache_seconds: float = 14400.0,
        cooldown_seconds: float = 0.5,
        max_stale_seconds: float = 86400.0,
        timeout_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._urls = tuple(url.rstrip("/") + JWKS_PATH for url in core_urls)
        self._transport = transport
        self._ceiling = cache_seconds
        self._cooldown = cooldown_seconds
        self._max_stale = max_stale_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._fresh: cachetools.TLRUCache[str, KeySet] = cachetools.TLRUCache(
            maxsize=1, ttu=lambda _k, value, _now: value.fetched_at + value.fresh_for, timer=clock
        )
        self._last_good: KeySet | None = None
        self._last_attempt = float("-inf")
        self._attempts = 0
        self._age_reported_at = float("-inf")
        self._fetch_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self.last_error: str | None = None

    def keys(self) -> KeySet:
        """The current key set: cached, fetched, or stale within bounds; else KeysUnavailable."""
        key_set = self._cached() or self._refresh(forced=False)
        now = self._clock()
        if now - self._age_reported_at >= 1.0:  # a gauge write per verification costs more than it tells
            self._age_reported_at = now
            metrics.JWKS_AGE.set(now - key_set.fetched_at)
        return key_set

    def _cached(self) -> KeySet | None:
        with self._cache_lock:  # cachetools caches are not thread-safe
            return self._fresh.get("jwks")

    def key_for(self, kid: str) -> RSAPublicKey | None:
        """The key for ``kid``; an unknown kid refetches once per cooldown."""
        key_set = self.keys()
        key = key_set.keys.get(kid)
        if key is None and self._clock() - self._last_attempt >= self._cooldown:
            key = self._refresh(forced=True).keys.get(kid)
        return key

    def all_keys(self) -> list[RSAPublicKey]:
        """Every key, for legacy v2 tokens that carry no ``kid``."""
        return list(self.keys().keys.values())

    def status(self) -> dict[str, object]:
        """Readiness facts: whether keys are loaded, and how stale they are. Where they came
        from and why a fetch failed stay in the log (``/readyz`` answers anyone)."""
        good = self._last_good
        now = self._clock()
        return {
            "loaded": good is not None,
            "kids": sorted(good.keys) if good else [],
            "age_seconds": round(now - good.fetched_at, 3) if good else None,
            "stale_seconds": round(max(0.0, good.expired_for(now)), 3) if good else None,
            "usable": good is not None and good.expired_for(now) <= self._max_stale,
            "last_fetch_failed": self.last_error is not None,
        }

    def _refresh(self, *, forced: bool) -> KeySet:
        if not forced and (self._fetch_lock.locked() or self._clock() - self._last_attempt < self._cooldown):
            stale = self._usable_stale()
            if stale is not None:  # expired, and a fetch is in flight or not due: the last good keys, now
                return stale
        may_block()  # a fetch, or the wait for one in flight
        attempts = self._attempts
        with self._fetch_lock:
            if self._attempts != attempts:
                return self._stale_or_fail()  # a fetch ran while we waited: use its outcome
            cached = self._cached()
            if cached is not None and not forced:
                return cached
            if self._clock() - self._last_attempt >= self._cooldown:
                fetched = self._fetch()
                if fetched is not None:
                    with self._cache_lock:
                        self._fresh["jwks"] = fetched
                    self._last_good = fetched
                    return fetched
            return self._stale_or_fail()

    def _usable_stale(self) -> KeySet | None:
        good = self._last_good
        return good if good is not None and good.expired_for(self._clock()) <= self._max_stale else None

    def _stale_or_fail(self) -> KeySet:
        stale = self._usable_stale()
        if stale is None:
            raise KeysUnavailable(f"no signing keys: {self.last_error}")
        return stale

    def _fetch(self) -> KeySet | None:
        fetched = None
        try:
            fetched = self._fetch_from_cores()
            return fetched
        finally:
            metrics.JWKS_FETCHES.labels(result="ok" if fetched else "error").inc()
            # Counted when the attempt ends: a slow failure must not let the next caller retry at once.
            self._last_attempt = self._clock()
            self._attempts += 1

    def _fetch_from_cores(self) -> KeySet | None:
        for url in self._urls:
            with tracing.core_span("GET", JWKS_PATH) as span:
                try:
                    reply = self._transport.request("GET", url, headers={}, timeout=self._timeout)
                    if reply.status != 200:
                        raise ValueError(f"HTTP {reply.status}")
                    keys = parse_jwks(reply.data)
                except (TransportError, ValueError, UnicodeDecodeError, RecursionError) as exc:
                    self.last_error = f"{url}: {exc}"
                    log.warning("jwks: fetch failed from %s: %s", url, exc)
                    span.set({"forward_auth.outcome": "error"})
                    continue
                span.set({"forward_auth.outcome": "ok"})
            age = max_age(reply.headers.get("cache-control"))
            fresh_for = self._ceiling if age is None else min(age, self._ceiling)
            self.last_error = None
            return KeySet(keys=keys, fetched_at=self._clock(), fresh_for=fresh_for, source=url)
        return None
