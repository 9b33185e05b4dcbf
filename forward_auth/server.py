"""gunicorn, run programmatically with the validated settings (``forward-auth serve``)."""

from __future__ import annotations

import logging
from typing import Any

import falcon
from gunicorn.app.base import BaseApplication

from .app import build_gate, create_app
from .errors import ForwardAuthError
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


def worker_app(settings: Settings) -> falcon.App:
    """Build the app in a worker and load the signing keys before the first request."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gate = build_gate(settings)
    try:
        gate.keys.keys()
    except ForwardAuthError as exc:
        log.warning("signing keys not loaded at start: %s", exc)
    return create_app(settings, gate)


class Server(BaseApplication):  # type: ignore[misc]
    """A gunicorn application whose WSGI app is built per worker (after fork)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self._settings).items():
            self.cfg.set(key, value)

    def load(self) -> falcon.App:
        return worker_app(self._settings)

