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
from dataclasses import dataclass
from typing import Any

import cachetools

from . import metrics
from .decisions import record_decision, request_id

#: environ key the resource sets on a cacheable answer: the decision's log fields and ``until``
#: (the token's ``exp``, epoch seconds).
CACHEABLE = "forward_auth.cacheable"
_NOT_IN_KEY = frozenset({"HTTP_X_REQUEST_ID", "HTTP_TRACEPARENT", "HTTP_TRACESTATE"})
_KEY_ENVIRON = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REMOTE_ADDR")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class _Answer:
    status: str
    headers: list[tuple[str, str]]
    body: bytes
    until: float  # time.monotonic()
    record: dict[str, Any]


def _key(environ: dict[str, Any]) -> bytes:
    digest = hashlib.blake2b(digest_size=32)
    for name in _KEY_ENVIRON:
        digest.update(str(environ.get(name, "")).encode("utf-8", "surrogateescape") + b"\0")
    for name in sorted(k for k in environ if k.startswith("HTTP_") and k not in _NOT_IN_KEY):
        digest.update(f"{name}\0{environ[name]}\0".encode("utf-8", "surrogateescape"))
    return digest.digest()


class DecisionCache:
    """WSGI middleware in front of the service app, for ``/verify`` only."""

    def __init__(self, app: WSGIApp, seconds: float, size: int = 4096) -> None:
        self._app = app
        self._seconds = seconds
        self._answers: cachetools.TTLCache[bytes, _Answer] = cachetools.TTLCache(size, ttl=seconds)
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
        metrics.CACHE.labels(cache="decision", result="miss").inc()
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return start_response(status, headers, exc_info)

        body = b"".join(self._app(environ, capture))
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
        metrics.CACHE.labels(cache="decision", result="hit").inc()
        record_decision({**answer.record, "outcome": "allow", "status": 200, "reason": "ok", "request_id": rid,
                         "cached": True}, time.perf_counter() - started)
        return [answer.body]
