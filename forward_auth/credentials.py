"""What a proxied request carries that matters for a session: its credentials (pure)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import NamedTuple

from .cookies import (
    ACCESS_COOKIE,
    LEGACY_ID_REFRESH_COOKIE,
    has_duplicate,
    has_duplicate_node,
    parse_cookie_header,
    parse_cookie_header_node,
)

#: A request header by its lower-case name (joined when repeated), or None.
HeaderGetter = Callable[[str], "str | None"]
log = logging.getLogger(__name__)

#: The method of a request whose proxy we do not trust: not GET, so anti-CSRF checks apply.
UNKNOWN_METHOD = "UNKNOWN"
_METHOD_HEADERS = ("x-forwarded-method", "x-original-method")
_URI_HEADERS = ("x-forwarded-uri", "x-original-uri", "x-original-url")


class Credentials(NamedTuple):
    """The original request as the session check sees it (cookies already parsed; a named
    tuple, as :class:`~forward_auth.token.AccessToken`: built on every request)."""

    method: str
    uri: str
    host: str = ""
    cookie_token: str | None = None
    duplicate_access_cookie: bool = False
    id_refresh_token: str | None = None
    authorization: str | None = None
    anti_csrf: str | None = None
    rid: str | None = None
    proxied: bool = False  # a proxy named the original method or URI (trusted or not)

    @property
    def path(self) -> str:
        """The original path, without the query string."""
        return self.uri.partition("?")[0]

    @property
    def bearer_token(self) -> str | None:
        # Case-sensitive "Bearer " with one space, as the SDKs read it.
        if self.authorization is None or not self.authorization.startswith("Bearer "):
            return None
        return self.authorization[len("Bearer "):].strip()


def _first(get: HeaderGetter, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = (get(name) or "").strip()
        if value:
            return value
    return None


@functools.cache
def _warn_untrusted() -> None:
    log.warning("a forwarded method came from a peer outside trusted_proxies: treated as unknown "
                "(anti-CSRF checks apply); add the proxy's address to trusted_proxies")


def _original_method(forwarded: str | None, fallback: str, *, trusted: bool) -> str:
    """The proxied request's method (``forwarded``: Traefik/Caddy's, then nginx's), else the request's own.

    From a peer that is not a trusted proxy a forwarded method is not believed, and not
    ignored either: the method is unknown, so the anti-CSRF check runs (fails closed when a
    proxy is missing from ``trusted_proxies``, which would otherwise turn every POST into a GET).
    """
    if forwarded is None:
        return fallback.upper()
    if not trusted:
        _warn_untrusted()
        return UNKNOWN_METHOD
    return forwarded.upper()


def _path_of(uri: str) -> str:
    """The path and query of a URI; ``X-Original-URL`` (ingress-nginx) carries the whole URL."""
    scheme, sep, rest = uri.partition("://")
    if sep and "/" not in scheme:
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return uri


def _hostname(host: str) -> str:
    """A Host header without its port (``[::1]:8080`` -> ``[::1]``), lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.partition(":")[0].rstrip(".")  # "example.com." is example.com


def _node_cookies(header: str | None) -> tuple[str | None, bool, str | None]:
    """The access token, its duplicate flag and ``sIdRefreshToken`` as supertokens-node reads them:
    a ``j:`` value that is no string is no token (the SDK ignores it), yet still a legacy cookie."""
    cookies = parse_cookie_header_node(header)
    token, legacy = cookies.get(ACCESS_COOKIE), cookies.get(LEGACY_ID_REFRESH_COOKIE)
    return (token if isinstance(token, str) else None, has_duplicate_node(header, ACCESS_COOKIE),
            None if legacy is None else str(legacy))


def from_headers(get: HeaderGetter, *, method: str, uri: str, trusted: bool, sdk_profile: str = "python") -> Credentials:
    """Collect credentials through a case-insensitive header getter, the cookies read as
    ``sdk_profile``'s SDK reads them."""
    cookie_header = get("cookie")
    if sdk_profile == "node":
        token, duplicate, legacy = _node_cookies(cookie_header)
    else:
        cookies = parse_cookie_header(cookie_header)
        token, duplicate = cookies.get(ACCESS_COOKIE), has_duplicate(cookie_header, ACCESS_COOKIE)
        legacy = cookies.get(LEGACY_ID_REFRESH_COOKIE)
    forwarded_method, forwarded_uri = _first(get, _METHOD_HEADERS), _first(get, _URI_HEADERS)
    return Credentials(
        method=_original_method(forwarded_method, method, trusted=trusted),
        uri=_path_of((forwarded_uri if trusted else None) or uri),
        host=_hostname((_first(get, ("x-forwarded-host",)) if trusted else None) or get("host") or ""),
        cookie_token=token,
        duplicate_access_cookie=duplicate,
        id_refresh_token=legacy,
        authorization=get("authorization"),
        anti_csrf=get("anti-csrf"),
        rid=get("rid"),
        # A proxy reads only an allowed answer's headers, and nginx keeps the upstream connection
        # only after an empty one.
        proxied=forwarded_method is not None or forwarded_uri is not None,
    )


def without_forwarding(get: HeaderGetter) -> HeaderGetter:
    """A header getter that hides the forwarded-request headers."""
    def getter(name: str) -> str | None:
        return None if name.startswith(("x-forwarded-", "x-original-")) else get(name)
    return getter
