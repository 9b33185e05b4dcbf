"""Requests read before, byte for byte: a built-in server worker's shortcut for repeats.

A proxy asks again with the same bytes: a browser's burst for one page, an API polled, each from the
same nginx or Traefik. When one whole read of an idle connection is byte-identical to a ``/verify``
request from the same peer address that the decision cache answered before, it is that request: the
same bytes from the same place parse the same way (httptools starts each request afresh). So it is
not parsed again: its request, as parsed then, is handed to the decision cache again, which replays
the answer only while it may (exp, policy reload, ``decision_cache_seconds``), else it is decided as
ever. A repeat saves the parse, the request's assembly and the cache key's digest: half of a
remembered token's cost in-process, a third of a worker's CPU per request behind nginx.

Only a read that was one whole request, answered by a replay, is learned (its answer may close
the connection: a proxy with no upstream keep-alive asks each time on a new one), and only until that
answer's end when it was learned: the request (its cookies and all) is forgotten at the token's
exp or the end of ``decision_cache_seconds`` (earlier, if a policy reload or the cache's bound
ends the answer first, only the replay stops), within a second (:meth:`Repeats.prune`, on the
worker's tick). Not learned: a request longer than :data:`LONGEST`, and one whose bytes cannot come
again (an ``X-Request-Id`` or trace context of its own) or whose answer is more than the kept one
(``Expect: 100-continue``). At most :data:`SIZE` are kept, the oldest forgotten first. One worker's
event loop reads and writes them: no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

from .asgi import Key
from .decision_cache import RAW_NOT_IN_KEY

#: Requests remembered per worker, and the longest remembered (a nginx subrequest is 0.5-2 KB).
SIZE = 1024
LONGEST = 4096
#: Headers that make a request's bytes unlike any other's, or its answer more than the kept one.
_UNREPEATED = RAW_NOT_IN_KEY | {b"expect"}


class Repeat(NamedTuple):
    """A request as parsed (its scope without the connection's own ``client`` and ``server``)."""

    scope: dict[str, Any]
    keep_alive: bool
    key: Key
    until: float  # by the worker's clock: when its kept answer ends


class Repeats:
    """The requests a worker's decision cache replayed, by peer address and bytes."""

    def __init__(self, size: int = SIZE, longest: int = LONGEST) -> None:
        self._size = size
        self._longest = longest
        self._known: OrderedDict[tuple[str, bytes], Repeat] = OrderedDict()

    def get(self, peer: str, data: bytes, now: float) -> Repeat | None:
        """The request that ``data`` from ``peer`` is, if it was learned and its answer has not ended."""
        repeat = self._known.get((peer, data))
        if repeat is not None and repeat.until <= now:
            del self._known[(peer, data)]
            return None
        return repeat

    def learn(self, peer: str, data: bytes, scope: dict[str, Any], keep_alive: bool, key: Key,
              until: float) -> None:
        """``data`` from ``peer`` is the request of ``scope``, parsed from exactly these bytes, whose
        kept answer ends at ``until``."""
        if len(data) > self._longest or not _UNREPEATED.isdisjoint(name for name, _ in scope["headers"]):
            return
        known, where = self._known, (peer, data)
        if where not in known and len(known) >= self._size:
            known.popitem(last=False)
        # its headers a tuple: a repeat hands the same ones over each time
        known[where] = Repeat({**scope, "headers": tuple(scope["headers"])}, keep_alive, key, until)

    def prune(self, now: float) -> None:
        """Forget the requests whose kept answer has ended."""
        for where in [where for where, repeat in self._known.items() if repeat.until <= now]:
            del self._known[where]
