"""What a proxied request carries that matters for a session: its credentials (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .cookies import ACCESS_COOKIE, LEGACY_ID_REFRESH_COOKIE, has_duplicate, parse_cookie_header

HeaderGetter = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Credentials:
    """The original request as the session check sees it."""

    method: str
    uri: str
    cookie_header: str | None = None
    authorization: str | None = None
    anti_csrf: str | None = None
    rid: str | None = None

    @property
    def cookies(self) -> dict[str, str]:
        return parse_cookie_header(self.cookie_header)

    @property
    def cookie_token(self) -> str | None:
        return self.cookies.get(ACCESS_COOKIE)

    @property
    def bearer_token(self) -> str | None:
        # Case-sensitive "Bearer " with one space, as the SDKs read it.
        if self.authorization is None or not self.authorization.startswith("Bearer "):
            return None
        return self.authorization[len("Bearer "):].strip()

    @property
    def has_duplicate_access_cookie(self) -> bool:
        return has_duplicate(self.cookie_header, ACCESS_COOKIE)

    @property
    def id_refresh_token(self) -> str | None:
        return self.cookies.get(LEGACY_ID_REFRESH_COOKIE)


def original_method(get: HeaderGetter, fallback: str) -> str:
    """The proxied request's method (Traefik/Caddy, then nginx), else the request's own."""
    for name in ("X-Forwarded-Method", "X-Original-Method"):
        value = (get(name) or "").strip()
        if value:
            return value.upper()
    return fallback.upper()


def original_uri(get: HeaderGetter, fallback: str) -> str:
    """The proxied request's path and query, else the request's own."""
    for name in ("X-Forwarded-Uri", "X-Original-URI"):
        value = (get(name) or "").strip()
        if value:
            return value
    url = (get("X-Original-URL") or "").strip()
    if url:
        split = urlsplit(url)
        return (split.path or "/") + (f"?{split.query}" if split.query else "")
    return fallback


def _untrusted(_: str) -> str | None:
    return None


def from_headers(get: HeaderGetter, *, method: str, uri: str, trusted: bool) -> Credentials:
    """Collect credentials through a case-insensitive header getter.

    The original method and URI come from the proxy's headers only when the peer is a trusted
    proxy; anybody else could forge them (say, GET to dodge the anti-CSRF check).
    """
    forwarded = get if trusted else _untrusted
    return Credentials(
        method=original_method(forwarded, method),
        uri=original_uri(forwarded, uri),
        cookie_header=get("Cookie"),
        authorization=get("Authorization"),
        anti_csrf=get("anti-csrf"),
        rid=get("rid"),
    )
