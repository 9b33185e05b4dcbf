"""Whether a request is a browser navigation (a person opening a page) or an API call (pure).

A denial of a navigation can be a redirect or a page; a denial of an API call stays SuperTokens'
JSON, which the frontend SDK reads. The rule, first match wins:

1. a header the frontend SDK adds (``rid``, ``st-auth-mode``, ``fdi-version``): an API call;
2. Fetch Metadata, which every current browser sends: ``Sec-Fetch-Mode: navigate`` or
   ``Sec-Fetch-Dest: document`` is a navigation, any other ``Sec-Fetch-Mode`` (``cors``,
   ``no-cors``, ``same-origin``: ``fetch``, XHR, images, scripts) an API call;
3. without Fetch Metadata (older browsers): an ``Accept`` header that prefers ``text/html``
   (its q-value the highest and above ``application/json``'s) is a navigation;
4. anything else is an API call, as before pages existed.

A policy rule's ``on_denied`` decides steps 2 to 4 for its routes, but a request that step 1 or
a non-navigation ``Sec-Fetch-Mode`` calls an API call stays one.
"""

from __future__ import annotations

from collections.abc import Callable

HeaderGetter = Callable[[str], "str | None"]

#: Headers supertokens-web-js / -website add to the calls they intercept.
SDK_HEADERS = ("rid", "st-auth-mode", "fdi-version")
ON_DENIED = ("redirect", "api")
_HTML_TYPES = ("text/html", "application/xhtml+xml")


def is_navigation(get: HeaderGetter, on_denied: str | None = None) -> bool:
    """The rule above. ``on_denied`` (a policy rule's ``redirect`` or ``api``) overrides steps 2
    to 4, never step 1 nor a non-navigation ``Sec-Fetch-Mode``: a ``fetch`` that followed a
    redirect would get the sign-in page's HTML, and the frontend SDK needs its 401 to refresh."""
    if any(get(name) is not None for name in SDK_HEADERS):
        return False
    mode = (get("sec-fetch-mode") or "").strip().lower()
    if mode and mode != "navigate":
        return False
    if on_denied is not None:
        return on_denied == "redirect"
    return mode == "navigate" or (get("sec-fetch-dest") or "").strip().lower() == "document" or \
        prefers_html(get("accept") or "")


def prefers_html(accept: str) -> bool:
    """Whether an ``Accept`` header ranks HTML first (and strictly above JSON)."""
    weights = _weights(accept)
    html = max((weights.get(kind, 0.0) for kind in _HTML_TYPES), default=0.0)
    return html > 0 and html >= max(weights.values()) and html > weights.get("application/json", 0.0)


def _weights(accept: str) -> dict[str, float]:
    """Media range -> q-value (a malformed q is 0: it ranks nothing)."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        kind, *params = (piece.strip() for piece in part.split(";"))
        if not kind:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                q = min(max(q, 0.0), 1.0) if q == q else 0.0  # NaN ranks nothing
        weights[kind.lower()] = max(q, weights.get(kind.lower(), 0.0))
    return weights
