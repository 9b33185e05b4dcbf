"""The official supertokens-python SDK (0.31.4), unchanged, as a client of the dev core.

A FastAPI app using the SDK runs in ``fastapi.testclient.TestClient``; its core is a
:class:`DevCore` served from a thread on 127.0.0.1 with an API key.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from http.cookies import Morsel, SimpleCookie
from typing import Any

import falcon.testing
import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from sdk_oracle import init_sdk, reset_sdk
from supertokens_python.framework.fastapi import get_middleware
from supertokens_python.recipe.session import SessionContainer
from supertokens_python.recipe.session import asyncio as session_api
from supertokens_python.recipe.session.framework.fastapi import verify_session
from supertokens_python.types import RecipeUserId

from forward_auth.app import create_app
from forward_auth.devcore.minter import b64url_decode, sha256_hex
from forward_auth.devcore.server import start_in_thread
from forward_auth.devcore.state import DevCore
from forward_auth.settings import load

API_KEY = "sdk-test-api-key"
EPOCH_EXPIRY = "Thu, 01 Jan 1970 00:00:00 GMT"


@pytest.fixture(scope="module")
def devcore() -> Iterator[tuple[DevCore, str]]:
    core, base_url, stop = start_in_thread(api_key=API_KEY)
    yield core, base_url
    stop()


@pytest.fixture
def core(devcore: tuple[DevCore, str]) -> DevCore:
    return devcore[0]


@pytest.fixture
def sdk(devcore: tuple[DevCore, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Return an ``init(**session_options)`` that starts the SDK; it is reset afterwards.

    ``SUPERTOKENS_ENV=testing`` unlocks the SDK's ``reset()`` functions, which also
    drop its process-wide JWKS cache.
    """
    monkeypatch.setenv("SUPERTOKENS_ENV", "testing")

    def start(**session_options: Any) -> None:
        init_sdk(devcore[1], API_KEY, **{"anti_csrf": "NONE", **session_options})

    yield start
    reset_sdk()


@pytest.fixture
def client(sdk: Any) -> TestClient:
    sdk()
    return TestClient(_make_app())


def _make_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(get_middleware())

    @app.post("/login")
    async def login(request: Request) -> dict[str, str]:
        body = await request.json()
        created = await session_api.create_new_session(
            request,
            body.get("tenantId", "public"),
            RecipeUserId(body["userId"]),
            body.get("payload"),
            body.get("db"),
        )
        return {"handle": created.get_handle()}

    @app.get("/me")
    async def me(s: SessionContainer = Depends(verify_session())) -> dict[str, Any]:
        return _describe(s)

    @app.get("/me/checked")
    async def me_checked(
        s: SessionContainer = Depends(verify_session(check_database=True)),
    ) -> dict[str, Any]:
        return _describe(s)

    @app.post("/claims")
    async def claims(
        request: Request, s: SessionContainer = Depends(verify_session())
    ) -> dict[str, Any]:
        await s.merge_into_access_token_payload(await request.json())
        return _describe(s)

    return app


def _describe(s: SessionContainer) -> dict[str, Any]:
    return {
        "userId": s.get_user_id(),
        "handle": s.get_handle(),
        "payload": s.get_access_token_payload(),
    }


