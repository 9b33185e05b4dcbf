"""The one HTTP seam to the SuperTokens core: pooled urllib3, no redirects, short timeouts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import urllib3

from .blocking import may_block


class TransportError(Exception):
    """The core could not be reached, or did not answer in time."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, lower-cased headers, body bytes."""

    status: int
    headers: dict[str, str]
    data: bytes

    def json(self) -> Any:
        return json.loads(self.data.decode("utf-8"))


class Transport(Protocol):
    """Sends one HTTP request; raises :class:`TransportError` when nothing came back."""

    def request(
        self, method: str, url: str, *, headers: dict[str, str], body: bytes | None = None, timeout: float
    ) -> Reply: ...


class PooledTransport:
    """urllib3 connection pools (keep-alive to the core), created lazily in each worker."""

    def __init__(self, *, max_size: int = 16, max_body: int = 1 << 20) -> None:
        self._pool = urllib3.PoolManager(maxsize=max_size, block=False, retries=False)
        self._max_body = max_body

    def request(
        self, method: str, url: str, *, headers: dict[str, str], body: bytes | None = None, timeout: float
    ) -> Reply:
        may_block()  # the edges ask first (before their spans and counters); this is the backstop
        try:
            response = self._pool.request(
                method, url, headers=headers, body=body, timeout=urllib3.Timeout(total=timeout),
                redirect=False, preload_content=False,
            )
            try:
                data = response.read(self._max_body + 1)
            finally:
                response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            raise TransportError(f"{method} {url}: {exc.__class__.__name__}") from None
        if len(data) > self._max_body:
            raise TransportError(f"{method} {url}: answer larger than {self._max_body} bytes")
        return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, data)
