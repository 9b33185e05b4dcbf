"""Where a denied navigation is sent, and what can never become a target (pure).

A target is always a configured URL (``login_url``, ``refresh_url``, a claim's ``redirect``),
plus the original path and query in SuperTokens' ``redirectToPath`` parameter: relative,
percent-encoded, and left out when it could name another site (``//host``, a backslash, an
absolute URL). Absolute targets must be on ``allowed_redirect_hosts``, and a navigation is
redirected at all only when its own host is there too (when the list is empty: path targets
only, on whatever host the browser asked).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, unquote, urlsplit

from . import pages
from .errors import ForwardAuthError, InvalidClaims, ServiceUnavailable, TryRefreshToken, Unauthorised

if TYPE_CHECKING:
    from .policy import Rule
    from .settings import Settings

log = logging.getLogger(__name__)
PARAMETER = "redirectToPath"  # the prebuilt UI's name, read by its sign-in and email verification pages
MAX_ORIGINAL = 2048


def check_url(url: str) -> str | None:
    """``None`` when ``url`` may be configured as a target, else what is wrong with it."""
    if not (url.isascii() and url.isprintable()) or " " in url or "\\" in url:
        return "must be ASCII, with no spaces, control characters or backslashes"
    if url.startswith("/") and not url.startswith("//"):
        return "must not have a #fragment" if "#" in url else None
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        return "must be an http(s) URL or a path starting with a single /"
    if split.username is not None or split.fragment or "#" in url:
        return "must have no user:password@ and no #fragment"
    return None


def url_host(url: str) -> str | None:
    """The host of an absolute target (lower case), ``None`` for a path."""
    return None if url.startswith("/") else urlsplit(url).hostname


def original_path(uri: str) -> str | None:
    """The original path and query as a ``redirectToPath`` value, or ``None`` when a page could
    read it as another site (``//evil``, ``/\\evil``, ``/%2F/evil``, ``http://evil``)."""
    if len(uri) > MAX_ORIGINAL or not uri.startswith("/") or not uri.isprintable() or " " in uri:
        return None
    decoded = unquote(uri)
    if "\\" in decoded or decoded.startswith("//") or not decoded.isprintable():
        return None
    return uri


def target(base: str, uri: str) -> str:
    """``base`` with the original path and query appended as ``redirectToPath`` (if it is safe)."""
    path = original_path(uri)
    if path is None:
        return base
    return f"{base}{'&' if '?' in base else '?'}{PARAMETER}={quote(path, safe='')}"


class Targets(NamedTuple):
    """The URLs a navigation's denials are sent to (a rule's own, else the settings')."""

    login_url: str
    refresh_url: str | None = None
    claim_urls: tuple[tuple[str, str], ...] = ()  # (validator id, URL)


class Navigation(NamedTuple):
    """What a denied navigation needs: its targets and the original request."""

    targets: Targets
    method: str
    uri: str


class Denial(NamedTuple):
    """A navigation's answer: a redirect (``location``) or a page."""

    status: int
    location: str | None = None
    page: bytes | None = None


def denial(ex: ForwardAuthError, navigation: Navigation) -> Denial | None:
    """The redirect or page for a denied navigation; ``None``: the API answer (JSON)."""
    targets = navigation.targets
    redirect = 302 if navigation.method in ("GET", "HEAD") else 303
    if isinstance(ex, Unauthorised):
        return _redirect(redirect, targets.login_url, navigation.uri)
    if isinstance(ex, TryRefreshToken):
        return _redirect(redirect, targets.refresh_url or targets.login_url, navigation.uri)
    if isinstance(ex, InvalidClaims):
        urls = dict(targets.claim_urls)
        url = next((urls[e["id"]] for e in ex.errors if e["id"] in urls), None)
        return (url and _redirect(redirect, url, navigation.uri)) or Denial(403, page=pages.FORBIDDEN)
    if isinstance(ex, ServiceUnavailable):
        return Denial(503, page=pages.UNAVAILABLE)
    return None


def _redirect(status: int, base: str, uri: str) -> Denial | None:
    """A redirect to ``base``; ``None`` (the API answer) when the request is for ``base`` itself:
    a sign-in or refresh page behind the gate would send the browser round in circles."""
    if urlsplit(base).path == uri.partition("?")[0]:
        _warn_loop(base)
        return None
    return Denial(status, target(base, uri))


@functools.cache
def _warn_loop(base: str) -> None:
    log.warning("%s is itself behind the gate: its denials are API answers, not a redirect to itself "
                "(make that page public)", base)


def targets_for(settings: Settings, rule: Rule | None, host: str) -> Targets | None:
    """A navigation's targets, or ``None`` when it gets API answers: no ``login_url`` is set,
    or its host is not an allowed one."""
    allowed = settings.redirect_hosts
    if allowed and host not in allowed:
        return None
    login = (rule.login_url if rule else None) or settings.login_url
    if login is None or not _allowed(login, allowed):
        return None
    refresh = (rule.refresh_url if rule else None) or settings.refresh_url
    if refresh is not None and not _allowed(refresh, allowed):
        refresh = None
    claim_urls = tuple((key, url) for key, url in (rule.claim_redirects if rule else ()) if _allowed(url, allowed))
    return Targets(login, refresh, claim_urls)


def _allowed(url: str, hosts: tuple[str, ...]) -> bool:
    host = url_host(url)
    if host is None or host in hosts:
        return True
    _warn_refused(url)
    return False


@functools.cache
def _warn_refused(url: str) -> None:
    log.warning("redirect target %s is not on allowed_redirect_hosts: not used", url)
