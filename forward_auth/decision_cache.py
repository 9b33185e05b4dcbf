"""Allowed ``/verify`` answers remembered for a moment (``decision_cache_seconds``).

The same request again within the entry's life gets the same 200 without any verification:
a browser's burst of requests for one page costs one decision. An answer is kept only when the
endpoint marks it as unable to change meanwhile (``Answer.cacheable``: a session, no revocation
check, no refresh promotion, no claim with a maximum age), for at most the setting and never
past the token's ``exp``. The key is a digest of everything a decision reads: method,
path, query string, peer address and every request header but the request id and trace context.
A hit is counted and logged as a decision, with its own request id.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, NamedTuple

import cachetools

from . import metrics
from .decisions import record_decision, request_id
from .endpoint import Answer, Incoming, Verify

_NOT_IN_KEY = frozenset({"x-request-id", "traceparent", "tracestate"})
_HIT = metrics.CACHE.labels(cache="decision", result="hit")
_MISS = metrics.CACHE.labels(cache="decision", result="miss")


class _Kept(NamedTuple):
    answer: Answer
    until: float  # time.monotonic()
    record: dict[str, Any]


def _key(incoming: Incoming) -> bytes:
    """A digest of method, path, query, peer and every header (in arrival order) but the request
    id and trace context. NUL, which no header holds, separates the parts."""
    parts = [incoming.method, incoming.path, incoming.query, incoming.peer]
    parts += [f"{name}\0{value}" for name, value in incoming.headers.items() if name not in _NOT_IN_KEY]
    return hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogateescape"), digest_size=32).digest()


class DecisionCache:
    """In front of the ``/verify`` endpoint."""

    def __init__(self, verify: Verify, seconds: float, size: int = 1024) -> None:
        """``size`` bounds the answers kept (~1 KB each): a burst of one page's requests needs a few."""
        self._verify = verify
        self._seconds = seconds
        # An LRU bound; each answer's own deadline is checked on read (a TTL cache lookup costs ~2 us).
        self._answers: cachetools.LRUCache[bytes, _Kept] = cachetools.LRUCache(size)
        self._lock = threading.Lock()

    def __call__(self, incoming: Incoming) -> Answer:
        started = time.perf_counter()
        key = _key(incoming)
        with self._lock:
            kept = self._answers.get(key)
        if kept is not None and kept.until > time.monotonic():
            return self._replay(kept, incoming, started)
        answer = self._verify(incoming)
        metrics.TALLY.count(_MISS)  # once it was answered (a request handed to the core pool comes through twice)
        cacheable = answer.cacheable
        if cacheable is not None and answer.status == 200:
            life = min(self._seconds, cacheable["until"] - time.time())
            if life > 0:
                headers = [(name, value) for name, value in answer.headers if name != "x-request-id"]
                record = {k: v for k, v in cacheable.items() if k != "until"}
                with self._lock:
                    self._answers[key] = _Kept(answer._replace(headers=headers), time.monotonic() + life, record)
        return answer

    @staticmethod
    def _replay(kept: _Kept, incoming: Incoming, started: float) -> Answer:
        rid = request_id(incoming.headers.get("x-request-id"))
        metrics.TALLY.count(_HIT)
        record_decision({**kept.record, "outcome": "allow", "status": 200, "reason": "ok", "request_id": rid,
                         "cached": True}, time.perf_counter() - started)
        return kept.answer._replace(headers=[*kept.answer.headers, ("x-request-id", rid)])
