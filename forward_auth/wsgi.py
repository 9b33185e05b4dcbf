"""Entry point for running gunicorn directly: ``gunicorn -c gunicorn.conf.py``."""

from __future__ import annotations

from .asgi import WSGIApp
from .server import worker_app
from .settings import load


def get_app() -> WSGIApp:
    """The app configured from ``FORWARD_AUTH_*`` variables (and ``FORWARD_AUTH_CONFIG``)."""
    return worker_app(load())
