"""An address the main process serves itself, from threads: ``metrics_bind``, ``session_api_bind``."""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.exposition import ThreadingWSGIServer

if TYPE_CHECKING:
    from .asgi import WSGIApp


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """No line per request."""


class Listener:
    """``app`` on HOST:PORT, one thread a connection: never queued behind ``/verify``."""

    def __init__(self, address: str, app: WSGIApp, *, name: str) -> None:
        """Listen on HOST:PORT and serve; OSError when that address cannot be listened on."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self._server = make_server(host, int(port), app, Server, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)
        self._thread.start()

    def close_inherited(self) -> None:
        """In a forked worker: close the copy of the listening socket (the master serves it)."""
        self._server.socket.close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
