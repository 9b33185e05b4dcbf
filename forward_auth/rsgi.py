"""The WSGI app served over granian's RSGI interface: header names as sent, core calls apart.

Two things granian's own WSGI layer cannot give:

- **Header names as sent.** granian's WSGI environ maps ``X_Forwarded_Uri`` and
  ``X-Forwarded-Uri`` to the same key (the later wins), so a client behind a proxy that passes
  underscores (Traefik, Envoy) could choose the original request. Here every header whose name
  holds an underscore is dropped, as gunicorn does; repeated headers are joined as PEP 3333 asks
  (cookies with ``; ``).
- **Core calls never hold up local verification.** A request is decided on the worker's event
  loop, with no thread hop; one that needs the core (revocation check, refresh promotion, a JWKS
  fetch) raises :class:`~forward_auth.blocking.WouldBlock` before any I/O and is decided again on
  a bounded pool of ``core_concurrency`` threads. When ``core_queue`` requests already wait for
  that pool, the next one is answered 503 ``core-busy`` at once. A hung core thus ties up at most
  the pool, never the loop that verifies tokens locally.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .blocking import INLINE, REFUSE, WouldBlock, no_waiting

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: Largest request body read (``POST /sessions/verify`` reads at most 1 MiB); the rest is dropped.
MAX_BODY = 1 << 20
_SPECIAL = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
_ERRORS = sys.stderr


class _Answer:
    """What the WSGI app answered: status, headers, body."""

    __slots__ = ("status", "headers")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[str, str]] = []

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        self.status = int(status[:3])
        # PEP 3333 header values are bytes spelled as latin-1; granian writes a str as UTF-8.
        self.headers = [(name, value if value.isascii() else
                         value.encode("latin-1", "replace").decode("utf-8", "replace")) for name, value in headers]


_KEYS: dict[str, str] = {}  # header name -> environ key ("" to drop), for the names seen most


def _environ_key(name: str) -> str:
    key = "" if "_" in name else _SPECIAL.get(name) or "HTTP_" + name.upper().replace("-", "_")
    if len(_KEYS) < 256 and len(name) <= 64:  # a client's invented names do not grow it without bound
        _KEYS[name] = key
    return key


def _address(text: str) -> tuple[str, str]:
    """``host:port`` (``[v6]:port``) as the environ's address and port strings."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), port


class RSGIApp:
    """An RSGI application serving a WSGI app (see the module docstring)."""

    def __init__(self, app: WSGIApp, *, core_concurrency: int, core_queue: int) -> None:
        self._app = app
        self._pool = ThreadPoolExecutor(max_workers=core_concurrency, thread_name_prefix="forward-auth-core")
        self._queue = core_queue
        self._waiting = 0  # requests handed to the pool and not yet answered (changed on the loop only)

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            return
        body = b""
        headers = scope.headers
        if "content-length" in headers or "transfer-encoding" in headers:
            body = await self._body(protocol)
        environ = self._environ(scope, body)
        try:
            with no_waiting(INLINE if self._waiting < self._queue else REFUSE):
                status, response_headers, content = self._call(environ, body)
        except WouldBlock:
            self._waiting += 1
            try:
                status, response_headers, content = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._call, self._environ(scope, body), body)
            finally:
                self._waiting -= 1
        protocol.response_bytes(status, response_headers, content)

    def _call(self, environ: dict[str, Any], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        answer = _Answer()
        chunks = self._app(environ, answer.start_response)
        try:
            content = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return answer.status, answer.headers, content

    @staticmethod
    async def _body(protocol: Any) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in protocol:
            if size < MAX_BODY:
                parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)[:MAX_BODY]

    @staticmethod
    def _environ(scope: Any, body: bytes) -> dict[str, Any]:
        server, server_port = _address(scope.server)
        client, client_port = _address(scope.client)
        # granian hands the path percent-decoded (as UTF-8); PEP 3333 wants its bytes as latin-1.
        path = scope.path
        if not path.isascii():
            path = path.encode("utf-8").decode("latin-1")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": server,
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
            "REMOTE_ADDR": client,
            "REMOTE_PORT": client_port,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": _ERRORS,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in scope.headers.items():  # one item per value, in the order sent
            key = _KEYS.get(name)
            if key is None:
                key = _environ_key(name)
            if not key:  # ambiguous with the dashed name: dropped, as gunicorn does
                continue
            if key in environ:
                environ[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
            else:
                environ[key] = value
        if body and "CONTENT_LENGTH" not in environ:
            environ["CONTENT_LENGTH"] = str(len(body))
        return environ