def _send(
    client: TestClient,
    method: str,
    path: str,
    *,
    bearer: str | None = None,
    cookies: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    """Send exactly the given credentials (the client's cookie jar is emptied first)."""
    client.cookies.clear()
    sent = dict(headers or {})
    if bearer is not None:
        sent["Authorization"] = f"Bearer {bearer}"
    if cookies:
        sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return client.request(method, path, headers=sent, json=body)


def _login(
    client: TestClient, user_id: str, *, mode: str = "header", **extra: Any
) -> httpx.Response:
    body = {"userId": user_id, **extra}
    response = _send(client, "POST", "/login", headers={"st-auth-mode": mode}, body=body)
    assert response.status_code == 200, response.text
    return response


def _set_cookies(response: httpx.Response) -> dict[str, Morsel[str]]:
    parsed: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        parsed.load(header)
    return dict(parsed)


def _payload(token: str) -> dict[str, Any]:
    return json.loads(b64url_decode(token.split(".")[1]))


def _header(token: str) -> dict[str, Any]:
    return json.loads(b64url_decode(token.split(".")[0]))


def _verify_calls(core: DevCore) -> int:
    return core.request_log().count(("POST", "/recipe/session/verify"))


def test_header_mode_session_verifies_locally(client: TestClient, core: DevCore) -> None:
    login = _login(client, "user-h", payload={"role": "admin"})
    access_token = login.headers["st-access-token"]
    assert login.headers["st-refresh-token"]
    assert login.headers["front-token"]
    assert ("POST", "/public/recipe/session") in core.request_log()

    verify_calls = _verify_calls(core)
    me = _send(client, "GET", "/me", bearer=access_token)

    assert me.status_code == 200, me.text
    assert me.json()["userId"] == "user-h"
    assert me.json()["payload"]["role"] == "admin"
    assert me.json()["payload"]["iss"] == "http://testserver/auth"
    assert _verify_calls(core) == verify_calls  # checked with the JWKS alone


def test_cookie_mode_session(client: TestClient) -> None:
    login = _login(client, "user-c", mode="cookie")
    cookies = _set_cookies(login)

    assert cookies["sAccessToken"]["path"] == "/"
    assert cookies["sAccessToken"]["httponly"]
    assert cookies["sRefreshToken"]["path"] == "/auth/session/refresh"
    assert "st-access-token" not in login.headers
    me = _send(client, "GET", "/me", cookies={"sAccessToken": cookies["sAccessToken"].value})
    assert me.status_code == 200, me.text
    assert me.json()["userId"] == "user-c"


def test_refresh_rotates_and_verify_promotes(client: TestClient, core: DevCore) -> None:
    login = _login(client, "user-r")
    first_refresh_token = login.headers["st-refresh-token"]

    refreshed = _send(client, "POST", "/auth/session/refresh", bearer=first_refresh_token)
    assert refreshed.status_code == 200, refreshed.text
    child_token = refreshed.headers["st-access-token"]
    second_refresh_token = refreshed.headers["st-refresh-token"]
    assert second_refresh_token != first_refresh_token
    assert _payload(child_token)["parentRefreshTokenHash1"] == sha256_hex(first_refresh_token)
    assert _payload(child_token)["refreshTokenHash1"] == sha256_hex(second_refresh_token)

    verify_calls = _verify_calls(core)
    me = _send(client, "GET", "/me", bearer=child_token)
    assert me.status_code == 200, me.text
    assert _verify_calls(core) == verify_calls + 1
    promoted_token = me.headers["st-access-token"]
    assert _payload(promoted_token)["parentRefreshTokenHash1"] is None
    assert _payload(promoted_token)["refreshTokenHash1"] == sha256_hex(second_refresh_token)

    again = _send(client, "GET", "/me", bearer=promoted_token)
    assert again.status_code == 200
    assert "st-access-token" not in again.headers
    assert _verify_calls(core) == verify_calls + 1


def test_reusing_a_superseded_refresh_token_is_token_theft(client: TestClient) -> None:
    login = _login(client, "user-t")
    handle = login.json()["handle"]
    first_refresh_token = login.headers["st-refresh-token"]
    second = _send(client, "POST", "/auth/session/refresh", bearer=first_refresh_token)
    third = _send(client, "POST", "/auth/session/refresh", bearer=second.headers["st-refresh-token"])
    assert third.status_code == 200, third.text

    stolen = _send(client, "POST", "/auth/session/refresh", bearer=first_refresh_token)

    assert stolen.status_code == 401
    assert stolen.json() == {"message": "token theft detected"}
    assert stolen.headers["front-token"] == "remove"
    # The SDK's default theft handler revoked the session through the core.
    assert asyncio.run(session_api.get_session_information(handle)) is None
    latest = _send(client, "POST", "/auth/session/refresh", bearer=third.headers["st-refresh-token"])
    assert latest.status_code == 401
    assert latest.json() == {"message": "unauthorised"}


def test_parent_refresh_token_stays_valid_until_the_child_is_used(client: TestClient) -> None:
    first_refresh_token = _login(client, "user-p").headers["st-refresh-token"]

    once = _send(client, "POST", "/auth/session/refresh", bearer=first_refresh_token)
    twice = _send(client, "POST", "/auth/session/refresh", bearer=first_refresh_token)

    assert once.status_code == 200
    assert twice.status_code == 200, twice.text


def test_revoked_session_fails_the_database_check_and_clears_cookies(client: TestClient) -> None:
    login = _login(client, "user-x", mode="cookie")
    access_cookie = {"sAccessToken": _set_cookies(login)["sAccessToken"].value}
    assert _send(client, "GET", "/me/checked", cookies=access_cookie).status_code == 200

    assert asyncio.run(session_api.revoke_session(login.json()["handle"])) is True

    # Without the database check the token is still good until it expires.
    assert _send(client, "GET", "/me", cookies=access_cookie).status_code == 200
    checked = _send(client, "GET", "/me/checked", cookies=access_cookie)
    assert checked.status_code == 401
    assert checked.json() == {"message": "unauthorised"}
    cleared = _set_cookies(checked)
    assert cleared["sAccessToken"].value == ""
    assert cleared["sAccessToken"]["expires"] == EPOCH_EXPIRY
    assert cleared["sRefreshToken"].value == ""
    assert cleared["sRefreshToken"]["path"] == "/auth/session/refresh"
    assert checked.headers["front-token"] == "remove"


def test_get_session_information(client: TestClient) -> None:
    handle = _login(client, "user-i", payload={"role": "admin"}, db={"plan": "pro"}).json()["handle"]

    info = asyncio.run(session_api.get_session_information(handle))

    assert info is not None
    assert info.session_handle == handle
    assert info.user_id == "user-i"
    assert info.recipe_user_id.get_as_string() == "user-i"
    assert info.tenant_id == "public"
    assert info.session_data_in_database == {"plan": "pro"}
    assert info.custom_claims_in_access_token_payload == {
        "role": "admin",
        "iss": "http://testserver/auth",
    }
    assert info.expiry > info.time_created
    assert asyncio.run(session_api.get_session_information("no-such-handle")) is None


def test_merge_into_access_token_payload_reaches_tokens_through_the_database_check(
    client: TestClient,
) -> None:
    login = _login(client, "user-m")
    access_token = login.headers["st-access-token"]

    handle = login.json()["handle"]
    assert asyncio.run(session_api.merge_into_access_token_payload(handle, {"plan": "gold"}))

    stale = _send(client, "GET", "/me", bearer=access_token)
    assert "plan" not in stale.json()["payload"]
    checked = _send(client, "GET", "/me/checked", bearer=access_token)
    assert checked.status_code == 200, checked.text
    assert checked.json()["payload"]["plan"] == "gold"
    assert _payload(checked.headers["st-access-token"])["plan"] == "gold"


def test_merge_inside_a_request_regenerates_the_token(client: TestClient) -> None:
    access_token = _login(client, "user-g").headers["st-access-token"]

    updated = _send(client, "POST", "/claims", bearer=access_token, body={"theme": "dark"})

    assert updated.status_code == 200, updated.text
    new_token = updated.headers["st-access-token"]
    assert _payload(new_token)["theme"] == "dark"
    assert _payload(new_token)["exp"] == _payload(access_token)["exp"]
    me = _send(client, "GET", "/me", bearer=new_token)
    assert me.json()["payload"]["theme"] == "dark"


def test_rotated_keys_keep_old_tokens_valid(client: TestClient, core: DevCore) -> None:
    old_token = _login(client, "user-k").headers["st-access-token"]
    assert _send(client, "GET", "/me", bearer=old_token).status_code == 200  # caches the JWKS

    new_kid = core.rotate_keys()
    new_token = _login(client, "user-k").headers["st-access-token"]
    time.sleep(0.6)  # the SDK refetches the JWKS for an unknown kid at most every 500 ms

    assert _header(new_token)["kid"] == new_kid != _header(old_token)["kid"]
    assert _send(client, "GET", "/me", bearer=new_token).status_code == 200
    assert _send(client, "GET", "/me", bearer=old_token).status_code == 200


def test_static_signing_key(sdk: Any) -> None:
    sdk(use_dynamic_access_token_signing_key=False)
    client = TestClient(_make_app())

    access_token = _login(client, "user-s").headers["st-access-token"]

    assert _header(access_token)["kid"].startswith("s-")
    assert _send(client, "GET", "/me", bearer=access_token).status_code == 200


def test_anti_csrf_token_guards_refresh(sdk: Any) -> None:
    sdk(anti_csrf="VIA_TOKEN")
    client = TestClient(_make_app())
    login = _login(client, "user-a", mode="cookie")
    anti_csrf = login.headers["anti-csrf"]
    refresh_cookie = {"sRefreshToken": _set_cookies(login)["sRefreshToken"].value}

    def refresh(header: str) -> httpx.Response:
        headers = {"anti-csrf": header}
        return _send(client, "POST", "/auth/session/refresh", cookies=refresh_cookie, headers=headers)

    wrong = refresh("nope")
    right = refresh(anti_csrf)

    assert wrong.status_code == 401
    assert wrong.json() == {"message": "unauthorised"}
    assert _set_cookies(wrong)["sRefreshToken"]["expires"] == EPOCH_EXPIRY
    assert right.status_code == 200, right.text
    assert right.headers["anti-csrf"] not in ("", anti_csrf)


def test_tenant_scoped_session_listing_and_revocation(client: TestClient) -> None:
    public_handle = _login(client, "user-mt").json()["handle"]
    tenant_handle = _login(client, "user-mt", tenantId="tenant1").json()["handle"]
    assert tenant_handle.endswith("_tenant1")

    list_handles = session_api.get_all_session_handles_for_user
    everywhere = asyncio.run(list_handles("user-mt"))
    in_tenant = asyncio.run(list_handles("user-mt", tenant_id="tenant1"))
    revoked = asyncio.run(session_api.revoke_all_sessions_for_user("user-mt", tenant_id="tenant1"))

    assert sorted(everywhere) == sorted([public_handle, tenant_handle])
    assert in_tenant == [tenant_handle]
    assert revoked == [tenant_handle]
    assert asyncio.run(list_handles("user-mt")) == [public_handle]


def test_the_service_verifies_what_the_sdk_issued(client: TestClient, devcore: tuple[DevCore, str]) -> None:
    """Sessions created, refreshed and revoked through the official SDK, verified by the service."""
    settings = load({"core_url": devcore[1], "core_api_key": API_KEY}, environ={})
    service = falcon.testing.TestClient(create_app(settings))

    login = _login(client, "user-svc", mode="cookie", payload={"st-role": {"v": ["admin"], "t": 1}})
    cookies = _set_cookies(login)
    access = {"Cookie": f"sAccessToken={cookies['sAccessToken'].value}"}
    verified = service.simulate_get("/verify", params={"requireRole": "admin"}, headers=access)
    assert verified.status_code == 200 and verified.headers["X-User-Id"] == "user-svc"

    refreshed = _send(client, "POST", "/auth/session/refresh", cookies={"sRefreshToken": cookies["sRefreshToken"].value})
    assert refreshed.status_code == 200, refreshed.text
    child = _set_cookies(refreshed)["sAccessToken"].value
    promoted = service.simulate_get("/verify", headers={"Cookie": f"sAccessToken={child}"})
    assert promoted.status_code == 200
    new_token = promoted.cookies["sAccessToken"].value
    assert new_token != child and _payload(new_token)["parentRefreshTokenHash1"] is None
    assert promoted.headers["front-token"]

    assert asyncio.run(session_api.revoke_session(login.json()["handle"])) is True
    revoked = service.simulate_get("/verify", params={"checkDatabase": "true"},
                                   headers={"Cookie": f"sAccessToken={new_token}"})
    assert (revoked.status_code, revoked.json) == (401, {"message": "unauthorised"})
    assert revoked.cookies["sAccessToken"].value == "" and revoked.headers["front-token"] == "remove"
