"""Every Prometheus metric the service exports, defined once (prometheus-client).

Under several gunicorn workers the client's multiprocess mode is used: ``forward-auth serve``
points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers fork, and marks a
worker's files dead when it exits; ``/metrics`` then adds up every worker, whether a worker
serves it on the main port or the master on its own address (:class:`MetricsServer`).
"""

from __future__ import annotations

import atexit
import bisect
import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
    multiprocess,
)

from .listener import Listener

if TYPE_CHECKING:
    from .asgi import WSGIApp

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DECISIONS = Counter("forward_auth_decisions_total", "Answers of /verify by outcome and reason",
                    ["outcome", "reason"])
DECISION_SECONDS = Histogram("forward_auth_decision_seconds", "Time to decide on one /verify request",
                             buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5))
JWKS_FETCHES = Counter("forward_auth_jwks_fetches_total", "JWKS fetch attempts by result", ["result"])
JWKS_AGE = Gauge("forward_auth_jwks_age_seconds", "Age of the key set in use when it was last read",
                 multiprocess_mode="livemax")
CORE_REQUESTS = Counter("forward_auth_core_requests_total", "Requests to the SuperTokens core",
                        ["endpoint", "outcome"])
CACHE = Counter("forward_auth_cache_total", "Cache lookups by cache and result", ["cache", "result"])
#: How often a worker writes its batched counts under multiprocess mode (:class:`Tally`).
FLUSH_SECONDS = 1.0


class Tally:
    """The counts of every request, added up in the process and written to the metrics in one go.

    Under multiprocess mode each metric write is a locked write into an mmap'd file: the four
    of a ``/verify`` (a decision, its latency's bucket and sum, a signature-cache hit) cost 5.2
    us against 1.2 here. Once :meth:`start` is called in a worker, counts and latencies are kept
    here and written every :data:`FLUSH_SECONDS` by a daemon thread, before the worker serves
    ``/metrics`` and when it exits; a scrape misses at most that second of the other workers'.
    Before that (one process, the tests) each write goes straight through.
    """

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        # The histogram's buckets, as its own observe() picks them (amount <= bound, +Inf last).
        self._bounds: list[float] = list(histogram._upper_bounds)
        self._lock = threading.Lock()
        self._batching = False
        self._counts: dict[Any, int] = {}
        self._buckets = [0] * len(self._bounds)
        self._sum = 0.0

    def count(self, *children: Any, seconds: float | None = None) -> None:
        """``child.inc()`` for each child, and the histogram's ``observe(seconds)`` if given, batched."""
        if not self._batching:
            for child in children:
                child.inc()
            if seconds is not None:
                self._histogram.observe(seconds)
            return
        with self._lock:
            counts = self._counts  # read under the lock: flush() swaps it
            for child in children:
                counts[child] = counts.get(child, 0) + 1
            if seconds is not None:
                self._buckets[bisect.bisect_left(self._bounds, seconds)] += 1
                self._sum += seconds

    def start(self) -> None:
        """Batch from now on in this process, flushing every :data:`FLUSH_SECONDS` and at exit."""
        self._batching = True
        threading.Thread(target=self._flushing, name="forward-auth-metrics", daemon=True).start()
        atexit.register(self.flush)  # gunicorn's workers (built-in too) exit through it; granian's call flush() themselves

    def flush(self) -> None:
        """Write what was counted since the last flush."""
        with self._lock:
            counts, self._counts = self._counts, {}
            buckets, self._buckets = self._buckets, [0] * len(self._bounds)
            total, self._sum = self._sum, 0.0
        for child, times in counts.items():
            child.inc(times)
        if any(buckets):  # prometheus-client has no batch observe: its histogram's own values
            self._histogram._sum.inc(total)
            for index, times in enumerate(buckets):
                if times:
                    self._histogram._buckets[index].inc(times)

    def _flushing(self) -> None:
        stop = threading.Event()
        while not stop.wait(FLUSH_SECONDS):
            self.flush()


TALLY = Tally(DECISION_SECONDS)


def _registry() -> CollectorRegistry:
    """Every worker's metrics under multiprocess mode, else this process's."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric: all workers' under multiprocess mode."""
    TALLY.flush()
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def _only_metrics(app: WSGIApp) -> WSGIApp:
    """``app`` at ``/metrics``; 404 for any other path (prometheus-client answers every path)."""
    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/metrics":
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: the metrics are at /metrics\n"]
    return serve


class MetricsServer(Listener):
    """``/metrics`` (and nothing else) on an address of its own (the ``metrics_bind`` setting),
    served by threads of the main process: never behind auth, never queued behind ``/verify``."""

    def __init__(self, address: str) -> None:
        super().__init__(address, _only_metrics(make_wsgi_app(_registry())), name="metrics")


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn ``child_exit``)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
