"""Serving the development core: its WSGI app, a threaded server, and the loopback-only rule."""

from __future__ import annotations

import ipaddress
import json
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import falcon

from .resources import CoreMiddleware, add_routes, reject_bad_input, serialize_error
from .state import DevCore


def create_devcore_app(core: DevCore) -> falcon.App:
    """Build the WSGI app serving ``core`` (see :mod:`forward_auth.devcore.resources`)."""
    app = falcon.App(middleware=[CoreMiddleware(core)])
    app.set_error_serializer(serialize_error)
    # ASCII JSON: any text a core takes (a lone surrogate in a user id too) encodes.
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(dumps=json.dumps)
    app.add_error_handler(ValueError, reject_bad_input)
    add_routes(app, core)
    return app


class _QuietRequestHandler(WSGIRequestHandler):
    """A wsgiref request handler that does not log every request."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base class name)
        """Drop the access log line."""


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """A wsgiref server that handles each request in a daemon thread."""

    daemon_threads = True


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    """The same server on an IPv6 socket."""

    address_family = socket.AF_INET6


def serve_devcore(
    host: str,
    port: int,
    *,
    access_token_validity: int = 3600,
    api_key: str | None = None,
    allow_remote: bool = False,
) -> None:
    """Serve a fresh dev core on ``host:port`` until interrupted (Ctrl-C), saying where on stdout.

    Raises:
        ValueError: ``host`` is not a loopback address and ``allow_remote`` is false.
        OSError: ``host:port`` cannot be listened on.
    """
    _require_loopback(host, allow_remote)
    core = DevCore(access_token_validity=access_token_validity, api_key=api_key)
    with _make_server(host, port, core) as server:
        print(f"SuperTokens dev core listening on {_base_url(host, server.server_port)}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("SuperTokens dev core stopped", flush=True)


def start_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    allow_remote: bool = False,
    **core_options: Any,
) -> tuple[DevCore, str, Callable[[], None]]:
    """Serve a fresh dev core from a background thread.

    Args:
        host: Address to bind; loopback only unless ``allow_remote``.
        port: Port to bind; 0 picks a free one.
        allow_remote: Allow a non-loopback ``host``.
        **core_options: Passed to :class:`DevCore`.

    Returns:
        The core, its base URL (e.g. ``http://127.0.0.1:41234``) and a callable
        that stops the server and waits for its thread.
    """
    _require_loopback(host, allow_remote)
    core = DevCore(**core_options)
    server = _make_server(host, port, core)
    thread = threading.Thread(target=server.serve_forever, name="devcore", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return core, _base_url(host, server.server_port), stop


def _make_server(host: str, port: int, core: DevCore) -> WSGIServer:
    server_class = _ThreadingWSGIServerV6 if ":" in host else _ThreadingWSGIServer
    return make_server(
        host,
        port,
        create_devcore_app(core),
        server_class=server_class,
        handler_class=_QuietRequestHandler,
    )


def _require_loopback(host: str, allow_remote: bool) -> None:
    if allow_remote or is_loopback(host):
        return
    raise ValueError(
        f"refusing to serve the dev core on non-loopback address {host!r}: it is a "
        "development tool with no hardening; pass allow_remote=True (--allow-remote) to override"
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
