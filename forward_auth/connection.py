"""One HTTP/1.1 connection of the built-in server (``server: builtin``, :mod:`forward_auth.worker`).

httptools (llhttp, nginx's and Node's parser lineage) reads the request; the ASGI app of
:mod:`forward_auth.asgi` answers it. ``/verify`` is answered inside ``data_received``: the kept
answer or a decision that needs no core is written before the callback returns, with no task, no
thread hop and no ASGI messages. Anything else (a request that needs the core, every other path)
runs as a task, and the connection reads no further request until it is answered, so pipelined
answers keep their order.

Limits, as gunicorn words them: a request line longer than ``limit_request_line`` is answered
414, more than ``limit_request_fields`` headers or one longer than ``limit_request_field_size``
431 (a header still coming is counted as it comes), a request httptools cannot parse (or a
``CONNECT`` to an authority) 400, another HTTP version than 1.0 and 1.1 505, each with the
connection closed.
Trailers of a chunked body are no headers of the request; an upgrade is answered as plain HTTP
and the connection closed, as is an HTTP/1.0 request with a ``Transfer-Encoding``.
A request's headers must arrive within ``header_seconds`` of its first byte (else 408), an idle
connection is closed after ``keepalive_seconds`` (a head or body begun behind a request answered
by a task is timed from when reading resumes, not while the server reads none of it), and
aborted as long after that if its client still reads none of the last answers; all are checked
by the worker's once-a-second :meth:`Connection.expired`, so the hot path arms no timer. A
request body is read whole (at most :data:`~forward_auth.asgi.MAX_BODY` of it kept) before the
request is answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NamedTuple, cast

import httptools

from .asgi import MAX_BODY, ASGIApp, Key, Sent
from .repeats import Repeats

log = logging.getLogger("forward_auth")

#: Where a connection is: between requests, reading a request's head or body, or answering it.
IDLE, HEAD, BODY, BUSY = range(4)
_METHODS: dict[bytes, str] = {}
_STATUS_LINES: dict[int, bytes] = {}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Limits(NamedTuple):
    """What a client may send (gunicorn's names and defaults for the first three)."""

    request_line: int = 4094
    fields: int = 100
    field_size: int = 8190
    header_seconds: float = 30.0
    keepalive_seconds: float = 75.0


class Clock:
    """The worker's coarse clock (the loop's time, and the ``Date`` header), set once a second."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.date = b""
        self.tick(now)

    def tick(self, now: float) -> None:
        self.now = now
        self.date = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"


class Refused(Exception):
    """A request answered by the server itself, and the connection closed after."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class _Request(NamedTuple):
    scope: dict[str, Any]
    body: bytes
    keep_alive: bool
    key: Key | None = None  # the decision cache's, when known: a repeat's


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())
    return line


def encode(sent: Sent, *, date: bytes, head: bool, keep_alive: bool, http10: bool) -> bytes:
    """The answer as written: status line, the app's headers, ``date``, ``content-length`` (the
    app's own, else the body's), ``connection`` when it is not HTTP/1.1's default; no body for HEAD."""
    status, headers, body = sent
    parts = [status_line(status)]
    length = False
    for name, value in headers:
        if name == b"content-length":
            length = True
        parts += (name, b": ", value, b"\r\n")
    parts.append(date)
    if not length and status >= 200 and status not in (204, 304):
        parts.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    elif http10:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if not head:
        parts.append(body)
    return b"".join(parts)


def refusal(status: int, reason: str, date: bytes) -> bytes:
    return encode((status, [(b"content-type", b"text/plain")], reason.encode() + b"\n"),
                  date=date, head=False, keep_alive=False, http10=False)


