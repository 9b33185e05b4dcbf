"""``X-Session-Data``: the core's session data for a verified session, remembered per handle.

The seeds' ``getSessionDataFromDatabase`` as a header: ``GET /recipe/session`` for the session's
handle, the ``userDataInDatabase`` it answers as base64url JSON (compact, keys sorted, no padding).
One core round trip per handle per ``session_data_cache_seconds``, never kept past the token's
``exp``, at most :data:`SIZE` handles a worker. A value over the claim-header cap is remembered as
too large (``None``: named in ``X-Forward-Auth-Omitted``). A session the core no longer knows is
UNAUTHORISED, clearing the tokens, as the SDK's ``get_session_data_from_database`` raises; a core
that cannot answer is the core client's 503 (or 502), never a missing header.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import cachetools

from . import metrics, verifier
from .core import CoreClient
from .errors import Unauthorised
from .headers import MAX_HEADER_VALUE, base64url_json

#: Handles whose data a worker remembers (each value at most the header cap, 4 KB).
SIZE = 4096
HEADER = "X-Session-Data"
_HIT = metrics.CACHE.labels(cache="session-data", result="hit")
_MISS = metrics.CACHE.labels(cache="session-data", result="miss")


class SessionData:
    """The header value of a session's data, from the core or from memory."""

    def __init__(self, core: CoreClient, seconds: float, *, clock: Callable[[], float] = time.time) -> None:
        self._core = core
        self._seconds = seconds
        # Each entry lives `seconds`, never past the exp of the token that fetched it (its "until").
        self._cache: cachetools.TLRUCache[str, tuple[str | None, float]] = cachetools.TLRUCache(
            maxsize=SIZE, ttu=lambda _handle, entry, now: min(now + self._seconds, entry[1]), timer=clock)
        self._lock = threading.Lock()

    def header_value(self, session: verifier.Session) -> str | None:
        """``X-Session-Data`` for this session (None: too large); may wait on the core."""
        with self._lock:
            entry = self._cache.get(session.handle)
        if entry is not None:
            _HIT.inc()
            return entry[0]
        info = self._core.session_information(session.handle)  # says may_block() first
        _MISS.inc()
        if info is None:
            raise Unauthorised("core: the session does not exist anymore", clear_tokens=True, reason="revoked")
        value: str | None = base64url_json(info.session_data)
        if len(value) > MAX_HEADER_VALUE:
            value = None  # left out of the answer (and named): not kept at full size either
        if self._seconds > 0:
            with self._lock:
                self._cache[session.handle] = (value, session.expiry_ms / 1000)
        return value
