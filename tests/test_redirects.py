"""Redirect targets: the configured URL plus a relative, percent-encoded redirectToPath, never
another site."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from forward_auth import pages
from forward_auth.claims import Validator
from forward_auth.errors import CoreError, InvalidClaims, KeysUnavailable, TryRefreshToken, Unauthorised
from forward_auth.policy import Rule
from forward_auth.redirects import Denial, Navigation, Targets, check_url, denial, original_path, target, targets_for
from forward_auth.settings import load

LOGIN = "https://app.example.com/auth"


@pytest.mark.parametrize(("uri", "expected"), [
    ("/reports?year=2024&q=a%20b", "/reports?year=2024&q=a%20b"),
    ("/", "/"),
    ("/caf%C3%A9", "/caf%C3%A9"),
])
def test_the_original_path_and_query_travel_percent_encoded(uri: str, expected: str) -> None:
    url = target(LOGIN, uri)
    split = urlsplit(url)
    assert (split.scheme, split.netloc, split.path) == ("https", "app.example.com", "/auth")
    assert parse_qs(split.query) == {"redirectToPath": [expected]}
    assert "/" not in split.query and "&" not in split.query  # one parameter, every separator encoded


@pytest.mark.parametrize("uri", [
    "//evil.example/x", "/\\evil.example", "\\\\evil.example", "/%2F/evil.example", "/%2f%2fevil.example",
    "/%5Cevil.example", "http://evil.example/x", "https:evil.example", "evil.example", "",
    "/a\r\nSet-Cookie:x=1", "/a b", "/x" + "a" * 3000, "/%0d%0aLocation:x",
])
def test_an_original_that_could_name_another_site_is_left_out(uri: str) -> None:
    assert original_path(uri) is None
    assert target(LOGIN, uri) == LOGIN


def test_a_login_url_with_a_query_gets_another_parameter() -> None:
    assert target("/auth?show=signin", "/r") == "/auth?show=signin&redirectToPath=%2Fr"


@pytest.mark.parametrize("url", [LOGIN, "http://127.0.0.1:8000/auth", "/auth", "/auth/refresh?x=1"])
def test_configurable_targets(url: str) -> None:
    assert check_url(url) is None


@pytest.mark.parametrize("url", ["//evil.example/auth", "javascript:alert(1)", "ftp://a/b", "auth", "/a\\b",
                                 "https://user:pw@app.example.com/auth", "/auth#x", "https://a.example/#x",
                                 "/a b", "https:///nohost", "/a\nb", "https://bücher.example/auth"])
def test_targets_that_are_refused(url: str) -> None:
    assert check_url(url) is not None


NAV = Navigation(Targets(LOGIN, "/refresh", (("st-ev", "/verify-email"),)), "GET", "/r?x=1")


def test_each_session_error_has_its_target() -> None:
    assert denial(Unauthorised(clear_tokens=True), NAV) == Denial(302, f"{LOGIN}?redirectToPath=%2Fr%3Fx%3D1")
    assert denial(TryRefreshToken(), NAV) == Denial(302, "/refresh?redirectToPath=%2Fr%3Fx%3D1")
    ev_failed = InvalidClaims([{"id": "st-role", "reason": {}}, {"id": "st-ev", "reason": {}}])
    assert denial(ev_failed, NAV) == Denial(302, "/verify-email?redirectToPath=%2Fr%3Fx%3D1")
    assert denial(InvalidClaims([{"id": "st-role", "reason": {}}]), NAV) == Denial(403, page=pages.FORBIDDEN)
    assert denial(KeysUnavailable(), NAV) == Denial(503, page=pages.UNAVAILABLE)
    assert denial(CoreError(), NAV) is None  # the API answer


def test_a_target_page_behind_the_gate_gets_the_api_answer_not_a_redirect_to_itself() -> None:
    """A sign-in, refresh or claim page that the gate itself protects would loop the browser."""
    on_login = Navigation(Targets("https://app.example.com/auth", "/refresh", (("st-ev", "/verify-email"),)), "GET",
                          "/auth?redirectToPath=%2Fauth")
    assert denial(Unauthorised(clear_tokens=True), on_login) is None
    assert denial(TryRefreshToken(), Navigation(NAV.targets, "GET", "/refresh?x")) is None
    assert denial(InvalidClaims([{"id": "st-ev", "reason": {}}]), Navigation(NAV.targets, "GET", "/verify-email")) \
        == Denial(403, page=pages.FORBIDDEN)
    assert denial(Unauthorised(clear_tokens=True), Navigation(NAV.targets, "GET", "/authx")) is not None


def test_other_methods_get_303_and_no_refresh_url_means_sign_in() -> None:
    post = Navigation(Targets(LOGIN), "POST", "/form")
    assert denial(TryRefreshToken(), post) == Denial(303, f"{LOGIN}?redirectToPath=%2Fform")


def test_the_pages_hold_no_script_and_nothing_of_the_request() -> None:
    for page in (pages.FORBIDDEN, pages.UNAVAILABLE):
        assert b"<script" not in page.lower() and b"\n" not in page and b"http" not in page


def test_targets_come_from_the_rule_else_the_settings() -> None:
    settings = load({"login_url": LOGIN, "refresh_url": "/refresh"}, environ={})
    assert settings.redirect_hosts == ("app.example.com",)
    assert targets_for(settings, None, "app.example.com") == Targets(LOGIN, "/refresh")
    rule = Rule("r", login_url="/rule-login", claim_redirects=(("st-ev", "https://app.example.com/ev"),))
    assert targets_for(settings, rule, "app.example.com") == Targets("/rule-login", "/refresh",
                                                                     (("st-ev", "https://app.example.com/ev"),))


def test_a_navigation_to_another_host_gets_no_redirect() -> None:
    settings = load({"login_url": LOGIN}, environ={})
    assert targets_for(settings, None, "evil.example") is None
    assert targets_for(settings, None, "") is None


def test_rule_targets_on_hosts_not_allowed_are_not_used() -> None:
    settings = load({"login_url": LOGIN}, environ={})
    rule = Rule("r", login_url="https://evil.example/auth")
    assert targets_for(settings, rule, "app.example.com") is None
    claims = Rule("c", refresh_url="https://evil.example/r", claim_redirects=(("st-ev", "https://evil.example/ev"),),
                  claims=(Validator("st-ev", "has_value", True),))
    assert targets_for(settings, claims, "app.example.com") == Targets(LOGIN)


def test_path_targets_stay_on_the_browsers_host_when_no_host_is_listed() -> None:
    settings = load({"login_url": "/auth"}, environ={})
    assert settings.redirect_hosts == ()
    assert targets_for(settings, None, "any.example") == Targets("/auth")
    assert targets_for(load({}, environ={}), None, "app.example.com") is None  # no login_url: API answers
