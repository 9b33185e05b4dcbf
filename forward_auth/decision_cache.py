"""Allowed ``/verify`` answers remembered for a moment (``decision_cache_seconds``).

The same request again within the entry's life gets the same 200 without Falcon or any
verification: a browser's burst of requests for one page costs one decision. An answer is kept
only when the resource marks it as unable to change meanwhile (:data:`CACHEABLE`: a session,
no revocation check, no refresh promotion, no claim with a maximum age), for at most the setting
and never past the token's ``exp``. The key is a digest of everything a decision reads: method,
path, query string, peer address and every request header but the request id and trace context.
A hit is counted and logged as a decision, with its own request id.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import cachetools

from . import metrics
from .decisions import record_decision, request_id

#: environ key the resource sets on a cacheable answer: the decision's log fields and ``until``
#: (the token's ``exp``, epoch seconds).
CACHEABLE = "forward_auth.cacheable"
_NOT_IN_KEY = frozenset({"HTTP_X_REQUEST_ID", "HTTP_TRACEPARENT", "HTTP_TRACESTATE"})
_HIT = metrics.CACHE.labels(cache="decision", result="hit")
_MISS = metrics.CACHE.labels(cache="decision", result="miss")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Answer(NamedTuple):
    status: str
    headers: list[tuple[str, str]]
    body: bytes
    until: float  # time.monotonic()
    record: dict[str, Any]


def _key(environ: dict[str, Any]) -> bytes:
    """A digest of method, path, query, peer and every header (in arrival order) but the request
    id and trace context. NUL, which no header holds, separates the parts."""
    parts = [environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""),
             environ.get("REMOTE_ADDR", "")]
    parts += [f"{name}\0{value}" for name, value in environ.items()
              if name[:5] == "HTTP_" and name not in _NOT_IN_KEY]
    return hashlib.blake2b("\0".join(map(str, parts)).encode("utf-8", "surrogateescape"), digest_size=32).digest()


class DecisionCache:
    """WSGI middleware in front of the service app, for ``/verify`` only."""

    def __init__(self, app: WSGIApp, seconds: float, size: int = 1024) -> None:
        """``size`` bounds the answers kept (~1 KB each): a burst of one page's requests needs a few."""
        self._app = app
        self._seconds = seconds
        # An LRU bound; each answer's own deadline is checked on read (a TTL cache lookup costs ~2 us).
        self._answers: cachetools.LRUCache[bytes, _Answer] = cachetools.LRUCache(size)
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/verify":
            return self._app(environ, start_response)
        started = time.perf_counter()
        key = _key(environ)
        with self._lock:
            answer = self._answers.get(key)
        if answer is not None and answer.until > time.monotonic():
            return self._replay(answer, environ, start_response, started)
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return start_response(status, headers, exc_info)

        body = b"".join(self._app(environ, capture))
        _MISS.inc()  # once it was answered (a request handed to the core pool comes through twice)
        cacheable = environ.get(CACHEABLE)
        if cacheable is not None and captured and captured[0].startswith("200 "):
            life = min(self._seconds, cacheable["until"] - time.time())
            if life > 0:
                headers = [(k, v) for k, v in captured[1] if k.lower() != "x-request-id"]
                record = {k: v for k, v in cacheable.items() if k != "until"}
                with self._lock:
                    self._answers[key] = _Answer(captured[0], headers, body, time.monotonic() + life, record)
        return [body]

    @staticmethod
    def _replay(answer: _Answer, environ: dict[str, Any], start_response: Callable[..., Any],
                started: float) -> Iterable[bytes]:
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        start_response(answer.status, [*answer.headers, ("X-Request-Id", rid)])
        _HIT.inc()
        record_decision({**answer.record, "outcome": "allow", "status": 200, "reason": "ok", "request_id": rid,
                         "cached": True}, time.perf_counter() - started)
        return [answer.body]
