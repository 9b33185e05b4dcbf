"""gunicorn, run programmatically with the validated settings (``forward-auth serve``)."""

from __future__ import annotations

import logging
from typing import Any

import falcon
from gunicorn.app.base import BaseApplication

from . import metrics
from .app import build_gate, create_app
from .decisions import configure_logging
from .errors import ForwardAuthError
from .policy import PolicyError, PolicyFile, PolicySet, read_policy
from .settings import Settings

log = logging.getLogger("forward_auth")

#: Long SuperTokens cookies must reach us; nginx's own limit (8k per line) applies before.
LIMIT_REQUEST_FIELD_SIZE = 32768


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """The gunicorn settings derived from ours (also used by ``gunicorn.conf.py``)."""
    return {
        "bind": [settings.bind],
        "workers": settings.workers,
        "worker_class": "gthread",
        "threads": settings.threads,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 75,
        "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
        "loglevel": settings.log_level,
        "errorlog": "-",
        "proc_name": "forward-auth",
    }


def worker_app(settings: Settings, policy: PolicySet | None = None) -> falcon.App:
    """Build the app in a worker and load the signing keys before the first request.

    ``policy`` is the master's last good policy: a worker started by a reload with a broken
    policy file keeps serving it (the file is watched and picked up once it is fixed).
    """
    configure_logging(settings.log_level, settings.log_format)
    gate = build_gate(settings)
    try:
        gate.keys.keys()
    except ForwardAuthError as exc:
        log.warning("signing keys not loaded at start: %s", exc)
    policies = None
    if settings.policy_file:
        policies = PolicyFile(settings.policy_file, every=settings.policy_reload_seconds, initial=policy)
    return create_app(settings, gate, policies)


def _child_exit(arbiter: object, worker: Any) -> None:
    metrics.worker_exited(worker.pid)


class Server(BaseApplication):  # type: ignore[misc]
    """A gunicorn application whose WSGI app is built per worker (after fork).

    The master reads the policy file at start (an invalid one stops start-up) and again on
    SIGHUP, before gunicorn replaces the workers; a file that no longer parses keeps the last
    good policy, so a bad edit never takes the gate down.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._policy = read_policy(settings.policy_file) if settings.policy_file else None
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self._settings).items():
            self.cfg.set(key, value)
        self.cfg.set("on_reload", self._on_reload)
        self.cfg.set("child_exit", _child_exit)

    def _on_reload(self, arbiter: object) -> None:
        if not self._settings.policy_file:
            return
        try:
            self._policy = read_policy(self._settings.policy_file)
        except PolicyError as exc:
            log.error("SIGHUP: policy not reloaded, the previous one stays in force: %s", exc)

    def load(self) -> falcon.App:
        return worker_app(self._settings, self._policy)

