"""Every Prometheus metric the service exports, defined once (prometheus-client).

Under several gunicorn workers the client's multiprocess mode is used: ``forward-auth serve``
points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers fork, and marks a
worker's files dead when it exits; ``/metrics`` then adds up every worker.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

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


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric: all workers' under multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn ``child_exit``)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
