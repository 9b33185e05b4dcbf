"""Where a request may wait on the network: the line between local verification and core calls.

Under the built-in server and granian (:mod:`forward_auth.asgi`) a request is first decided on the worker's event loop,
where nothing may wait: verifying a token with known keys needs no I/O. Code about to wait on
the core (a request, or the lock of a JWKS fetch in flight) calls :func:`may_block` first. On the
loop that raises :class:`WouldBlock` before anything is sent, and the request is decided again
on a thread of the bounded core pool; when that pool's queue is full it raises
:class:`~forward_auth.errors.CoreUnavailable` (503 ``core-busy``) instead. Everywhere else
(gunicorn's threads, the pool itself, the CLI) it does nothing.
"""

from __future__ import annotations

import threading

from .errors import CoreUnavailable

INLINE = "inline"  # on the event loop: hand the request to the core pool
REFUSE = "refuse"  # the core pool is full: answer 503 without waiting

_mode = threading.local()


class WouldBlock(BaseException):
    """A request on the event loop needs the core: decide it again on the core pool.

    A BaseException, so that no ``except Exception`` on the way (Falcon's error handlers)
    turns it into an answer."""


def may_block() -> None:
    """Say that the caller is about to wait on the network."""
    mode = getattr(_mode, "value", None)
    if mode == INLINE:
        raise WouldBlock
    if mode == REFUSE:
        raise CoreUnavailable("every core call slot is taken and the queue is full", reason="core-busy")


def will_block() -> None:
    """Say early that the caller will wait on the network (before its counters): on the event
    loop that raises :class:`WouldBlock` now. With the pool full it does nothing, so that a bad
    token is still refused as such before the core call answers 503."""
    if getattr(_mode, "value", None) == INLINE:
        raise WouldBlock


class no_waiting:  # noqa: N801 (used as a context manager, like a function)
    """``with no_waiting(INLINE):`` marks this thread for the block; the mode before is restored."""

    def __init__(self, mode: str) -> None:
        self._mode = mode

    def __enter__(self) -> None:
        self._before = getattr(_mode, "value", None)
        _mode.value = self._mode

    def __exit__(self, *exc: object) -> None:
        _mode.value = self._before
