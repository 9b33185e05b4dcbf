"""The built-in server's connection (forward_auth/connection.py) over real TCP on a real uvloop
loop: keep-alive, pipelining, HTTP/1.0, HEAD, ``Expect``, limits, timeouts, half-closed clients."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvloop
from conftest import CORE, FakeCore, v5

from forward_auth import settings as settings_module
from forward_auth.app import build_gate, create_service
from forward_auth.asgi import ASGIApp
from forward_auth.connection import Clock, Connection, Limits, encode
from forward_auth.devcore.minter import SigningKey
from forward_auth.repeats import Repeats

OK_SESSION = {"status": "OK", "session": {"handle": "handle-1", "userId": "user-1", "userDataInJWT": {},
                                          "tenantId": "public"}}


#: The worker's once-a-second tick, here: the connections' clock moves, and their limits are checked, this often.
TICK_SECONDS = 0.05


class Edge:
    """Connections of the built-in server on a loopback port, served by a loop in a thread; the
    worker's once-a-second tick runs every :data:`TICK_SECONDS` here."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.loop = uvloop.new_event_loop()
        self.open: set[Connection] = set()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(app, limits, ready), daemon=True)
        self._thread.start()
        assert ready.wait(5)

    def _run(self, app: ASGIApp, limits: Limits, ready: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        clock, repeats = Clock(loop.time()), Repeats()

        def made() -> Connection:
            connection = Connection(app, limits, clock, repeats, self.open.discard)
            self.open.add(connection)
            return connection

        def tick() -> None:
            clock.tick(loop.time())
            for connection in list(self.open):
                connection.expired(clock.now)
            loop.call_later(TICK_SECONDS, tick)

        server = loop.run_until_complete(loop.create_server(made, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        tick()
        ready.set()
        loop.run_forever()

    def on_each(self, call: Callable[[Connection], object]) -> None:
        """Once a connection is open, ``call`` on each open one, in the loop's thread."""
        while not self.open:
            time.sleep(0.01)
        self.loop.call_soon_threadsafe(lambda: [call(each) for each in list(self.open)])

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def talk(self, data: bytes, *, shut: bool = False, wait: float = 0.3) -> bytes:
        """Send ``data`` on a new connection; everything answered until the server closes it
        (``closed`` is then the last item) or nothing came for ``wait`` seconds."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(data)
            if shut:
                conn.shutdown(socket.SHUT_WR)
            return read_all(conn, wait)


def read_all(conn: socket.socket, wait: float) -> bytes:
    conn.settimeout(wait)
    got = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            return got
        if not chunk:
            return got + b"<closed>"
        got += chunk


@pytest.fixture
def edge(fake_core: FakeCore, key: SigningKey) -> Iterator[Edge]:
    fake_core.verify_answer = OK_SESSION
    settings = settings_module.load({"core_url": CORE, "check_database": "false"}, environ={})
    gate = build_gate(settings, transport=fake_core)
    gate.keys.keys()
    service = create_service(settings, gate)
    served = Edge(ASGIApp(service, verify=service.verify, core_concurrency=2, core_queue=4),
                  Limits(request_line=200, fields=20, field_size=2000, header_seconds=0.3, keepalive_seconds=0.6))
    yield served
    served.close()


def get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    return (f"{method} {path} HTTP/{version}\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def statuses(answer: bytes) -> list[int]:
    """The statuses answered, in order (a body runs straight into the next status line)."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def cookie(key: SigningKey) -> str:
    return f"Cookie: sAccessToken={v5(key)}"


def test_keep_alive_answers_each_request_in_turn_with_date_and_length(edge: Edge, key: SigningKey) -> None:
    answer = edge.talk(get("/verify", cookie(key)) + get("/verify") + get("/healthz"))
    assert statuses(answer) == [200, 401, 200] and not answer.endswith(b"<closed>")
    first = answer.split(b"\r\n\r\n")[0].decode().lower()
    assert "x-user-id: user-1" in first and "date: " in first and "content-length: " in first


def test_pipelined_answers_keep_their_order_when_one_waits_for_the_core(edge: Edge, fake_core: FakeCore,
                                                                        key: SigningKey) -> None:
    token = cookie(key)
    answer = edge.talk(get("/verify?checkDatabase=true", token) + get("/verify") + get("/verify", token))
    assert statuses(answer) == [200, 401, 200]
    assert fake_core.count("/recipe/session/verify") == 1  # the first, on the core pool


def test_http10_closes_unless_asked_and_head_has_no_body(edge: Edge, key: SigningKey) -> None:
    closed = edge.talk(get("/healthz", version="1.0"))
    assert closed.startswith(b"HTTP/1.1 200") and b"connection: close" in closed and closed.endswith(b"<closed>")
    kept = edge.talk(get("/healthz", "Connection: keep-alive", version="1.0"))
    assert b"connection: keep-alive" in kept and not kept.endswith(b"<closed>")


def test_head_is_answered_without_the_body_its_length_kept() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        return [b"hello"]

    served = Edge(ASGIApp(app, core_concurrency=1, core_queue=1), Limits())
    try:
        answer = served.talk(get("/", method="HEAD") + get("/"))
    finally:
        served.close()
    assert statuses(answer) == [200, 200] and answer.count(b"content-length: 5") == 2  # once each, as the app said
    assert answer.count(b"hello") == 1 and answer.endswith(b"hello")


def test_a_request_closing_the_connection_is_answered_then_closed(edge: Edge) -> None:
    answer = edge.talk(get("/healthz", "Connection: close") + get("/healthz"))
    assert statuses(answer) == [200] and answer.endswith(b"<closed>")


def test_a_half_closed_client_gets_its_answer(edge: Edge, key: SigningKey) -> None:
    """``printf 'GET /verify ...' | nc``: the client shuts its side as soon as it has sent."""
    assert statuses(edge.talk(get("/verify", cookie(key)), shut=True)) == [200]
    waited = edge.talk(get("/verify?checkDatabase=true", cookie(key)), shut=True)
    assert statuses(waited) == [200] and waited.endswith(b"<closed>")


def test_an_upgrade_is_answered_as_plain_http_then_closed(edge: Edge, key: SigningKey) -> None:
    """``Connection: upgrade`` (a websocket's request, passed on by a proxy): answered, then closed,
    not kept open with what followed it unread."""
    upgrade = get("/verify", "Connection: Upgrade", "Upgrade: websocket", cookie(key))
    answer = edge.talk(upgrade + get("/verify", cookie(key)))
    assert statuses(answer) == [200] and b"connection: close" in answer and answer.endswith(b"<closed>")


def test_expect_100_continue_is_answered_before_the_body(edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as conn:
        conn.sendall(b"POST /sessions/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert conn.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(b"{}")
        assert statuses(read_all(conn, 0.3)) == [401]  # the session API's answer to a body with no token


def test_a_header_value_loses_its_trailing_whitespace() -> None:
    """As gunicorn and granian read it: ``X-A: v \\t`` is ``v`` to the app."""
    def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["HTTP_X_A"].encode()]

    served = Edge(ASGIApp(echo, core_concurrency=1, core_queue=1), Limits())
    try:
        answer = served.talk(get("/echo", "X-A:  v \t "))
    finally:
        served.close()
    assert answer.endswith(b"\r\n\r\nv")


@pytest.mark.parametrize(("request_bytes", "status"), [
    (get("/verify?" + "a" * 300), 414),
    (get("/verify", *(f"X-Filler-{i}: x" for i in range(21))), 431),
    (get("/verify", "X-Big: " + "x" * 2000), 431),
    (b"GET /verify HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    (b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 400),
    (get("/verify", version="2.0"), 505),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # TLS to the plain port
])
def test_what_the_server_refuses_is_a_4xx_and_the_connection_closed(edge: Edge, request_bytes: bytes,
                                                                      status: int) -> None:
    answer = edge.talk(request_bytes)
    assert statuses(answer) == [status] and answer.endswith(b"<closed>")


def test_the_absolute_form_and_a_chunked_body_are_read_as_any_server_reads_them(edge: Edge, key: SigningKey) -> None:
    assert statuses(edge.talk(get("http://gate.example/verify", cookie(key)))) == [200]
    assert statuses(edge.talk(get("/verify#top", cookie(key)) + get("/verify?a=1#top", cookie(key)))) == [200, 200]
    chunked = (b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + cookie(key).encode()
               + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert statuses(edge.talk(chunked + get("/verify"))) == [200, 401]  # the body read and dropped


def test_a_trailer_is_no_header_of_the_request(edge: Edge, key: SigningKey) -> None:
    """A chunked body's trailer fields are not read as headers (gunicorn and granian leave them
    out too): a token, a Host or a forwarded header there is not the request's."""
    trailer = b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
    assert statuses(edge.talk(trailer + cookie(key).encode() + b"\r\n\r\n" + get("/verify", cookie(key)))) == [401, 200]
    assert statuses(edge.talk(trailer + b"Host: y\r\n\r\n")) == [401]  # not two Hosts


def test_headers_that_never_finish_get_408_and_idle_connections_are_closed(edge: Edge) -> None:
    started = time.monotonic()
    late = edge.talk(b"GET /verify HTTP/1.1\r\nHost: x\r\n", wait=3)
    assert statuses(late) == [408] and late.endswith(b"<closed>")
    # a head's first byte is timed by the tick's clock, up to a tick behind the real one
    assert 0.3 - TICK_SECONDS <= time.monotonic() - started < 2
    idle = edge.talk(get("/healthz"), wait=3)
    assert statuses(idle) == [200] and idle.endswith(b"<closed>")  # closed quietly after keepalive_seconds


@pytest.mark.parametrize(("before", "answered"), [(get("/healthz"), [200]), (get("/healthz") + get("/verify"), [200, 401])])
def test_a_head_half_read_behind_an_answer_made_by_a_task_still_gets_its_408(edge: Edge, before: bytes,
                                                                            answered: list[int]) -> None:
    """The first request is answered by a task (``/healthz``), a second one perhaps queued behind
    it; the head behind them, half sent, is timed as a head (408 after ``header_seconds``), not as
    an idle connection (closed quietly)."""
    late = edge.talk(before + b"GET /verify HTTP/1.1\r\nHost: x\r\n", wait=3)
    assert statuses(late) == [*answered, 408] and late.endswith(b"<closed>")


def test_a_raw_utf8_byte_beside_the_token_still_verifies(edge: Edge, key: SigningKey) -> None:
    raw = b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Original-URI: /caf\xc3\xa9\r\nCookie: pref=caf\xc3\xa9; sAccessToken="
    assert statuses(edge.talk(raw + v5(key).encode() + b"\r\n\r\n")) == [200]


def test_an_app_that_fails_gets_500_and_the_connection_goes_on(fake_core: FakeCore) -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    served = Edge(ASGIApp(broken, core_concurrency=1, core_queue=1), Limits())
    try:
        answer = served.talk(get("/anything") + get("/anything"))
    finally:
        served.close()
    assert statuses(answer) == [500, 500] and b"boom" not in answer


def test_encode_leaves_out_the_length_of_204_and_keeps_the_apps_own() -> None:
    date = b"date: x\r\n"
    assert b"content-length" not in encode((204, [], b""), date=date, head=False, keep_alive=True, http10=False)
    head = encode((200, [(b"content-length", b"15")], b""), date=date, head=True, keep_alive=True, http10=False)
    assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\ndate: x\r\n\r\n"


def flood(edge: Edge, burst: bytes) -> socket.socket:
    """A connection that sends ``burst`` after ``burst`` and reads nothing, until the server reads
    no more of it either: its answers then wait unsent, past the kernel's buffers, in its own."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(("127.0.0.1", edge.port))
    # The server's kernel buffers kept small too: its own fills within a few thousand answers,
    # and the client's sends stall soon after the server stops reading (long before a 408).
    edge.on_each(lambda each: [each._transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, option, 4096)
                               for option in (socket.SO_SNDBUF, socket.SO_RCVBUF)])
    conn.settimeout(0.05)  # well within the fixture's header_seconds: a 408 comes later
    sent, deadline = 0, time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            sent = (sent + conn.send(burst[sent:])) % len(burst)
        except TimeoutError:
            if unsent(edge):
                return conn
    conn.close()
    raise AssertionError("the server never kept an answer unsent")


def unsent(edge: Edge) -> int:
    """The bytes of answers the server keeps unsent, over its connections (closed ones too)."""
    transports = [each._transport or each._dying for each in list(edge.open)]
    return sum(transport.get_write_buffer_size() for transport in transports if transport)


def test_a_client_that_reads_nothing_is_not_read_either(edge: Edge) -> None:
    """Pipelined requests from a client that reads no answer: once the answers wait unsent, no
    more is read, even after an answer made by a task (``/healthz``) between them; so the
    answers kept for it stay within a read's worth."""
    with flood(edge, get("/verify") * 1500 + get("/healthz") + get("/verify") * 1500):
        kept = 0
        for _ in range(10):
            kept = max(kept, unsent(edge))
            time.sleep(0.02)
    assert 0 < kept < 3_000_000, kept


def test_a_connection_closed_on_a_client_that_reads_nothing_is_aborted(edge: Edge) -> None:
    """A client that sends a burst and reads no answer: the connection is closed (idle, or 408),
    its answers never flushed; ``keepalive_seconds`` later it is aborted, not held forever."""
    with flood(edge, get("/verify") * 3000):
        deadline = time.monotonic() + 5
        while edge.open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not edge.open


@pytest.mark.parametrize(("start", "answered"), [
    (b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Big: ", []),
    (b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Big: ", []),
    (get("/healthz") + get("/verify") + b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Big: ", [200, 401])])
def test_a_header_that_never_ends_is_refused_before_it_ends(edge: Edge, start: bytes, answered: list[int]) -> None:
    """httptools keeps a header (or a trailer) whole until its end: one that keeps coming is
    refused as it comes (431), not held in memory until the header or idle timeout; behind
    pipelined answers too."""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as conn:
        conn.sendall(start)
        try:
            for _ in range(6):
                time.sleep(0.02)
                conn.sendall(b"x" * 1500)
        except OSError:
            pass  # refused and closed meanwhile
        answer = read_all(conn, 1)
    assert statuses(answer) == [*answered, 431] and answer.endswith(b"<closed>")


@pytest.mark.parametrize("behind", [b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
                                    b"GET /verify HTTP/1.1\r\nHost: x\r\n"])
def test_what_is_not_read_behind_a_slow_answer_does_not_time_out(edge: Edge, fake_core: FakeCore, key: SigningKey,
                                                                   behind: bytes) -> None:
    """A request answered by the core slower than ``keepalive_seconds`` (and ``header_seconds``),
    the next one begun behind it in the same read: the server reads none of it meanwhile, so its
    body or head is not late; the slow answer is sent, and the next request then finished and answered."""
    fake_core.verify_seconds = 0.8  # longer than the fixture's timeouts
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as conn:
        conn.sendall(get("/verify?checkDatabase=true", cookie(key)) + behind)
        conn.settimeout(2)
        first = conn.recv(65536)
        assert statuses(first) == [200] and b"connection: close" not in first
        conn.sendall(b"defghij" if behind.startswith(b"POST") else b"\r\n")
        assert statuses(read_all(conn, 0.3)) == [401]


def test_a_100_continue_behind_an_answer_comes_after_it(edge: Edge) -> None:
    """``Expect: 100-continue`` on a request pipelined behind one answered by a task: the interim
    answer is the second request's, so it follows the first one's answer, not precedes it (where
    the client reads it as the first request's)."""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as conn:
        conn.sendall(get("/healthz") + b"POST /sessions/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        answer = read_all(conn, 0.3)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"ok"}HTTP/1.1 100 Continue\r\n\r\n')
        conn.sendall(b"{}")
        assert statuses(read_all(conn, 0.3)) == [401]


def test_an_http10_request_with_a_transfer_encoding_closes_the_connection(edge: Edge, key: SigningKey) -> None:
    """HTTP/1.0 has no transfer coding: its framing is doubtful (a proxy may read no body where
    httptools reads a chunked one), so what follows is not read as the next request (RFC 9112
    §6.1: the connection is closed after the answer), even when asked to keep it alive."""
    chunked = (b"POST /verify HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n0\r\n\r\n")
    answer = edge.talk(chunked + get("/verify", cookie(key)))
    assert statuses(answer) == [401] and b"connection: close" in answer and answer.endswith(b"<closed>")


def test_requests_read_behind_a_closing_answer_are_not_decided(edge: Edge, fake_core: FakeCore, key: SigningKey) -> None:
    """A connection handed back (``retire``: its next answer closes it), a burst pipelined on it:
    the requests read behind that answer, in the same read, get none, so none calls the core."""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as conn:
        edge.on_each(Connection.retire)
        time.sleep(0.05)
        conn.sendall(get("/verify", cookie(key)) + get("/verify?checkDatabase=true", cookie(key)) * 3)
        answer = read_all(conn, 0.3)
    assert statuses(answer) == [200] and answer.endswith(b"<closed>")
    deadline = time.monotonic() + 0.3  # a call on the core pool comes soon after, if it comes
    while not fake_core.count("/recipe/session/verify") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_core.count("/recipe/session/verify") == 0


def test_a_burst_read_at_once_is_held_to_the_core_pool_bound(edge: Edge, fake_core: FakeCore, key: SigningKey) -> None:
    """40 requests that need a slow core, read in one loop iteration: 2 call it and 4 wait for the
    pool (core_concurrency=2, core_queue=4); the other 34 get 503 at once. (The bound once counted
    a request only when its task first ran: a burst all queued for the core.)"""
    fake_core.verify_seconds = 1.0
    request = get("/verify?checkDatabase=true", cookie(key))
    conns = [socket.create_connection(("127.0.0.1", edge.port)) for _ in range(40)]
    time.sleep(0.2)
    for conn in conns:
        conn.sendall(request)
    answers = [statuses(read_all(conn, 0.5)) for conn in conns]
    answers = [got or statuses(read_all(conn, 5.0)) for got, conn in zip(answers, conns, strict=True)]
    for conn in conns:
        conn.close()
    assert sorted(got[0] for got in answers) == [200] * 6 + [503] * 34
    assert fake_core.count("/recipe/session/verify") == 6
