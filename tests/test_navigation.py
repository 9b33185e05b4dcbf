"""Telling a browser navigation from an API call by the original request's headers."""

from __future__ import annotations

import pytest

from forward_auth.navigation import is_navigation, prefers_html

#: What Chromium sends when a person opens a page (typed URL, link, form).
CHROMIUM_NAVIGATION = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "none",
}


def getter(headers: dict[str, str]):  # noqa: ANN201
    lowered = {k.lower(): v for k, v in headers.items()}
    return lambda name: lowered.get(name.lower())


@pytest.mark.parametrize("headers", [
    CHROMIUM_NAVIGATION,
    {"Sec-Fetch-Mode": "navigate"},
    {"Sec-Fetch-Dest": "document"},  # Dest alone is enough
    {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"},  # a navigation inside a frame
    {"Accept": "text/html"},  # no Fetch Metadata: Accept decides
    {"Accept": "text/html;q=0.9, application/json;q=0.5"},
    {"Accept": "application/xhtml+xml,*/*;q=0.8"},
])
def test_navigations(headers: dict[str, str]) -> None:
    assert is_navigation(getter(headers))


@pytest.mark.parametrize("headers", [
    {},  # curl, a proxy's health check: unclassifiable is an API call
    {"Accept": "*/*"},
    {"Accept": "application/json"},
    {"Accept": "text/html, application/json"},  # a tie is not a preference
    {"Accept": "application/json, text/html;q=0.9"},
    {"Accept": "text/html;q=0"},
    {"Accept": "text/html;q=nan"},
    {"Accept": "text/html;q=oops"},
    {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty", "Accept": "text/html"},  # fetch() asking for HTML
    {"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image", "Accept": "text/html"},
    # the frontend SDK's own calls, even when they look like a navigation otherwise
    {**CHROMIUM_NAVIGATION, "rid": "session"},
    {**CHROMIUM_NAVIGATION, "st-auth-mode": "cookie"},
    {**CHROMIUM_NAVIGATION, "fdi-version": "3.1"},
])
def test_api_calls(headers: dict[str, str]) -> None:
    assert not is_navigation(getter(headers))


def test_a_rule_forces_either_kind() -> None:
    assert is_navigation(getter({}), "redirect")
    assert is_navigation(getter({"Accept": "application/json"}), "redirect")
    assert not is_navigation(getter(CHROMIUM_NAVIGATION), "api")


@pytest.mark.parametrize("headers", [{"rid": "session"}, {"st-auth-mode": "cookie"}, {"fdi-version": "3.1"},
                                     {"Sec-Fetch-Mode": "cors"}, {"Sec-Fetch-Mode": "no-cors"},
                                     {"Sec-Fetch-Mode": "same-origin", "Accept": "text/html"}])
def test_a_rule_never_makes_an_api_call_a_navigation(headers: dict[str, str]) -> None:
    """The SDK's own calls and fetches keep their 401: a fetch that followed a redirect would get
    the sign-in page's HTML, and the SDK would not refresh."""
    assert not is_navigation(getter(headers), "redirect")


def test_accept_takes_the_best_q_of_a_repeated_type() -> None:
    assert prefers_html("application/json;q=0.5, text/html;q=0.1, text/html")
