"""Every Prometheus metric the service exports, defined once (prometheus-client).

Under several gunicorn workers the client's multiprocess mode is used: ``forward-auth serve``
points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers fork, and marks a
worker's files dead when it exits; ``/metrics`` then adds up every worker, whether a worker
serves it on the main port or the master on its own address (:class:`MetricsServer`).
"""

from __future__ import annotations

import os
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
    from .decision_cache import WSGIApp

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


def _registry() -> CollectorRegistry:
    """Every worker's metrics under multiprocess mode, else this process's."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric: all workers' under multiprocess mode."""
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
