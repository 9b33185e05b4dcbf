"""The hostile conditions of ``bench/edge_bench.py``: slow clients that never finish their headers, and
requests kept waiting on a hung core (``tests/proxy_harness.HungCore``, the tests' own)."""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from processes import HOST, timed_get

#: What a slow client sends at once: a request line and one header, never the blank line that ends them.
SLOW_START = b"GET /verify HTTP/1.1\r\nHost: x\r\n"
#: Then one byte of this at a time, over and over: header lines that never end the request.
SLOW_DRIP = b"X-Drip: 1\r\n"


# ----------------------------------------------------------------------------- slow clients


@dataclass
class SlowClients:
    """``connections`` slow clients held open while ``probes`` valid requests were made beside them."""

    connections: int
    probes: list[tuple[int, float]] = field(default_factory=list)   # (status, seconds) per valid request
    still_open: int = 0               # slow connections the server had not closed when the probes were done

    def answered_within(self, seconds: float) -> int:
        """Valid requests answered 200 within ``seconds``."""
        return sum(status == 200 and took <= seconds for status, took in self.probes)

    def as_json(self) -> dict[str, object]:
        return {"connections": self.connections, "still_open": self.still_open,
                "probes": [{"status": status, "ms": took * 1000} for status, took in self.probes]}


class Dripper:
    """Slow clients: connections that sent ``SLOW_START`` and then one byte of ``SLOW_DRIP`` every
    ``interval`` seconds (a thread), never finishing their headers; a connection the server closed is dropped."""

    def __init__(self, port: int, count: int, interval: float) -> None:
        self.conns = [socket.create_connection((HOST, port), timeout=5) for _ in range(count)]
        for conn in self.conns:
            conn.settimeout(None)  # blocking: a MSG_DONTWAIT peek then says at once whether anything came
            conn.sendall(SLOW_START)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _drip(self) -> None:
        n = 0
        while not self._stop.wait(self._interval):
            i, n = n % len(SLOW_DRIP), n + 1
            byte = SLOW_DRIP[i:i + 1]
            for conn in list(self.conns):
                try:
                    conn.send(byte)
                except OSError:  # the server closed it (a header-read timeout): it drips no more
                    self.conns.remove(conn)

    def still_open(self) -> int:
        """Connections the server has neither closed nor answered (nothing to read, no EOF)."""
        count = 0
        for conn in list(self.conns):
            try:
                conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                count += 1
            except OSError:
                pass
        return count

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.conns:
            conn.close()


def slow_clients(port: int, url: str, headers: dict[str, str], connections: int = 200, probes: int = 4,
                 gap: float = 0.25) -> SlowClients:
    """``connections`` slow clients to ``port``; beside them, ``probes`` GETs of ``url`` on fresh connections,
    ``gap`` seconds apart (the first after the slow ones have dripped for a while); then the slow ones closed."""
    done = SlowClients(connections)
    dripper = Dripper(port, connections, interval=0.1)
    try:
        time.sleep(0.5)
        for _ in range(probes):
            done.probes.append(timed_get(url, headers, timeout=5.0))
            time.sleep(gap)
        done.still_open = dripper.still_open()
    finally:
        dripper.close()
    return done


# ----------------------------------------------------------------------------- requests kept waiting on a hung core


@dataclass
class Waiting:
    """Requests kept waiting: ``count`` threads, each sending its next as soon as the last is answered."""

    count: int
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)  # the answers that came
    held: int = 0                     # core requests held by the hung core when the measuring began

    def as_json(self) -> dict[str, object]:
        return {"waiting": self.count, "held_by_core": self.held,
                "answers": {str(status): n for status, n in sorted(self.statuses.items())}}


@contextmanager
def kept_waiting(url: str, headers: dict[str, str], count: int) -> Iterator[Waiting]:
    """``count`` GETs of ``url`` always in flight (each answer, a 503 when the core call times out, is counted
    and the request sent again) until the block ends; threads still waiting then end with the server."""
    waiting, stop, lock = Waiting(count), threading.Event(), threading.Lock()
    answers: collections.Counter[int] = collections.Counter()

    def loop() -> None:
        while not stop.is_set():
            status, _ = timed_get(url, headers, timeout=60.0)
            with lock:
                answers[status] += 1

    for _ in range(count):
        threading.Thread(target=loop, daemon=True).start()
    try:
        yield waiting
    finally:
        stop.set()
        with lock:
            waiting.statuses = collections.Counter(answers)
