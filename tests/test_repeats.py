"""Requests read before, byte for byte (forward_auth/repeats.py): a connection of the built-in
server (a real one, its transport a fake that records what is written) answers a repeat of a
replayed ``/verify`` request without parsing it, and only then."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from conftest import CORE, FakeCore, v5

from forward_auth import settings as settings_module
from forward_auth.app import build_gate, create_service
from forward_auth.asgi import ASGIApp
from forward_auth.connection import Clock, Connection, Limits
from forward_auth.devcore.minter import SigningKey
from forward_auth.repeats import Repeats


class Transport:
    """What a connection wrote, and whether it closed; its peer is ``peer``."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return {"peername": (self.peer, 40000), "sockname": ("127.0.0.1", 8080)}.get(name)

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Parser:
    """httptools' parser, its reads counted."""

    def __init__(self, parser: Any) -> None:
        self._parser = parser
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += 1
        self._parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class Server:
    """One worker's app, clock and repeats; :meth:`connect` opens a connection from ``peer``."""

    def __init__(self, fake_core: FakeCore) -> None:
        settings = settings_module.load({"core_url": CORE}, environ={})
        gate = build_gate(settings, transport=fake_core)
        gate.keys.keys()
        service = create_service(settings, gate)
        self.app = ASGIApp(service, verify=service.verify, core_concurrency=1, core_queue=1)
        self.clock, self.repeats = Clock(time.monotonic()), Repeats()

    def connect(self, peer: str = "127.0.0.1") -> tuple[Connection, Transport, Parser]:
        connection = Connection(self.app, Limits(), self.clock, self.repeats, lambda _: None)
        transport = Transport(peer)
        connection.connection_made(transport)  # type: ignore[arg-type]
        parser = connection._parser = Parser(connection._parser)  # type: ignore[assignment]
        return connection, transport, parser


@pytest.fixture
def server(fake_core: FakeCore) -> Server:
    return Server(fake_core)


