"""Allowed ``/verify`` answers remembered for the same request (``decision_cache_seconds``, on by default).

The same request again gets the same 200 without deciding again: a browser's burst of requests
for one page, or an API polled, costs one decision. The key is a digest of everything a decision
reads: method, path, query string, peer address and every request header (in arrival order) but
the request id and trace context; a request whose parts cannot be told apart is never kept. An
answer is kept only when the endpoint marks it as unable to change meanwhile
(``Answer.cacheable``: a session the core was not asked about, no claim with a maximum age), and
it is replayed only while all of this holds:

- it is before ``cacheable["until"]``, by the gate's own clock: the token's exp (whole
  seconds), the end of the trust in its remembered signature (so a signing key withdrawn from
  the JWKS shows no later than without this cache) and any ``X-Accel-Expires`` it carries;
- the policy in force is the one it was decided under (a reload ends every kept answer at once);
- it is younger than the setting.

So a replay is the answer the endpoint would give. A hit is counted and logged as a decision
(``"cached": true``), with its own request id. Off under ``tracing``: a replay has no span.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any, NamedTuple

import cachetools

from . import metrics
from .decisions import record_decision, request_id
from .endpoint import Answer, Incoming, Verify

_NOT_IN_KEY = frozenset({"x-request-id", "traceparent", "tracestate"})
RAW_NOT_IN_KEY = frozenset(name.encode() for name in _NOT_IN_KEY)
#: The header names that frame a request body.
BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
_HIT = metrics.CACHE.labels(cache="decision", result="hit")
_MISS = metrics.CACHE.labels(cache="decision", result="miss")
RawHeaders = Sequence[tuple[bytes, bytes]]  # read twice at most: not a one-time iterator
Sent = tuple[int, list[tuple[bytes, bytes]], bytes]  # an answer as ASGI sends it


class _Kept(NamedTuple):
    """A kept 200 (only allowed answers are kept)."""

    sent: list[tuple[bytes, bytes]]        # the headers as ASGI sends them, without X-Request-Id
    body: bytes
    token_until: float                     # the token's exp, epoch seconds (the gate's clock)
    until: float                           # time.monotonic(): the setting's bound
    policy: object                         # the policy it was decided under
    record: dict[str, Any]


def key(incoming: Incoming) -> bytes | None:
    """The digest of a request as a server handed it over (text; ``surrogatepass`` encodes any
    text one way only), or None (not kept) when a part holds the NUL that separates them."""
    parts = ["s", incoming.method, incoming.path, incoming.query, incoming.peer]
    for name, value in incoming.headers.items():
        if name not in _NOT_IN_KEY:
            parts += (name, value)
    joined = "\0".join(parts)
    if joined.count("\0") != len(parts) - 1:
        return None
    return hashlib.sha256(joined.encode("utf-8", "surrogatepass")).digest()


def raw_key(method: bytes, path: bytes, query: bytes, peer: bytes,
            headers: RawHeaders) -> tuple[bytes | None, str | None]:
    """The digest of a request as sent (ASGI's bytes: headers exactly as they came, repeats and
    all; None as in :func:`key`), and its ``X-Request-Id``. Its own first part keeps it apart
    from :func:`key`'s digests; None too for a request that may have a body. Read header by
    header only when a name left out of the key is among them."""
    names = {name for name, _ in headers}
    if not names.isdisjoint(BODY_HEADERS):
        return None, None  # maybe a body, which a replay would leave unread: decided as ever
    supplied = None
    if names.isdisjoint(RAW_NOT_IN_KEY):
        parts = [b"b", method, path, query, peer, *chain.from_iterable(headers)]
    else:
        parts = [b"b", method, path, query, peer]
        for name, value in headers:
            if name in RAW_NOT_IN_KEY:
                if name == b"x-request-id":  # repeats joined, as the decision reads them (asgi._headers)
                    text = value.decode("latin-1")
                    supplied = text if supplied is None else f"{supplied},{text}"
                continue
            parts += (name, value)
    joined = b"\0".join(parts)
    if joined.count(b"\0") != len(parts) - 1:
        return None, supplied
    return hashlib.sha256(joined).digest(), supplied


class DecisionCache:
    """In front of the ``/verify`` endpoint."""

    def __init__(self, verify: Verify, seconds: float, *, now: Callable[[], float] = time.time,
                 policy: Callable[[], object] = lambda: None, size: int = 1024) -> None:
        """``now`` is the gate's clock; ``policy()`` the policy in force. ``size`` bounds the
        answers kept (~1 KB each)."""
        self._verify = verify
        self._seconds = seconds
        self._now = now
        self._policy = policy
        # An LRU bound; each answer's own deadlines are checked on read (a TTL cache lookup costs ~2 us).
        self._answers: cachetools.LRUCache[bytes, _Kept] = cachetools.LRUCache(size)
        self._lock = threading.Lock()

    def __call__(self, incoming: Incoming) -> Answer:
        digest = key(incoming)
        started = time.perf_counter()
        kept = self._valid(digest)
        if kept is None:
            return self.decide(digest, incoming)
        rid = self._replayed(kept, incoming.headers.get("x-request-id"), started)
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in kept.sent]
        return Answer(200, [*headers, ("x-request-id", rid)], kept.body)

    def replay(self, digest: bytes | None, supplied: str | None) -> Sent | None:
        """The kept answer to the request of ``digest`` (from :func:`raw_key`), as ASGI sends it, or None."""
        started = time.perf_counter()
        kept = self._valid(digest)
        if kept is None:
            return None
        rid = self._replayed(kept, supplied, started)
        return 200, [*kept.sent, (b"x-request-id", rid.encode("latin-1"))], kept.body

    def kept_for(self, digest: bytes | None) -> float:
        """How long the answer kept for ``digest`` may still be replayed at most, in seconds (0: none is)."""
        kept = self._valid(digest)
        return 0.0 if kept is None else max(0.0, min(kept.until - time.monotonic(), kept.token_until - self._now()))

    def decide(self, digest: bytes | None, incoming: Incoming) -> Answer:
        """Decide the request of ``digest``, and keep the answer when it cannot change."""
        policy = self._policy()  # before deciding: a reload meanwhile ends the entry
        answer = self._verify(incoming)
        metrics.TALLY.count(_MISS)  # once it was answered (a request handed to the core pool comes through twice)
        cacheable = answer.cacheable
        if digest is not None and cacheable is not None and answer.status == 200 and cacheable["until"] > self._now():
            sent = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers
                    if name != "x-request-id"]
            record = {k: v for k, v in cacheable.items() if k != "until"}
            kept = _Kept(sent, answer.body, cacheable["until"], time.monotonic() + self._seconds, policy, record)
            with self._lock:
                self._answers[digest] = kept
        return answer

    def _valid(self, digest: bytes | None) -> _Kept | None:
        if digest is None:
            return None
        with self._lock:
            kept = self._answers.get(digest)
        if kept is None or kept.until <= time.monotonic() or kept.token_until <= self._now() \
                or kept.policy is not self._policy():
            return None
        return kept

    @staticmethod
    def _replayed(kept: _Kept, supplied: str | None, started: float) -> str:
        """Count and log the replay as a decision; its request id."""
        rid = request_id(supplied)
        record_decision("allow", 200, "ok", time.perf_counter() - started,
                        lambda: {**kept.record, "request_id": rid, "cached": True}, also=(_HIT,))
        return rid
