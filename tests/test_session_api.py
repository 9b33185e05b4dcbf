"""The session API, with the official SDK (supertokens-python 0.31.4) as the judge.

Sessions are created and refreshed by the SDK against a dev core served from a thread; the
service (``falcon.testing``, the real app and core client over HTTP) writes through the API, and
the SDK reads what the core then holds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
import test_sdk_against_devcore as sdk_tests
from fastapi.testclient import TestClient
from supertokens_python.recipe.session import asyncio as sdk_session
from test_sdk_against_devcore import API_KEY, _login, _payload, _send, _set_cookies

from forward_auth.app import create_app
from forward_auth.devcore.state import DevCore
from forward_auth.policy import PolicyFile
from forward_auth.settings import load

SESSION_API_KEY = "session-api-test-secret-0123456789"
BEARER = {"Authorization": f"Bearer {SESSION_API_KEY}"}
# The SDK test module's fixtures: a dev core with an API key, the SDK initialised on it, its app.
devcore, core, sdk, client = sdk_tests.devcore, sdk_tests.core, sdk_tests.sdk, sdk_tests.client
POLICY = """
rules:
  - name: object
    match: {path_prefix: /object/}
    forward_payload: true
    headers: {X-Plan: plan}
"""


@pytest.fixture
def service(devcore: tuple[DevCore, str], tmp_path: Path) -> Callable[..., falcon.testing.TestClient]:
    def build(**overrides: Any) -> falcon.testing.TestClient:
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        settings = load({"core_url": devcore[1], "core_api_key": API_KEY, "session_api": "true",
                         "session_api_key": SESSION_API_KEY, "policy_file": str(policy), **overrides}, environ={})
        return falcon.testing.TestClient(create_app(settings, policies=PolicyFile(str(policy))))
    return build


@pytest.fixture
def api(service: Callable[..., falcon.testing.TestClient]) -> falcon.testing.TestClient:
    return service()


def _info(handle: str) -> Any:
    return asyncio.run(sdk_session.get_session_information(handle))


def test_data_written_through_the_api_is_what_the_sdk_reads(client: TestClient, api: falcon.testing.TestClient) -> None:
    handle = _login(client, "user-d", payload={"role": "x"}, db={"old": True}).json()["handle"]
    data = {"cart": [1, 2], "note": "héllo ✓", "nested": {"a": None}}

    put = api.simulate_put(f"/sessions/{handle}/data", json=data, headers=BEARER)

    assert (put.status_code, put.json) == (200, {"status": "OK"})
    info = _info(handle)
    assert info.session_data_in_database == data
    got = api.simulate_get(f"/sessions/{handle}", headers=BEARER)
    assert got.status_code == 200
    assert got.json == {
        "status": "OK", "sessionHandle": handle, "userId": info.user_id,
        "recipeUserId": info.recipe_user_id.get_as_string(), "tenantId": info.tenant_id,
        "timeCreated": info.time_created, "expiry": info.expiry,
        "customClaimsInAccessTokenPayload": info.custom_claims_in_access_token_payload,
        "sessionDataInDatabase": data,
    }


def test_a_merged_payload_reaches_the_token_at_the_sdks_refresh_and_the_gate_passes_it_on(
        client: TestClient, api: falcon.testing.TestClient) -> None:
    login = _login(client, "user-p", mode="cookie", payload={"keep": 1, "drop": "me"})
    handle, cookies = login.json()["handle"], _set_cookies(login)

    merged = api.simulate_patch(f"/sessions/{handle}/access-token-payload", json={"plan": "gold", "drop": None},
                                headers=BEARER)

    assert merged.status_code == 200, merged.json
    claims = _info(handle).custom_claims_in_access_token_payload
    assert claims["plan"] == "gold" and claims["keep"] == 1 and "drop" not in claims
    old = {"Cookie": f"sAccessToken={cookies['sAccessToken'].value}"}
    assert "plan" not in _payload(cookies["sAccessToken"].value)  # the frontend's token: at its next refresh
    refreshed = _send(client, "POST", "/auth/session/refresh", cookies={"sRefreshToken": cookies["sRefreshToken"].value})
    assert refreshed.status_code == 200, refreshed.text
    token = _set_cookies(refreshed)["sAccessToken"].value
    assert _payload(token)["plan"] == "gold" and "drop" not in _payload(token)
    # The gate passes it on (the refreshed token is promoted by the core on its first use).
    verified = api.simulate_get("/verify", headers={"Cookie": f"sAccessToken={token}", "X-Forwarded-Uri": "/object/x"})
    assert verified.status_code == 200, verified.json
    assert verified.headers["X-Plan"] == "gold"
    forwarded = json.loads(base64.urlsafe_b64decode(verified.headers["X-Access-Token-Payload"] + "=="))
    assert forwarded["plan"] == "gold" and "drop" not in forwarded
    before = api.simulate_get("/verify", headers={**old, "X-Forwarded-Uri": "/object/x"})
    assert before.status_code == 200 and "X-Plan" not in before.headers


def test_a_revoked_session_is_refused_at_the_next_database_check_and_cannot_refresh(
        client: TestClient, api: falcon.testing.TestClient) -> None:
    login = _login(client, "user-r", mode="cookie")
    handle, cookies = login.json()["handle"], _set_cookies(login)
    access = {"Cookie": f"sAccessToken={cookies['sAccessToken'].value}"}

    revoked = api.simulate_post(f"/sessions/{handle}/revoke", headers=BEARER)

    assert (revoked.status_code, revoked.json) == (200, {"status": "OK", "sessionHandlesRevoked": [handle]})
    checked = api.simulate_get("/verify", params={"checkDatabase": "true"}, headers=access)
    assert (checked.status_code, checked.json) == (401, {"message": "unauthorised"})
    assert checked.headers["front-token"] == "remove"
    refresh = _send(client, "POST", "/auth/session/refresh", cookies={"sRefreshToken": cookies["sRefreshToken"].value})
    assert (refresh.status_code, refresh.json()) == (401, {"message": "unauthorised"})
    assert _info(handle) is None
    again = api.simulate_post(f"/sessions/{handle}/revoke", headers=BEARER)
    assert again.status_code == 404


def test_revoking_a_users_sessions_in_one_tenant_or_all(client: TestClient, api: falcon.testing.TestClient) -> None:
    public = _login(client, "user-t").json()["handle"]
    tenant = _login(client, "user-t", tenantId="tenant1").json()["handle"]

    one = api.simulate_post("/users/user-t/sessions/revoke", params={"tenantId": "tenant1"}, headers=BEARER)

    assert (one.status_code, one.json) == (200, {"status": "OK", "sessionHandlesRevoked": [tenant]})
    assert asyncio.run(sdk_session.get_all_session_handles_for_user("user-t")) == [public]
    every = api.simulate_post("/users/user-t/sessions/revoke", headers=BEARER)
    assert every.json == {"status": "OK", "sessionHandlesRevoked": [public]}
    assert asyncio.run(sdk_session.get_all_session_handles_for_user("user-t")) == []


def test_unknown_handles_are_404_and_bad_input_400_with_nothing_applied(
        client: TestClient, api: falcon.testing.TestClient) -> None:
    handle = _login(client, "user-b", payload={"keep": 1}, db={"kept": True}).json()["handle"]
    for method, path, body in (("GET", "/sessions/no-such", None), ("PUT", "/sessions/no-such/data", {}),
                               ("PATCH", "/sessions/no-such/access-token-payload", {"a": 1}),
                               ("POST", "/sessions/no-such/revoke", None)):
        answer = api.simulate_request(method, path, json=body, headers=BEARER)
        assert (answer.status_code, answer.json["status"]) == (404, "UNAUTHORISED"), (method, path, answer.json)
    bad = [("PUT", f"/sessions/{handle}/data", [1, 2]), ("PUT", f"/sessions/{handle}/data", "text"),
           ("PATCH", f"/sessions/{handle}/access-token-payload", {"sub": "mallory", "plan": "x"}),
           ("PATCH", f"/sessions/{handle}/access-token-payload", None)]
    for method, path, body in bad:
        answer = api.simulate_request(method, path, json=body, headers=BEARER)
        assert answer.status_code == 400 and answer.json["message"], (method, path, body, answer.json)
    assert api.simulate_post("/users/u/sessions/revoke", params={"tenantId": "a/b"}, headers=BEARER).status_code == 400
    info = _info(handle)
    assert info.session_data_in_database == {"kept": True}
    assert info.custom_claims_in_access_token_payload == {"keep": 1, "iss": "http://testserver/auth"}


def test_a_wrong_key_is_401_without_detail_and_an_untrusted_peer_403(
        client: TestClient, api: falcon.testing.TestClient, core: DevCore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    handle = _login(client, "user-k").json()["handle"]
    asked = len(core.request_log())
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": SESSION_API_KEY},
                    {"Authorization": f"Basic {SESSION_API_KEY}"}, {"api-key": SESSION_API_KEY}):
        answer = api.simulate_post(f"/sessions/{handle}/revoke", headers=headers)
        assert (answer.status_code, answer.json) == (401, {"message": "unauthorised"}), headers
    for remote, headers in (("203.0.113.7", BEARER), ("127.0.0.1", {**BEARER, "X-Forwarded-For": "203.0.113.7"}),
                            ("127.0.0.1", {**BEARER, "Via": "1.1 proxy"})):
        answer = api.simulate_post(f"/sessions/{handle}/revoke", headers=headers, remote_addr=remote)
        assert (answer.status_code, answer.json) == (403, {"message": "forbidden"}), (remote, headers)
    assert len(core.request_log()) == asked  # the core was never asked
    assert _info(handle) is not None
    assert SESSION_API_KEY not in caplog.text


def test_a_core_outage_is_503_and_the_api_is_off_by_default(service: Callable[..., falcon.testing.TestClient]) -> None:
    down = service(core_url="http://127.0.0.1:9")
    for method, path, body in (("GET", "/sessions/h", None), ("PUT", "/sessions/h/data", {}),
                               ("PATCH", "/sessions/h/access-token-payload", {}), ("POST", "/sessions/h/revoke", None),
                               ("POST", "/users/u/sessions/revoke", None)):
        answer = down.simulate_request(method, path, json=body, headers=BEARER)
        assert (answer.status_code, answer.json) == (503, {"message": "core-unavailable"}), (method, path)
    off = service(session_api="false", session_api_key=None)
    assert off.simulate_get("/sessions/h", headers=BEARER).status_code == 404
