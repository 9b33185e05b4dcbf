"""Reading the ``Cookie`` request header and writing the SuperTokens response headers.

Reading mirrors what each SDK sees: supertokens-python under FastAPI (Starlette's cookie parser:
last value wins, then URL-unquoting; the SDK's own duplicate detector) or supertokens-node under
express (the ``cookie`` 0.7 parser: first value wins, ``j:`` JSON values decoded; its own detector).
Writing produces the same ``Set-Cookie`` / ``front-token`` headers the SDK sends when it
attaches a new access token or clears a session.
"""

from __future__ import annotations

import base64
import http.cookies
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, unquote

from . import javascript
from .settings import Settings

ACCESS_COOKIE = "sAccessToken"
REFRESH_COOKIE = "sRefreshToken"
LEGACY_ID_REFRESH_COOKIE = "sIdRefreshToken"
ONE_YEAR_MS = 31_536_000_000


def parse_cookie_header(header: str | None) -> dict[str, str]:
    """Cookie name -> value, the last duplicate winning, values URL-unquoted."""
    cookies: dict[str, str] = {}
    for chunk in (header or "").split(";"):
        key, sep, value = chunk.partition("=")
        if not sep:
            key, value = "", chunk
        key, value = key.strip(), value.strip()
        if key or value:
            cookies[key] = http.cookies._unquote(value)  # type: ignore[attr-defined]
    return {name: unquote(value) for name, value in cookies.items()}


def has_duplicate(header: str | None, name: str) -> bool:
    """True when ``name`` appears twice among ``a=b`` pairs holding exactly one ``=``."""
    if header is None or ("%" not in header and header.count(name) < 2):  # no name written twice
        return False
    count = 0
    for pair in (header or "").split(";"):
        parts = pair.split("=")
        if len(parts) == 2 and unquote(parts[0].strip()) == name:
            count += 1
    return count > 1


def parse_cookie_header_node(header: str | None) -> dict[str, object]:
    """Cookie name -> value as supertokens-node reads them under express: ``cookie`` 0.7's
    ``parse`` (first value wins, one pair of quotes dropped, ``decodeURIComponent`` when it
    succeeds), then the SDK's ``JSONCookies`` (a ``j:`` value whose JSON is truthy becomes that
    JSON, which may be no string at all)."""
    text = header or ""
    cookies: dict[str, object] = {}
    index, length = 0, len(text)
    while length >= 2 and index < length:
        equals = text.find("=", index)
        if equals == -1:
            break
        end = text.find(";", index)
        if end == -1:
            end = length
        elif equals > end:  # a pair without "=": start again after the last ";" before the "="
            index = text.rfind(";", 0, equals) + 1
            continue
        key = text[index:equals].strip(" \t")
        if key not in cookies:
            value = text[equals + 1:end].strip(" \t")
            if len(value) >= 1 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            decoded = javascript.decode_uri_component(value) if "%" in value else value
            cookies[key] = value if decoded is None else decoded
        index = end + 1
    for key, value in cookies.items():
        if isinstance(value, str) and value.startswith("j:"):
            try:
                parsed = javascript.json_parse(value[2:])
            except (ValueError, RecursionError):
                continue
            if parsed or isinstance(parsed, (dict, list)):  # JavaScript's truthiness
                cookies[key] = parsed
    return cookies


def has_duplicate_node(header: str | None, name: str) -> bool:
    """supertokens-node's detector: every ``;``-separated pair counts, whatever its ``=``s."""
    if header is None:
        return False
    count = 0
    for pair in header.split(";"):
        raw = javascript.trim(pair).split("=")[0]
        decoded = javascript.decode_uri_component(raw)
        count += (raw if decoded is None else decoded) == name
    return count > 1


@dataclass(frozen=True)
class ResponseHeaders:
    """Headers to add to an answer: (name, value) pairs, ``Set-Cookie`` possibly repeated."""

    items: tuple[tuple[str, str], ...] = ()


def _set_cookie(settings: Settings, name: str, value: str, expires_ms: int, path: str) -> str:
    morsel: http.cookies.Morsel[str] = http.cookies.Morsel()
    morsel.set(name, value, http.cookies._quote(value))  # type: ignore[attr-defined]
    morsel["expires"] = formatdate(expires_ms / 1000, usegmt=True)
    morsel["httponly"] = True
    morsel["path"] = path
    morsel["samesite"] = settings.cookie_samesite
    if settings.cookie_domain:
        morsel["domain"] = settings.cookie_domain
    if settings.cookie_secure:
        morsel["secure"] = True
    return morsel.OutputString()


def _expose(names: Iterable[str]) -> tuple[str, str]:
    return ("Access-Control-Expose-Headers", ",".join(names))


def clearing_headers(settings: Settings) -> ResponseHeaders:
    """What the SDK sends to end a session in every transfer method (cookies and headers)."""
    cookies = [(ACCESS_COOKIE, "/"), (REFRESH_COOKIE, settings.refresh_token_path)]
    if settings.legacy:
        cookies.append((LEGACY_ID_REFRESH_COOKIE, "/"))
    items = [("Set-Cookie", _set_cookie(settings, name, "", 0, path)) for name, path in cookies]
    items += [
        ("st-access-token", ""),
        ("st-refresh-token", ""),
        ("front-token", "remove"),
        _expose(["front-token", "st-access-token", "st-refresh-token"]),  # the SDK names front-token twice
    ]
    return ResponseHeaders(tuple(items))


def front_token(user_id: str, expiry_ms: int, payload: dict[str, Any]) -> str:
    """The ``front-token`` header value: padded standard base64 of sorted compact JSON."""
    body = json.dumps({"uid": user_id, "ate": expiry_ms, "up": payload}, separators=(",", ":"), sort_keys=True)
    return base64.b64encode(body.encode("utf-8")).decode("ascii")


def new_access_token_headers(
    settings: Settings,
    *,
    transfer_method: str,
    token: str,
    user_id: str,
    expiry_ms: int,
    payload: dict[str, Any],
    anti_csrf: str | None = None,
    now: float | None = None,
) -> ResponseHeaders:
    """Headers that hand a new access token (from the core) to the browser."""
    now_ms = int((time.time() if now is None else now) * 1000)
    items = [("front-token", front_token(user_id, expiry_ms, payload))]
    exposed = ["front-token"]
    if transfer_method == "cookie":
        items.append(("Set-Cookie", _set_cookie(settings, ACCESS_COOKIE, quote(token), now_ms + ONE_YEAR_MS, "/")))
    else:
        items.append(("st-access-token", token))
        exposed.append("st-access-token")
    if anti_csrf is not None:
        items.append(("anti-csrf", anti_csrf))
        exposed.append("anti-csrf")
    return ResponseHeaders((*items, _expose(exposed)))
