"""The app's answers to browser navigations: redirects to sign in or refresh, pages, and API
answers left exactly as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FakeCore, v5

from forward_auth import pages
from forward_auth.devcore.minter import SigningKey

LOGIN = "https://app.example.com/auth"
NAVIGATE = {"Host": "app.example.com", "Accept": "text/html,*/*;q=0.8", "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "document"}
POLICY = """
rules:
  - name: verified
    match: {path_prefix: /verified/}
    claims:
      - {claim: st-ev, equals: true, redirect: https://app.example.com/auth/verify-email}
  - name: admin
    match: {path_prefix: /admin/}
    claims: [{claim: st-role, includes: root}]
  - name: api
    match: {path_prefix: /api/}
    on_denied: api
  - name: always-pages
    match: {path_prefix: /docs/}
    on_denied: redirect
    login_url: /docs-login
"""


@pytest.fixture
def pages_client(make_client, tmp_path: Path):  # noqa: ANN001, ANN201
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return make_client(login_url=LOGIN, refresh_url="/auth/refresh", policy_file=str(path))


def nav(uri: str, token: str | None = None, method: str = "GET", **extra: str) -> dict[str, str]:
    headers = {**NAVIGATE, "X-Forwarded-Method": method, "X-Forwarded-Uri": uri, **extra}
    if token:
        headers["Cookie"] = f"sAccessToken={token}"
    return headers


def test_a_navigation_without_a_session_is_sent_to_sign_in(pages_client) -> None:  # noqa: ANN001
    result = pages_client.simulate_get("/verify", headers=nav("/reports?year=2024"))
    assert result.status_code == 302
    assert result.headers["Location"] == f"{LOGIN}?redirectToPath=%2Freports%3Fyear%3D2024"
    assert result.content == b"" and result.headers["Cache-Control"] == "no-store"
    assert result.headers["X-Forward-Auth-Reason"] == "no-token"


def test_an_expired_token_is_sent_to_the_refresh_page(pages_client, key: SigningKey) -> None:  # noqa: ANN001
    result = pages_client.simulate_get("/verify", headers=nav("/reports", v5(key, exp=1)))
    assert (result.status_code, result.headers["Location"]) == (302, "/auth/refresh?redirectToPath=%2Freports")


def test_a_form_post_gets_303(pages_client) -> None:  # noqa: ANN001
    assert pages_client.simulate_get("/verify", headers=nav("/form", method="POST")).status_code == 303


def test_a_revoked_session_is_cleared_and_sent_to_sign_in(make_client, fake_core: FakeCore, key: SigningKey) -> None:  # noqa: ANN001
    fake_core.verify_answer = {"status": "UNAUTHORISED", "message": "gone"}
    client = make_client(login_url=LOGIN, check_database="true")
    result = client.simulate_get("/verify", headers=nav("/x", v5(key)))
    assert (result.status_code, result.headers["Location"]) == (302, f"{LOGIN}?redirectToPath=%2Fx")
    assert {c.name for c in result.cookies.values()} >= {"sAccessToken", "sRefreshToken"}


@pytest.mark.parametrize("headers", [
    {},  # curl
    {"Accept": "application/json"},
    {**NAVIGATE, "rid": "session"},  # the frontend SDK
    {**NAVIGATE, "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"},  # fetch() from a page
])
def test_api_calls_keep_the_json_answers_byte_for_byte(make_client, headers: dict[str, str]) -> None:  # noqa: ANN001
    before = make_client().simulate_get("/verify", headers={**headers, "X-Forwarded-Uri": "/r"})
    after = make_client(login_url=LOGIN).simulate_get("/verify", headers={**headers, "X-Forwarded-Uri": "/r"})
    assert (after.status_code, after.content) == (before.status_code, before.content) == (401, b'{"message":"unauthorised"}')
    assert "Location" not in after.headers and after.headers["Content-Type"] == "application/json"


def test_without_a_login_url_a_navigation_gets_the_api_answer(client) -> None:  # noqa: ANN001
    result = client.simulate_get("/verify", headers=nav("/r"))
    assert (result.status_code, result.json) == (401, {"message": "unauthorised"})


@pytest.mark.parametrize("host", ["evil.example", "app.example.com.evil.example", "evil.example:443"])
def test_a_navigation_for_another_host_is_never_redirected(pages_client, host: str) -> None:  # noqa: ANN001
    for headers in ({**nav("/r"), "Host": host}, {**nav("/r"), "X-Forwarded-Host": host}):
        result = pages_client.simulate_get("/verify", headers=headers)
        assert (result.status_code, result.json) == (401, {"message": "unauthorised"}), headers
        assert "Location" not in result.headers


@pytest.mark.parametrize("uri", ["//evil.example/x", "/\\evil.example", "/%5Cevil.example", "http://evil.example/x"])
def test_a_forged_original_never_becomes_the_target(make_client, uri: str) -> None:  # noqa: ANN001
    """Refused as a path (400), or redirected without it: the target itself stays on the site."""
    result = make_client(login_url=LOGIN).simulate_get("/verify", headers=nav(uri))
    assert result.headers.get("Location") in (None, LOGIN, f"{LOGIN}?redirectToPath=%2Fx"), result.headers
    assert result.status_code in (302, 400)


def test_a_claim_with_a_redirect_sends_there(pages_client, key: SigningKey) -> None:  # noqa: ANN001
    result = pages_client.simulate_get("/verify", headers=nav("/verified/page", v5(key)))
    assert result.status_code == 302
    assert result.headers["Location"] == "https://app.example.com/auth/verify-email?redirectToPath=%2Fverified%2Fpage"


def test_a_claim_without_a_redirect_gets_the_403_page(pages_client, key: SigningKey) -> None:  # noqa: ANN001
    result = pages_client.simulate_get("/verify", headers=nav("/admin/page", v5(key)))
    assert (result.status_code, result.content) == (403, pages.FORBIDDEN)
    assert result.headers["Content-Type"] == pages.HTML
    api = pages_client.simulate_get("/verify", headers={"X-Forwarded-Uri": "/admin/page", "Cookie": f"sAccessToken={v5(key)}"})
    assert api.status_code == 403 and api.json["message"] == "invalid claim"


def test_keys_unavailable_gives_a_navigation_the_503_page(pages_client, fake_core: FakeCore, key: SigningKey) -> None:  # noqa: ANN001
    fake_core.down = True
    result = pages_client.simulate_get("/verify", headers=nav("/r", v5(key)))
    assert (result.status_code, result.content, result.headers["Retry-After"]) == (503, pages.UNAVAILABLE, "1")
    api = pages_client.simulate_get("/verify", headers={"Cookie": f"sAccessToken={v5(key)}"})
    assert (api.status_code, api.json) == (503, {"message": "keys-unavailable"})


def test_a_rule_forces_the_kind_and_its_own_login_url(pages_client) -> None:  # noqa: ANN001
    api = pages_client.simulate_get("/verify", headers=nav("/api/x"))
    assert (api.status_code, api.json) == (401, {"message": "unauthorised"})
    forced = pages_client.simulate_get("/verify", headers={"Host": "app.example.com", "X-Forwarded-Uri": "/docs/a"})
    assert (forced.status_code, forced.headers["Location"]) == (302, "/docs-login?redirectToPath=%2Fdocs%2Fa")


def test_nginx_gets_401_with_the_target_in_a_header(pages_client, key: SigningKey) -> None:  # noqa: ANN001
    result = pages_client.simulate_get("/verify", params={"proxy": "nginx"}, headers=nav("/r?a=1", method="POST"))
    assert (result.status_code, result.content) == (401, b"")
    assert result.headers["X-Forward-Auth-Status"] == "303"
    assert result.headers["X-Forward-Auth-Location"] == f"{LOGIN}?redirectToPath=%2Fr%3Fa%3D1"
    assert "Location" not in result.headers and "X-Forward-Auth-Body" not in result.headers
    page = pages_client.simulate_get("/verify", params={"proxy": "nginx"}, headers=nav("/admin/x", v5(key)))
    assert (page.status_code, page.content, page.headers["X-Forward-Auth-Status"]) == (403, b"", "403")
    assert page.headers["X-Forward-Auth-Body"] == pages.FORBIDDEN.decode()
    assert page.headers["X-Forward-Auth-Content-Type"] == pages.HTML


def test_a_navigation_from_an_untrusted_peer_gets_the_api_answer(pages_client) -> None:  # noqa: ANN001
    """Its forwarded URI is not believed, so the original is unknown: redirectToPath would be
    /verify and its policy query."""
    result = pages_client.simulate_get("/verify", params={"requireRole": "admin"}, headers=nav("/reports"),
                                       remote_addr="203.0.113.9")
    assert (result.status_code, result.json) == (401, {"message": "unauthorised"})
    assert "Location" not in result.headers