class Connection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: Limits, clock: Clock, repeats: Repeats,
                 closed: Callable[[Connection], None]) -> None:
        self._app = app
        self._limits = limits
        self._clock = clock
        self._repeats = repeats
        self._closed = closed
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] | None = None
        self._peer = ""  # the client's address ("" on a unix socket), as the decision reads it
        self._server: tuple[str, int | None] = ("", None)
        self.state = IDLE
        self.since = clock.now
        self._url = b""
        self._version = "1.1"
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0  # bytes read since the last whole header (-1: one ended in this read)
        self._body: list[bytes] = []
        self._body_size = 0
        self._expect = False  # the head being read asks for 100 Continue; once read: it is owed, not yet sent
        self._coded = False  # a Transfer-Encoding header
        self._keep_alive = True
        self._queue: deque[_Request] = deque()
        self._answering = False  # a task answers the request in front: later ones wait
        self._closing = False  # close once the request in hand is answered (the worker stops, or rebalances)
        self._paused = False
        self._blocked = False  # the client reads too slowly: what it sends is not read meanwhile
        self._dying: asyncio.Transport | None = None  # closed by us, its last answers not yet flushed
        self._dying_since = 0.0
        self._read: bytes | None = None  # being parsed, read when no request was under way
        self._begun = 0  # requests begun in it
        self._learned: tuple[_Request, Key] | None = None  # its request, if a replay answered it

    # asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is one, though not by class
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):  # TCP; a unix socket's peer is local and has no address
            self._client = (str(peer[0]), int(peer[1]))
            self._peer = self._client[0]
        local = transport.get_extra_info("sockname")
        self._server = (str(local[0]), int(local[1])) if isinstance(local, tuple) else (str(local or ""), None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = self._dying = None
        self._queue.clear()
        self._closed(self)

    def eof_received(self) -> bool:
        """The client sent all it will: answer what it asked (a half-closed ``nc`` gets its answer), then close."""
        self._closing = True
        return self.state == BUSY or bool(self._queue)

    def pause_writing(self) -> None:
        self._blocked = True
        self._pause()

    def resume_writing(self) -> None:
        self._blocked = False
        self._resume()

    def data_received(self, data: bytes) -> None:
        if self._transport is None:  # closed by an answer: what follows is not read
            return
        if self.state == IDLE and not self._answering and not self._queue:
            repeat = self._repeats.get(self._peer, data, self._clock.now)
            if repeat is not None:  # parsed before: the same request (forward_auth.repeats)
                self.state = BUSY
                scope = {**repeat.scope, "client": self._client, "server": self._server}
                self._answer(_Request(scope, b"", repeat.keep_alive, repeat.key))
                return
            self._read, self._begun = data, 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # answered as plain HTTP, then closed (on_headers_complete): the rest is not HTTP's
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, Refused):
                self._refuse(refused.status, str(refused))
            else:
                log.error("request parsing failed", exc_info=refused)
                self._refuse(500, "internal error")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"bad request: {exc}")
        else:
            if self._learned is not None and self._begun == 1 and self.state in (IDLE, BUSY):  # one request, all of it (BUSY: its answer closed)
                request, key = self._learned
                self._repeats.learn(self._peer, data, request.scope, request.keep_alive, key,
                                    self._clock.now + self._app.kept_for(key))
            if self.state in (HEAD, BODY):  # httptools keeps a header (or trailer) whole until it ends: not without bound
                self._head_size = 0 if self._head_size < 0 else self._head_size + len(data)
                if self._head_size > self._limits.request_line + 2 * self._limits.field_size:
                    self._refuse(431, "request header too large")
        finally:
            self._read, self._learned = None, None

    # httptools' side

    def on_message_begin(self) -> None:
        self._begun += 1
        self.state = HEAD
        self.since = self._clock.now
        self._url = b""
        self._headers = []
        self._head_size = -1
        self._expect = self._coded = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.request_line:
            raise Refused(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > self._limits.field_size:
            raise Refused(431, "request header too large")
        self._head_size = -1
        if self.state != HEAD:  # a trailer of a chunked body: no header of the request (as under gunicorn)
            return
        headers = self._headers
        if len(headers) >= self._limits.fields:
            raise Refused(431, "too many request headers")
        name = name.lower()
        value = value.rstrip(b" \t")  # trailing whitespace is no part of a field's value (as gunicorn strips it)
        if name == b"expect":
            self._expect = value.lower() == b"100-continue"
        elif name == b"transfer-encoding":
            self._coded = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        version = self._version = self._parser.get_http_version()
        if version not in ("1.0", "1.1"):  # HTTP/2.0 in a request line: as gunicorn
            raise Refused(505, "HTTP version not supported")
        self.state = BODY
        # An upgrade's answer closes: httptools leaves the rest of the read unparsed (a request lost).
        # So does an HTTP/1.0 request's with a transfer coding, which HTTP/1.0 has not: where its body
        # ends is doubtful (RFC 9112 section 6.1).
        self._keep_alive = (self._parser.should_keep_alive() and not self._parser.should_upgrade()
                            and not (self._coded and version == "1.0"))
        self._body = []
        self._body_size = 0
        self._expect = self._expect and version == "1.1"
        if not self._answering:  # else once the request in hand is answered: the interim answer is this one's
            self._continue()

    def on_body(self, body: bytes) -> None:
        self.since = self._clock.now  # a body that keeps coming is not idle
        self._head_size = -1
        if self._body_size <= MAX_BODY:
            self._body.append(body)
            self._body_size += len(body)

    def on_message_complete(self) -> None:
        if self._transport is None:  # read behind an answer that closed the connection: none is answered
            return
        self.state = BUSY
        method = self._parser.get_method()
        text = _METHODS.get(method)
        if text is None:
            text = method.decode("ascii")
            if len(_METHODS) < 64:
                _METHODS[method] = text
        url = self._url
        if url[:1] == b"/":  # a fragment (never sent, but httptools lets it) is dropped, as gunicorn and granian do
            path, _, query = url.partition(b"#")[0].partition(b"?")
        elif url == b"*" and text == "OPTIONS":
            path, query = url, b""
        else:  # the absolute form a proxy may send; anything else (CONNECT's authority) is refused
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                raise Refused(400, "bad request target") from None
            if not parsed.path:
                raise Refused(400, "bad request target")
            path, query = parsed.path, parsed.query or b""
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": self._version,
                 "method": text, "scheme": "http", "path": path.decode("latin-1"), "raw_path": path,
                 "query_string": query, "root_path": "", "headers": self._headers,
                 "client": self._client, "server": self._server}
        request = _Request(scope, b"".join(self._body)[:MAX_BODY] if self._body else b"", self._keep_alive)
        if self._answering or self._queue:
            self._queue.append(request)
        else:
            self._answer(request)

    # answering

    def _answer(self, request: _Request) -> None:
        """Answer now if it can be, else start the task that will (and read nothing meanwhile)."""
        app, scope = self._app, request.scope
        try:
            if app.verifies(scope):
                key = request.key or app.key(scope)
                sent = app.replay(key)
                if sent is not None:
                    if self._read is not None and key is not None:  # maybe all of this read: learned if so
                        self._learned = request, key
                    self._send(request, sent)
                    return
                sent = app.verify_now(scope, key)
                if not callable(sent):
                    self._send(request, sent)
                    return
                answer = app.on_pool(sent)
            else:
                answer = self._asgi(request)
        except Exception:
            log.exception("request failed")
            self._send(request, (500, [(b"content-type", b"text/plain")], b"internal error\n"))
            return
        self._answering = True
        self._pause()
        asyncio.ensure_future(answer).add_done_callback(lambda task: self._answered(request, task))

    def _answered(self, request: _Request, task: asyncio.Future[Sent]) -> None:
        self._answering = False
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.error("request failed", exc_info=task.exception())
            self._send(request, (500, [(b"content-type", b"text/plain")], b"internal error\n"))
        else:
            self._send(request, task.result())
        while self._queue and not self._answering and self._transport is not None:
            self._answer(self._queue.popleft())
        if not self._answering and self.state in (HEAD, BODY):  # not read meanwhile: its clock starts as reading does
            self.since = self._clock.now
            self._continue()
        self._resume()

    async def _asgi(self, request: _Request) -> Sent:
        """The ASGI app's answer to a request other than ``/verify``'s."""
        body = request.body
        status, headers, parts = 500, [], []

        async def receive() -> dict[str, Any]:
            nonlocal body
            message = {"type": "http.request", "body": body, "more_body": False}
            body = b""
            return message

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            else:
                parts.append(message.get("body", b""))

        await self._app(request.scope, receive, send)
        return status, headers, b"".join(parts)

    def _send(self, request: _Request, sent: Sent) -> None:
        transport = self._transport
        if transport is None:
            return
        keep_alive = request.keep_alive and not self._closing
        scope = request.scope
        transport.write(encode(sent, date=self._clock.date, head=scope["method"] == "HEAD", keep_alive=keep_alive,
                               http10=scope["http_version"] == "1.0"))
        if keep_alive:
            # Idle once nothing waits: a head already begun behind it keeps its own clock and limits.
            if self.state == BUSY and not self._queue:
                self.state = IDLE
                self.since = self._clock.now
        else:
            self._close()

    def _continue(self) -> None:
        """``100 Continue``, if the request whose body is being read asked for it and has not had it."""
        if self._expect and self.state == BODY and self._transport is not None:
            self._expect = False
            self._transport.write(_CONTINUE)

    def _refuse(self, status: int, reason: str) -> None:
        """Answer the server's own refusal and close; with a request in hand, that answer closes
        the connection instead (the requests queued behind it are dropped)."""
        if self._answering:
            self._closing = True
        elif self._transport is not None:
            self._transport.write(refusal(status, reason, self._clock.date))
            self._close()

    def _close(self) -> None:
        """Close once the answers written are flushed (aborted by :meth:`expired` if the client
        never reads them)."""
        if self._transport is not None:
            self._queue.clear()
            self._transport.close()
            self._dying, self._dying_since = self._transport, self._clock.now
            self._transport = None

    def _pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _resume(self) -> None:
        """Read again, unless an answer is being made or the client has not read the last ones."""
        if self._paused and not self._answering and not self._blocked and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    # the worker's side

    def expired(self, now: float) -> None:
        """Close the connection if its headers are late (408) or it has been idle too long; abort
        it if it was closed that long ago and its client still reads none of the last answers."""
        if self._dying is not None:
            if now - self._dying_since > self._limits.keepalive_seconds:
                self.abort()
        elif self._answering:
            pass  # what follows the request in hand is not read until it is answered: it is not late
        elif self.state == HEAD and now - self.since > self._limits.header_seconds:
            self._refuse(408, "request headers not received in time")
        elif self.state in (IDLE, BODY) and now - self.since > self._limits.keepalive_seconds:
            self._close()

    def retire(self) -> None:
        """Close after the next answer (``connection: close``): the client reconnects elsewhere."""
        self._closing = True

    def stop(self) -> None:
        """The worker stops: an idle connection closes now, a busy one after its answer."""
        self._closing = True
        if self.state == IDLE and not self._queue:
            self._close()

    def abort(self) -> None:
        transport = self._transport or self._dying
        if transport is not None:
            transport.abort()
