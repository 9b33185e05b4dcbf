"""The worker of the built-in server (``server: builtin``, the default): a gunicorn worker class
that serves its share of gunicorn's listening sockets on one uvloop event loop, each connection a
:class:`~forward_auth.connection.Connection`.

gunicorn's master does what it does for every worker class: it binds (TCP or a unix socket),
forks, respawns a dead worker, and stops the workers on SIGTERM. Each worker accepts one
connection per wake-up; one holding more connections than a sibling (:class:`Shares`) leaves a new
one to it first, for at most two ticks of its millisecond timers (then it takes every one queued,
whatever the sibling does), or until one of its own closes and it holds no more than the sibling,
so a burst of new keep-alive connections (nginx opening its upstream pool, or wrk) is spread
evenly, not taken by whichever worker is awake, and a client that opens a connection per request
(nginx with no upstream ``keepalive``, ingress-nginx without ``auth-keepalive``) is not kept
waiting by a worker that has nothing left to answer; a worker holding more than its share hands
some back (``connection: close`` on their next answer). Once a second it tells the master it is
alive, renews its count and the ``Date`` header, and closes connections whose headers are late or
that have been idle too long. SIGTERM (from the master) stops it gracefully: it accepts no more,
closes its idle connections, lets every request in hand be answered (each with ``connection:
close``) for up to ``graceful_timeout``, then exits.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import uvloop
from gunicorn.workers.base import Worker as BaseWorker

from .asgi import ASGIApp
from .connection import Clock, Connection, Limits
from .repeats import Repeats

log = logging.getLogger("forward_auth")

#: How long a client may take to send a request's headers, from its first byte.
HEADER_SECONDS = 30.0
#: A turn: how long a worker holding more connections than a sibling leaves a new one to it (one
#: tick of the loop's millisecond timers: about a millisecond).
DEFER_SECONDS = 0.001
#: Turns in a row a queued connection is left to the others for, at most; then every connection
#: queued is taken at once, whatever they do (stopped, busy, hung). One is too few for a sibling
#: that this machine takes more than a millisecond to wake.
TURNS = 2
#: A turn that ended longer ago than this was followed by no wake-up: the others took its connection.
TURN_GAP = 0.005
#: A worker whose count was not renewed for this long (its loop missed about three ticks: stopped,
#: or hung until the master kills it) is left out: none leaves connections or hands them back to it.
STALE_SECONDS = 3.0


class Shares:
    """How many connections each worker holds, in memory the master shares with the workers it
    forks: one slot per worker, claimed by the master before the fork (gunicorn's ``pre_fork``)
    and freed when the worker exits (``child_exit``); -1 until the worker first listens and once it
    is stopping, so no sibling leaves or hands connections back for it to take. Each count is
    renewed about once a second (the worker's tick); one older than :data:`STALE_SECONDS` is
    left out the same way. ``clock`` is the system's monotonic clock, which every process reads alike."""

    def __init__(self, slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._counts = multiprocessing.RawArray("i", [-1] * slots)
        self._renewed = multiprocessing.RawArray("d", [0.0] * slots)
        self._clock = clock

    def claim(self, taken: Iterable[int | None]) -> int | None:
        """A free slot for a worker about to be forked (None when all are taken: it then accepts freely)."""
        free = sorted(set(range(len(self._counts))) - set(taken))
        return free[0] if free else None

    def release(self, slot: int | None) -> None:
        if slot is not None:
            self._counts[slot] = -1

    def hold(self, slot: int | None, count: int) -> None:
        if slot is not None:
            self._counts[slot] = count
            self._renewed[slot] = self._clock()

    def _fewest(self, slot: int | None) -> int | None:
        """The fewest connections another live worker holds (None: no other, or no slot)."""
        if slot is None:
            return None
        since = self._clock() - STALE_SECONDS
        others = [held for index, held in enumerate(self._counts)
                  if index != slot and held >= 0 and self._renewed[index] >= since]
        return min(others) if others else None

    def yields(self, slot: int | None, count: int) -> bool:
        """Whether a worker holding ``count`` connections should leave the next one to another."""
        fewest = self._fewest(slot)
        return fewest is not None and fewest < count

    def surplus(self, slot: int | None, count: int) -> int:
        """How many of its ``count`` connections a worker should hand back: half of what it holds
        beyond the least busy other worker and one (a worker that booted late, or was respawned,
        then gets its share of long-lived keep-alive connections too)."""
        fewest = self._fewest(slot)
        return 0 if fewest is None else max(0, (count - fewest - 1) // 2)


class Worker(BaseWorker):  # type: ignore[misc]
    """A gunicorn worker serving an :class:`~forward_auth.asgi.ASGIApp` (the one ``load`` builds)."""

    def run(self) -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(loop))
        finally:
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        app: ASGIApp = self.wsgi
        cfg = self.cfg
        limits = Limits(cfg.limit_request_line or 1 << 20, cfg.limit_request_fields or 1 << 20,
                        cfg.limit_request_field_size or 1 << 20, HEADER_SECONDS, float(cfg.keepalive or 5))
        clock, repeats = Clock(loop.time()), Repeats()
        connections: set[Connection] = set()
        listeners = [listener.sock for listener in self.sockets]
        accepting = False
        stopping = loop.create_future()
        shares: Shares = self.app.shares
        slot: int | None = getattr(self, "slot", None)
        turn: asyncio.TimerHandle | None = None  # a turn left to the others, while it lasts
        turns = 0  # turns in a row left to them with no connection taken between
        turn_ended = 0.0  # when the last one ended, by the loop's clock

        def listen(on: bool) -> None:
            nonlocal accepting
            if on == accepting:
                return
            accepting = on
            for sock in listeners:
                if on:
                    loop.add_reader(sock.fileno(), accept, sock)
                else:
                    loop.remove_reader(sock.fileno())

        held = 0  # connections accepted and not yet closed

        def hold(change: int) -> None:
            nonlocal held
            held += change
            shares.hold(slot, -1 if stopping.done() else held)  # a stopping worker takes no turn
            if change < 0:
                if turn is not None and not shares.yields(slot, held):  # no more than another holds now
                    turn.cancel()
                    turn_over()
                else:
                    resume()

        def closed(connection: Connection) -> None:
            connections.discard(connection)
            hold(-1)

        def connection() -> Connection:
            made = Connection(app, limits, clock, repeats, closed)
            connections.add(made)
            return made

        def failed(task: asyncio.Task[Any]) -> None:  # reset before it was made: never held by a Connection
            if task.cancelled() or task.exception() is not None:
                hold(-1)

        def resume() -> None:
            if turn is None and not stopping.done() and held < cfg.worker_connections:
                listen(True)

        def accept(sock: socket.socket) -> None:
            nonlocal turns
            if stopping.done():
                return
            if shares.yields(slot, held):  # another worker holds fewer: its turn first
                if loop.time() - turn_ended > TURN_GAP:  # the connection of the last turn was taken
                    turns = 0
                if turns < TURNS:
                    start_turn()
                    return
                turns = 0  # its turns ran out: every connection queued is taken now
                for each in listeners:
                    while held < cfg.worker_connections:
                        more = take(each)
                        if more is None:
                            return  # out of descriptors: listening resumes at the next tick
                        if not more:
                            break
                return
            turns = 0
            take(sock)

        def start_turn() -> None:
            nonlocal turn, turns
            turns += 1
            listen(False)
            turn = loop.call_later(DEFER_SECONDS, turn_over)

        def turn_over() -> None:
            nonlocal turn, turn_ended
            turn, turn_ended = None, loop.time()
            resume()

        def take(sock: socket.socket) -> bool | None:
            """Accept one connection; whether to try for another (False: none was queued; None:
            accepting failed)."""
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                return False  # none queued (another worker took it)
            except (InterruptedError, ConnectionAbortedError):
                return True  # reset while queued: the next may be there
            except OSError as exc:  # out of descriptors: accept again at the next tick
                log.warning("accepting a connection failed: %s", exc)
                listen(False)
                return None
            conn.setblocking(False)
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hold(+1)
            if held >= cfg.worker_connections:
                listen(False)
            loop.create_task(loop.connect_accepted_socket(connection, conn)).add_done_callback(failed)  # type: ignore[arg-type]
            return True

        def stop() -> None:
            if not stopping.done():
                stopping.set_result(None)

        def tick() -> None:
            now = loop.time()
            clock.tick(now)
            self.notify()
            hold(0)  # renewed: a sibling whose count is not is left out (Shares)
            if not self.alive or self.ppid != os.getppid():
                stop()
            for each in list(connections):
                each.expired(now)
            repeats.prune(now)
            for each in list(connections)[:shares.surplus(slot, held)]:
                each.retire()
            resume()
            loop.call_later(1.0, tick)

        for sock in listeners:
            sock.setblocking(False)
        loop.add_signal_handler(signal.SIGTERM, stop)
        shares.hold(slot, 0)
        listen(True)
        tick()
        await stopping
        listen(False)
        shares.hold(slot, -1)
        for each in list(connections):
            each.stop()
        deadline = loop.time() + cfg.graceful_timeout
        while connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for each in list(connections):
            each.abort()

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the master's signal: a worker never stops on it

