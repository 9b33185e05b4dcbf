"""The HTTP edge against real sockets: a core that hangs, answers garbage or is not there."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from forward_auth.core import CoreClient
from forward_auth.errors import CoreError, CoreUnavailable, KeysUnavailable
from forward_auth.jwks import JwksFetcher
from forward_auth.transport import PooledTransport


def serve_raw(answer: bytes | None) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that sends ``answer`` to each connection, or never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()
    held: list[socket.socket] = []

    def loop() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)
            if answer is not None:
                conn.recv(65536)
                conn.sendall(answer)
                conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def hanging() -> Iterator[str]:
    yield from serve_raw(None)


@pytest.fixture
def garbage() -> Iterator[str]:
    yield from serve_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!")


@pytest.fixture
def not_http() -> Iterator[str]:
    yield from serve_raw(b"\x00\x01\x02 hello there\r\n\r\n")


def verify(client: CoreClient) -> object:
    return client.verify_session("t", anti_csrf_token=None, do_anti_csrf_check=False, enable_anti_csrf=False,
                                 check_database=True, token_expiry_ms=4e12)


def test_a_hanging_core_times_out_as_unavailable(hanging: str) -> None:
    start = time.monotonic()
    with pytest.raises(CoreUnavailable):
        verify(CoreClient([hanging], PooledTransport(), timeout_seconds=0.3))
    assert time.monotonic() - start < 2


def test_a_core_answering_garbage_is_a_core_error(garbage: str) -> None:
    with pytest.raises(CoreError):
        verify(CoreClient([garbage], PooledTransport()))


def test_a_peer_that_does_not_speak_http_is_unavailable(not_http: str) -> None:
    with pytest.raises(CoreUnavailable):
        verify(CoreClient([not_http], PooledTransport()))


def test_jwks_from_hanging_or_garbage_cores_is_keys_unavailable(hanging: str, garbage: str) -> None:
    with pytest.raises(KeysUnavailable, match="not JSON|Expecting value|JWKS"):
        JwksFetcher([hanging, garbage], PooledTransport(), timeout_seconds=0.3).keys()


def test_a_closed_port_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CoreUnavailable):
        verify(CoreClient([f"http://127.0.0.1:{port}"], PooledTransport()))