def request(token: str, *headers: str) -> bytes:
    return (f"GET /verify HTTP/1.1\r\nHost: gate\r\nX-Original-URI: /app/\r\nCookie: sAccessToken={token}\r\n"
            + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def answers(written: bytes) -> list[bytes]:
    """Each answer written (headers only: no /verify answer here has a body)."""
    return [part + b"\r\n\r\n" for part in written.split(b"\r\n\r\n") if part]


def without_ids(answer: bytes) -> bytes:
    return re.sub(rb"x-request-id: \w+\r\n", b"", answer)


def test_a_replayed_request_read_again_is_answered_without_being_parsed(server: Server, key: SigningKey) -> None:
    connection, transport, parser = server.connect()
    same = request(v5(key))
    for _ in range(4):
        connection.data_received(same)
    got = answers(transport.written)
    assert len(got) == 4 and all(a.startswith(b"HTTP/1.1 200 OK\r\n") and b"x-user-id: user-1\r\n" in a for a in got)
    assert parser.fed == 2  # decided, then replayed (and learned); the third and fourth were repeats
    assert len({without_ids(a) for a in got}) == 1  # the same answer each time
    assert len({re.search(rb"x-request-id: (\w+)", a).group(1) for a in got}) == 4  # type: ignore[union-attr]
    other, other_transport, other_parser = server.connect()  # another connection from the same peer
    other.data_received(same)
    assert other_parser.fed == 0 and without_ids(answers(other_transport.written)[0]) == without_ids(got[0])


@pytest.mark.parametrize(("reads", "requests"), [
    pytest.param(lambda r: [r + r], 2, id="two requests in one read"),
    pytest.param(lambda r: [r[:30], r[30:]], 1, id="one request in two reads"),
    pytest.param(lambda r: [r + r[:10], r[10:]], 2, id="a request and the start of the next"),
])
def test_only_a_read_that_is_one_whole_request_is_learned(server: Server, key: SigningKey, reads: Any,
                                                          requests: int) -> None:
    connection, transport, parser = server.connect()
    same = request(v5(key))
    for _ in range(3):
        for data in reads(same):
            connection.data_received(data)
    assert len(answers(transport.written)) == 3 * requests
    assert parser.fed == 3 * len(reads(same))  # every read parsed
    assert server.repeats.get("127.0.0.1", same, server.clock.now) is None


def test_a_request_answered_as_its_connection_retires_is_learned_as_sent(server: Server, key: SigningKey) -> None:
    """A worker handing connections back closes one after its next answer; the request itself asked
    to be kept alive, so its repeat on the client's next connection is answered and kept open."""
    same = request(v5(key))
    first, _, _ = server.connect()
    first.data_received(same)  # decided
    retiring, retiring_transport, _ = server.connect()
    retiring.retire()
    retiring.data_received(same)  # replayed, learned, then closed
    assert retiring_transport.closed
    fresh, fresh_transport, fresh_parser = server.connect()
    fresh.data_received(same)
    assert fresh_parser.fed == 0 and not fresh_transport.closed
    got = answers(fresh_transport.written)
    assert len(got) == 1 and got[0].startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" not in got[0]


def test_a_request_that_closes_its_connection_is_learned_and_its_repeat_closes_too(server: Server,
                                                                                 key: SigningKey) -> None:
    """A connection per request (nginx with no upstream keepalive sends each with ``Connection:
    close``): decided on the first, replayed and learned on the second, a repeat from the third on."""
    closing = request(v5(key), "Connection: close")
    fed = []
    for _ in range(4):
        connection, transport, parser = server.connect()
        connection.data_received(closing)
        fed.append(parser.fed)
        assert transport.closed
        got = answers(transport.written)
        assert len(got) == 1 and got[0].startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close\r\n" in got[0]
    assert fed == [1, 1, 0, 0]
    assert server.repeats.get("127.0.0.1", closing, server.clock.now) is not None


def test_a_repeat_from_another_peer_is_parsed(server: Server, key: SigningKey) -> None:
    """The peer decides whether its forwarded headers are believed: what one peer's bytes are is
    not another's."""
    same = request(v5(key))
    connection, _, _ = server.connect("127.0.0.1")
    connection.data_received(same)
    connection.data_received(same)
    stranger, transport, parser = server.connect("192.0.2.7")
    stranger.data_received(same)
    stranger.data_received(same)
    assert parser.fed == 2 and len(answers(transport.written)) == 2


def test_bytes_of_a_repeat_read_while_a_request_is_under_way_are_part_of_it(server: Server, key: SigningKey) -> None:
    connection, transport, parser = server.connect()
    same = request(v5(key))
    connection.data_received(same)
    connection.data_received(same)  # learned
    connection.data_received(b"GET /verify HTTP/1.1\r\nX-Junk: ")
    connection.data_received(same)  # the rest of that request's head: one request, parsed
    assert parser.fed == 4
    assert len(answers(transport.written)) == 3


def test_a_repeat_is_answered_only_while_its_answer_may_be_replayed(server: Server, key: SigningKey) -> None:
    """A repeat goes to the decision cache again: past the token's exp, before the worker's clock
    has forgotten the request, it is decided from the request as parsed before (a 401 for the
    expired token); once the clock has moved on, the request is forgotten and parsed again."""
    connection, transport, parser = server.connect()
    exp = int(time.time()) + 2
    same = request(v5(key, exp=exp, iat=exp - 3600))
    connection.data_received(same)
    connection.data_received(same)
    learned = server.repeats.get("127.0.0.1", same, server.clock.now)
    assert learned is not None and learned.until <= server.clock.now + (exp - time.time()) + 0.01  # never past exp
    time.sleep(max(0.0, exp - time.time() + 0.1))
    connection.data_received(same)  # the clock has not ticked since: a repeat, decided again
    assert parser.fed == 2
    server.clock.tick(time.monotonic())
    server.repeats.prune(server.clock.now)  # the worker's tick: the request (its cookie) is forgotten
    assert server.repeats.get("127.0.0.1", same, server.clock.now) is None
    connection.data_received(same)
    assert parser.fed == 3
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", transport.written) == [b"200", b"200", b"401", b"401"]
    assert transport.written.endswith(b'{"message":"try refresh token"}')


@pytest.mark.parametrize("header", ["X-Request-Id: r-1", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                                    "Expect: 100-continue"])
def test_a_request_whose_bytes_cannot_come_again_or_that_asks_for_more_is_not_learned(
        server: Server, key: SigningKey, header: str) -> None:
    """A request id or trace context of its own (each request's differs: learning them fills the
    memory for nothing), or an interim answer to send first."""
    connection, transport, parser = server.connect()
    same = request(v5(key), header)
    for _ in range(3):
        connection.data_received(same)
    assert parser.fed == 3
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", transport.written) == (
        [b"100", b"200"] * 3 if header.startswith("Expect") else [b"200"] * 3)


def test_repeats_forget_the_oldest_and_the_ended_and_never_learn_a_long_request() -> None:
    repeats = Repeats(size=2, longest=10)
    scope: dict[str, Any] = {"headers": [(b"host", b"x")]}
    for data in (b"a", b"b", b"a", b"c"):
        repeats.learn("p", data, scope, True, (b"digest", None), until=10.0)
    assert [repeats.get("p", d, 5.0) is not None for d in (b"a", b"b", b"c")] == [False, True, True]
    repeats.learn("p", b"x" * 11, scope, True, (b"digest", None), until=10.0)
    assert repeats.get("p", b"x" * 11, 5.0) is None
    assert repeats.get("p", b"b", 10.0) is None  # ended
    repeats.prune(10.0)
    assert repeats.get("p", b"c", 0.0) is None
