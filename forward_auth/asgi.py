"""The service over granian's ASGI interface: headers as sent, core calls apart, ``/verify`` lean.

``/verify`` itself is answered by its endpoint (:mod:`forward_auth.endpoint`) straight from the
ASGI scope, with no WSGI environ and no Falcon: the same answer at a third of the cost. Every
other path is served by the WSGI app. Three things granian's own WSGI layer (or its RSGI one) cannot give:

- **Header names as sent.** granian's WSGI environ maps ``X_Forwarded_Uri`` and
  ``X-Forwarded-Uri`` to the same key (the later wins), so a client behind a proxy that passes
  underscores (Traefik, Envoy) could choose the original request. ASGI hands the names over as
  sent: every header whose name holds an underscore is dropped, as gunicorn does; repeated
  headers are joined as PEP 3333 asks (cookies with ``; ``).
- **Header values as sent.** RSGI leaves out a header whose value is not ASCII (a raw UTF-8
  byte in nginx's ``X-Original-URI``, or in any cookie beside the token); ASGI gives the bytes,
  which become latin-1 text as under any WSGI server. The path is ``raw_path`` decoded once.
- **Core calls never hold up local verification.** A request is decided on the worker's event
  loop, with no thread hop; one that needs the core (revocation check, refresh promotion, a JWKS
  fetch) raises :class:`~forward_auth.blocking.WouldBlock` before any I/O and is decided again on
  a bounded pool of ``core_concurrency`` threads. When ``core_queue`` more requests already wait
  for that pool, the next one is answered 503 ``core-busy`` at once. A hung core thus ties up at
  most the pool, never the loop that verifies tokens locally.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

from .blocking import INLINE, REFUSE, WouldBlock, no_waiting
from .decision_cache import BODY_HEADERS, DecisionCache, Sent, raw_key
from .endpoint import Answer, Incoming, Verify

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Key = tuple[bytes | None, str | None]  # a /verify request's in the decision cache: raw_key's digest and X-Request-Id
#: Largest request body read (``POST /sessions/verify`` reads at most 1 MiB); the rest is not.
MAX_BODY = 1 << 20
_SPECIAL = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
#: The methods ``/verify`` answers (Falcon's resource has their responders); others go to Falcon: 405 or 400.
VERIFY_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NAMES: dict[bytes, str] = {}  # header name -> its text ("" to drop), for the names seen most
T = TypeVar("T")
_ERRORS = sys.stderr




class _Response:
    """What the WSGI app answered to ``start_response``."""

    __slots__ = ("status", "headers")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        self.status = int(status[:3])
        # PEP 3333: header values are bytes spelled as latin-1.
        self.headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class ASGIApp:
    """An ASGI application serving a WSGI app (see the module docstring), and ``/verify`` straight
    from its endpoint (``verify``) when it has one."""

    def __init__(self, app: WSGIApp, *, verify: Verify | None = None, core_concurrency: int, core_queue: int) -> None:
        self._app = app
        self._verify = verify
        self._memo = verify if isinstance(verify, DecisionCache) else None
        self._pool = ThreadPoolExecutor(max_workers=core_concurrency, thread_name_prefix="forward-auth-core")
        self._limit = core_concurrency + core_queue  # requests with the pool: calling the core or queued
        self._with_pool = 0  # changed on the loop only

    def verifies(self, scope: dict[str, Any]) -> bool:
        """Whether the request is ``/verify``'s, answered by its endpoint (else by the WSGI app)."""
        return self._verify is not None and scope.get("raw_path") == b"/verify" and scope["method"] in VERIFY_METHODS

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http":
            return
        if self.verifies(scope):
            await self._verify_path(scope, receive, send)
            return
        environ = self._environ(scope)
        if environ is None:
            await _two_hosts(send)
            return
        body = b""
        if "CONTENT_LENGTH" in environ or "HTTP_TRANSFER_ENCODING" in environ:
            body = await self._body(receive)
            _with_body(environ, body)

        def again() -> Sent:  # afresh: the first call may have changed the environ
            fresh = self._environ(scope) or {}
            _with_body(fresh, body)
            return self._call(fresh)

        status, headers, content = await self._decided(lambda: self._call(environ), again)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def key(self, scope: dict[str, Any]) -> Key | None:
        """The decision cache's key of a ``/verify`` request (None when there is no cache)."""
        if self._memo is None:
            return None
        return raw_key(scope["method"].encode("latin-1"), b"/verify", scope["query_string"],
                       _peer(scope).encode("latin-1"), scope["headers"])

    def replay(self, key: Key | None) -> Sent | None:
        """The decision cache's answer to the request of ``key``, or None (decide it: :meth:`verify_now`)."""
        return None if key is None or self._memo is None else self._memo.replay(*key)

    def kept_for(self, key: Key) -> float:
        """How long the decision cache may still replay its answer to the request of ``key``, in seconds."""
        return 0.0 if self._memo is None else self._memo.kept_for(key[0])

    def verify_now(self, scope: dict[str, Any], key: Key | None) -> Sent | Callable[[], Sent]:
        """``/verify``'s answer decided without waiting (a decision that needs no core; the cache
        keeps it under ``key``, :meth:`key`'s), or the call that makes it on the core pool
        (:meth:`on_pool`). Its body, if any, is left to the server: no ``/verify`` reads one."""
        verify = self._verify
        assert verify is not None
        if self._memo is not None and key is not None:
            verify = partial(self._memo.decide, key[0])
        headers = _headers(scope)
        if headers is None:
            return TWO_HOSTS
        incoming = Incoming(scope["method"], "/verify", scope["query_string"].decode("latin-1"), headers, _peer(scope))
        try:
            with no_waiting(INLINE if self._with_pool < self._limit else REFUSE):
                return _sent(verify(incoming))
        except WouldBlock:
            return lambda: _sent(verify(incoming))

    async def _verify_path(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        """``/verify`` without Falcon or a WSGI environ: the endpoint's answer as it is."""
        if any(name in BODY_HEADERS for name, _ in scope["headers"]):
            await self._body(receive)  # read and dropped
        key = self.key(scope)
        sent = self.replay(key) or self.verify_now(scope, key)
        if callable(sent):
            sent = await self.on_pool(sent)
        await send({"type": "http.response.start", "status": sent[0], "headers": sent[1]})
        await send({"type": "http.response.body", "body": sent[2]})

    async def _decided(self, call: Callable[[], T], again: Callable[[], T]) -> T:
        """``call()`` on the loop; if it needs the core, ``again()`` on the core pool."""
        try:
            with no_waiting(INLINE if self._with_pool < self._limit else REFUSE):
                return call()
        except WouldBlock:
            pass
        return await self.on_pool(again)

    def on_pool(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """``call()`` on the core pool, where it may wait on the core. It counts against the bound
        from now, not from when its awaiter first runs: a burst read in one loop iteration is held to it."""
        self._with_pool += 1
        future = asyncio.get_running_loop().run_in_executor(self._pool, call)
        future.add_done_callback(self._off_pool)
        return future

    def _off_pool(self, _: asyncio.Future[Any]) -> None:
        self._with_pool -= 1

    def _call(self, environ: dict[str, Any]) -> Sent:
        response = _Response()
        chunks = self._app(environ, response.start_response)
        try:
            content = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return response.status, response.headers, content

    @staticmethod
    async def _body(receive: Callable[[], Any]) -> bytes:
        parts: list[bytes] = []
        size = 0
        while size <= MAX_BODY:
            message = await receive()
            if message["type"] != "http.request":
                break
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if not message.get("more_body"):
                break
        return b"".join(parts)[:MAX_BODY]

    @staticmethod
    def _environ(scope: dict[str, Any]) -> dict[str, Any] | None:
        """The WSGI environ of the request (its body read apart), or None for two Host headers."""
        server = scope.get("server") or ("", None)
        client = scope.get("client") or ("", None)  # None on a unix socket: a local peer
        raw_path = scope.get("raw_path")
        path = (unquote_to_bytes(raw_path).decode("latin-1") if raw_path is not None
                else scope["path"].encode("utf-8").decode("latin-1"))
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": "" if server[1] is None else str(server[1]),
            "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
            "REMOTE_ADDR": str(client[0]),
            "REMOTE_PORT": "" if client[1] is None else str(client[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": _ERRORS,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        if raw_path is not None:  # the request target as sent, as gunicorn gives it
            environ["RAW_URI"] = raw_path.decode("latin-1") + (f"?{environ['QUERY_STRING']}" if environ["QUERY_STRING"] else "")
        headers = _headers(scope)
        if headers is None:
            return None
        for name, value in headers.items():
            environ[_SPECIAL.get(name) or "HTTP_" + name.upper().replace("-", "_")] = value
        return environ


def _with_body(environ: dict[str, Any], body: bytes) -> None:
    environ["wsgi.input"] = io.BytesIO(body)
    if body and "CONTENT_LENGTH" not in environ:
        environ["CONTENT_LENGTH"] = str(len(body))


#: Which host? gunicorn refuses it too.
TWO_HOSTS: Sent = (400, [(b"content-type", b"text/plain")], b"more than one Host header\n")


async def _two_hosts(send: Callable[[Any], Any]) -> None:
    await send({"type": "http.response.start", "status": TWO_HOSTS[0], "headers": TWO_HOSTS[1]})
    await send({"type": "http.response.body", "body": TWO_HOSTS[2]})


def _peer(scope: dict[str, Any]) -> str:
    client = scope.get("client") or ("", None)  # None on a unix socket: a local peer
    return str(client[0])


def _sent(answer: Answer) -> Sent:
    return answer.status, [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers], answer.body


def _headers(scope: dict[str, Any]) -> dict[str, str] | None:
    """The request's headers by lower-case name, in the order sent, or None for two Host headers.
    A name holding an underscore is dropped (ambiguous with the dashed one, as gunicorn does);
    repeats are joined as PEP 3333 asks (cookies with ``; ``)."""
    headers: dict[str, str] = {}
    for name, raw in scope["headers"]:
        key = _NAMES.get(name)
        if key is None:
            key = "" if b"_" in name else name.decode("latin-1")
            if len(_NAMES) < 256 and len(name) <= 64:  # a client's invented names do not grow it without bound
                _NAMES[name] = key
        if not key:
            continue
        value = raw.decode("latin-1")
        if key in headers:
            if key == "host":
                return None
            headers[key] += ("; " if key == "cookie" else ",") + value
        else:
            headers[key] = value
    return headers
