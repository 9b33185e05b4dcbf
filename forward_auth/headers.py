"""The headers of an answer: identity, claim and promotion headers, rendered header-safe."""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
from collections.abc import Mapping
from typing import Protocol

from . import claims, verifier
from .cookies import ResponseHeaders, new_access_token_headers
from .policy import Rule
from .settings import Settings

log = logging.getLogger(__name__)

#: Longest claim header value passed on; longer ones are left out (and named) rather than cut.
MAX_HEADER_VALUE = 4096
_HEADER_SAFE = re.compile(r"[\x21-\x24\x26-\x7e]*")  # printable ASCII but space and %


def header_value(text: str) -> str:
    """A header-safe rendering: printable ASCII but space and ``%`` as-is, the rest percent-encoded.

    Spaces are encoded because servers strip them at the ends of header values (`` admin ``
    would reach the upstream as ``admin``); control characters could split headers. A lone
    surrogate (JSON allows ``"\\udcff"`` in a token, and the core takes it in a user id) is
    encoded as its code point's three bytes, so distinct values stay distinct and none fails.
    """
    if _HEADER_SAFE.fullmatch(text):  # user ids, handles, tenants: nearly always
        return text
    return "".join(
        ch if 0x20 < ord(ch) < 0x7F and ch != "%" else
        "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        for ch in text
    )


def base64url_json(data: object) -> str:
    """Compact JSON (keys sorted) as unpadded base64url: ``X-Access-Token-Payload``, ``X-Session-Data``."""
    compact = json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return base64.urlsafe_b64encode(compact).decode("ascii").rstrip("=")


def claim_headers(rule: Rule, session: verifier.Session) -> dict[str, str]:
    """The rule's claim headers for this session (and ``X-Access-Token-Payload``), of any size."""
    values: dict[str, str] = {}
    for header, key in rule.headers:
        value, _ = claims.claim_value(session.payload, key)
        if value is not None:
            if isinstance(value, list):  # a comma inside an item is encoded: ["a,b"] is not ["a", "b"]
                values[header] = ",".join(header_value(_text(item)).replace(",", "%2C") for item in value)
            else:
                values[header] = header_value(_text(value))
    if rule.forward_payload:
        values["X-Access-Token-Payload"] = base64url_json(session.payload)
    return values


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


class Response(Protocol):
    """Where headers are set: Falcon's response, or :class:`~forward_auth.endpoint.Reply`."""

    def set_header(self, name: str, value: str) -> None: ...

    def append_header(self, name: str, value: str) -> None: ...


def apply_headers(resp: Response, headers: ResponseHeaders) -> None:
    """Add the headers, each ``Set-Cookie`` on a line of its own."""
    for name, value in headers.items:
        if name.lower() == "set-cookie":
            resp.append_header("Set-Cookie", value)
        else:
            resp.set_header(name, value)


def identity_headers(session: verifier.Session) -> tuple[tuple[str, str], ...]:
    """What the token proved, as the headers a proxy copies to the upstream."""
    return _identity(session.user_id, session.handle, session.tenant_id, session.recipe_user_id,
                     session.expiry_ms, session.created_ms)


@functools.lru_cache(maxsize=1024)  # a token's sessions answer many requests: rendered once (~0.6 MB)
def _identity(user_id: str, handle: str, tenant_id: str | None, recipe_user_id: str, expiry_ms: int,
              created_ms: int) -> tuple[tuple[str, str], ...]:
    tenant = () if tenant_id is None else (("X-Tenant-Id", header_value(tenant_id)),)
    return (  # no X-Tenant-Id for supertokens-node's session without one (a v4+ token without tId)
        ("X-User-Id", header_value(user_id)),
        ("X-Session-Handle", header_value(handle)),
        *tenant,
        ("X-Recipe-User-Id", header_value(recipe_user_id)),
        ("X-Session-Expiry", str(expiry_ms)),
        ("X-Session-Created", str(created_ms)),
    )


def promotion_headers(settings: Settings, session: verifier.Session, anti_csrf: str | None) -> ResponseHeaders:
    """Set-Cookie / st-access-token and front-token (and the request's ``anti-csrf`` value, as
    the SDK echoes it) for a token the core re-minted."""
    fresh = session.new_access_token
    if fresh is None:
        return ResponseHeaders()
    return new_access_token_headers(
        settings,
        transfer_method=session.transfer_method,
        token=fresh.token,
        user_id=session.user_id,
        expiry_ms=fresh.expiry_ms,
        payload=session.payload,
        anti_csrf=anti_csrf,
    )


def session_headers(settings: Settings, rule: Rule | None, session: verifier.Session,
                    anti_csrf: str | None, forwarded: Mapping[str, str | None] | None = None) -> ResponseHeaders:
    """Every header of an allowed answer: identity, the rule's claim headers and ``forwarded``
    ones (a value over :data:`MAX_HEADER_VALUE`, or None, is left out and named in
    ``X-Forward-Auth-Omitted``) and, on a refresh promotion, the new token."""
    items = list(identity_headers(session))
    values: dict[str, str | None] = {**(claim_headers(rule, session) if rule is not None else {}), **(forwarded or {})}
    omitted = [name for name, value in values.items() if value is None or len(value) > MAX_HEADER_VALUE]
    items += [(name, value) for name, value in values.items() if value is not None and name not in omitted]
    if omitted:
        items.append(("X-Forward-Auth-Omitted", ",".join(omitted)))
        log.warning("headers over %d bytes left out: %s", MAX_HEADER_VALUE, ", ".join(omitted))
    return ResponseHeaders(tuple(items) + promotion_headers(settings, session, anti_csrf).items)


def reuse_until(settings: Settings, session: verifier.Session, now: float) -> int | None:
    """For an answer that cannot change before the token's exp (:func:`verifier.replayable`):
    until when nginx's ``proxy_cache`` may reuse it (epoch seconds, never past exp), or None."""
    until = int(min(now + settings.proxy_cache_seconds, session.expiry_ms / 1000))
    return until if until > now else None
