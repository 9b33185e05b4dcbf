"""Requests read before, byte for byte: a built-in server worker's shortcut for repeats.

A proxy asks again with the same bytes: a browser's burst for one page, an API polled, each from the
same nginx or Traefik. When one whole read of an idle connection is byte-identical to a ``/verify``
request from the same peer address that the decision cache answered before, it is that request: the
same bytes from the same place parse the same way (httptools starts each request afresh). So it is
not parsed again: its request, as parsed then, is handed to the decision cache again, which replays
the answer only while it may (exp, policy reload, ``decision_cache_seconds``), else it is decided as
ever. A repeat saves the parse, the request's assembly and the cache key's digest: about half of a
remembered token's cost behind nginx.

Only requests that a replay answered are learned (a repeat of an allowed answer the cache kept), at
most :data:`LONGEST` bytes each and :data:`SIZE` of them, the oldest forgotten first. A repeat the
decision cache no longer holds is decided from the request as parsed then, and learned again when
replayed. One worker's event loop reads and writes it: no lock.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .asgi import Key

#: Requests remembered per worker, and the longest remembered (a nginx subrequest is 0.5-2 KB).
SIZE = 1024
LONGEST = 4096


class Repeat(NamedTuple):
    """A request as parsed (its scope without the connection's own ``client`` and ``server``)."""

    scope: dict[str, Any]
    keep_alive: bool
    key: Key


class Repeats:
    """The requests a worker's decision cache replayed, by peer address and bytes."""

    def __init__(self, size: int = SIZE, longest: int = LONGEST) -> None:
        self._size = size
        self._longest = longest
        self._known: dict[tuple[str, bytes], Repeat] = {}

    def get(self, peer: str, data: bytes) -> Repeat | None:
        """The request that ``data`` from ``peer`` is, if it was learned."""
        return self._known.get((peer, data))

    def learn(self, peer: str, data: bytes, repeat: Repeat) -> None:
        """``data`` from ``peer`` is the request ``repeat``, parsed from exactly these bytes."""
        if len(data) > self._longest:
            return
        known, key = self._known, (peer, data)
        if key not in known and len(known) >= self._size:
            del known[next(iter(known))]
        known[key] = repeat
