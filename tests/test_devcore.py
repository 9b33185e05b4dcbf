"""Tests for the dev core's HTTP API (falcon.testing) and its server helpers."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest
from falcon import testing

from forward_auth.devcore.minter import V2_HEADER, b64url_decode, sha256_hex
from forward_auth.devcore.server import create_devcore_app, serve_devcore, start_in_thread
from forward_auth.devcore.state import DevCore

API_KEY = "core-test-key"
ACCESS_VALIDITY = 600
REFRESH_VALIDITY = 3600
Client = testing.TestClient
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class FakeClock:
    """A settable clock, starting at the real time so PyJWT accepts fresh tokens."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def core(clock: FakeClock) -> DevCore:
    return DevCore(
        access_token_validity=ACCESS_VALIDITY,
        refresh_token_validity=REFRESH_VALIDITY,
        api_key=API_KEY,
        clock=clock,
    )


@pytest.fixture
def client(core: DevCore) -> Client:
    """A client sending the API key and ``cdi-version: 5.4``, like the SDK."""
    headers = {"api-key": API_KEY, "cdi-version": "5.4"}
    return testing.TestClient(create_devcore_app(core), headers=headers)


@pytest.fixture
def anonymous(core: DevCore) -> Client:
    return testing.TestClient(create_devcore_app(core))


def _ok(result: testing.Result) -> dict[str, Any]:
    assert result.status_code == 200, result.text
    return result.json


def _get(client: Client, path: str, **params: Any) -> dict[str, Any]:
    return _ok(client.simulate_get(path, params=params))


def _post(client: Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return _ok(client.simulate_post(path, json=body))


def _put(client: Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return _ok(client.simulate_put(path, json=body))


def _create(
    client: Client, user_id: str = "user-1", *, path: str = "/public/recipe/session", **fields: Any
) -> dict[str, Any]:
    defaults = {"userDataInJWT": {}, "userDataInDatabase": {}, "enableAntiCsrf": False}
    return _post(client, path, {"userId": user_id, **defaults, **fields})


def _verify(client: Client, token: str, **fields: Any) -> dict[str, Any]:
    defaults = {"doAntiCsrfCheck": False, "enableAntiCsrf": False, "checkDatabase": False}
    return _post(client, "/recipe/session/verify", {"accessToken": token, **defaults, **fields})


def _refresh(client: Client, refresh_token: str, **fields: Any) -> dict[str, Any]:
    body = {"refreshToken": refresh_token, "enableAntiCsrf": False, **fields}
    return _post(client, "/recipe/session/refresh", body)


def _mint(client: Client, **body: Any) -> str:
    return _post(client, "/dev/tokens", body)["token"]


def _claims(token: str) -> dict[str, Any]:
    return json.loads(b64url_decode(token.split(".")[1]))


def _header(token: str) -> dict[str, Any]:
    return json.loads(b64url_decode(token.split(".")[0]))


def _jwks_kids(client: Client) -> list[str]:
    return [key["kid"] for key in _get(client, "/.well-known/jwks.json")["keys"]]


# -- discovery, API key, cdi-version, input errors ------------------------------------


def test_apiversion_and_hello(client: Client, anonymous: Client) -> None:
    versions = _get(client, "/apiversion", apiDomain="http://a", websiteDomain="http://b")
    hello = anonymous.simulate_get("/hello")

    assert versions == {"versions": ["5.4"]}
    assert (hello.status_code, hello.text) == (200, "Hello")
    assert hello.headers["content-type"].startswith("text/plain")


def test_jwks_is_public_cacheable_and_usable(anonymous: Client, client: Client) -> None:
    result = anonymous.simulate_get("/appid-myapp/.well-known/jwks.json")
    token = _create(client)["accessToken"]["token"]

    assert result.status_code == 200
    assert result.headers["cache-control"] == "max-age=3600, must-revalidate"
    kids = [key["kid"] for key in result.json["keys"]]
    assert re.fullmatch(r"d-\d{13}", kids[0]) and re.fullmatch(f"s-{UUID}", kids[1])
    key = jwt.PyJWKSet.from_dict(result.json)[_header(token)["kid"]]
    assert jwt.decode(token, key, algorithms=["RS256"])["sub"] == "user-1"


def test_deprecated_jwks_needs_the_api_key(client: Client, anonymous: Client) -> None:
    deprecated = _get(client, "/recipe/jwt/jwks")

    assert deprecated["status"] == "OK"
    assert [key["kid"] for key in deprecated["keys"]] == _jwks_kids(client)
    assert anonymous.simulate_get("/recipe/jwt/jwks").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{}, {"api-key": "wrong"}, {"Authorization": "Bearer wrong"}],
)
def test_wrong_or_missing_api_key_is_refused(anonymous: Client, headers: dict[str, str]) -> None:
    result = anonymous.simulate_get("/apiversion", headers=headers)

    assert result.status_code == 401
    assert result.text == "Invalid API key"
    assert result.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("authorization", [f"Bearer {API_KEY}", f"bearer {API_KEY}", API_KEY])
def test_api_key_in_authorization_header(anonymous: Client, authorization: str) -> None:
    result = anonymous.simulate_get("/apiversion", headers={"Authorization": authorization})

    assert result.status_code == 200


def test_core_without_api_key_is_open(clock: FakeClock) -> None:
    open_client = testing.TestClient(create_devcore_app(DevCore(clock=clock)))

    assert open_client.simulate_get("/user/id", params={"userId": "x"}).status_code == 200


def test_unsupported_cdi_version(client: Client) -> None:
    refused = client.simulate_get("/user/id", params={"userId": "u"}, headers={"cdi-version": "2.21"})
    apiversion = client.simulate_get("/apiversion", headers={"cdi-version": "2.21"})

    assert (refused.status_code, refused.text) == (400, "cdi-version 2.21 not supported")
    assert apiversion.status_code == 200


def test_unknown_user(client: Client) -> None:
    assert _get(client, "/user/id", userId="u") == {"status": "UNKNOWN_USER_ID_ERROR"}
    assert client.simulate_get("/user/id").status_code == 400


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "Could not parse JSON body"),
        ("[1, 2]", "the request body must be a JSON object"),
        ("{}", 'missing field "userId"'),
        ('{"userId": 7}', 'field "userId" must be a string'),
        (
            '{"userId": "u", "userDataInJWT": {"sub": "x", "tId": "t"}, '
            '"userDataInDatabase": {}, "enableAntiCsrf": false}',
            "The user payload contains protected fields: sub, tId",
        ),
    ],
)
def test_bad_input_is_a_plain_400(client: Client, body: str, message: str) -> None:
    result = client.simulate_post(
        "/public/recipe/session", body=body, headers={"content-type": "application/json"}
    )

    assert result.status_code == 400
    assert result.headers["content-type"].startswith("text/plain")
    assert result.text.startswith(message)


# -- create ---------------------------------------------------------------------------


def test_create_session_answer_and_token(client: Client, core: DevCore, clock: FakeClock) -> None:
    created = _create(client, userDataInJWT={"role": "admin"}, userDataInDatabase={"plan": "pro"})
    token = created["accessToken"]["token"]
    refresh_token = created["refreshToken"]["token"]
    now_ms = int(clock.now * 1000)

    assert re.fullmatch(UUID, created["session"]["handle"])
    assert created["session"] == {
        "handle": created["session"]["handle"],
        "userId": "user-1",
        "recipeUserId": "user-1",
        "userDataInJWT": {"role": "admin"},
        "tenantId": "public",
    }
    assert created["accessToken"]["createdTime"] == now_ms
    assert created["accessToken"]["expiry"] == now_ms + ACCESS_VALIDITY * 1000
    assert created["refreshToken"]["expiry"] == now_ms + REFRESH_VALIDITY * 1000
    assert "antiCsrfToken" not in created
    kid = _jwks_kids(client)[0]
    assert _header(token) == {"alg": "RS256", "typ": "JWT", "kid": kid, "version": "5"}
    assert _claims(token) == {
        "sub": "user-1",
        "exp": (now_ms + ACCESS_VALIDITY * 1000) // 1000,
        "iat": now_ms // 1000,
        "sessionHandle": created["session"]["handle"],
        "refreshTokenHash1": sha256_hex(refresh_token),
        "parentRefreshTokenHash1": None,
        "antiCsrfToken": None,
        "tId": "public",
        "rsub": "user-1",
        "role": "admin",
    }


def test_create_in_a_tenant_under_an_app_prefix(client: Client) -> None:
    created = _create(client, path="/appid-app1/tenant1/recipe/session")

    assert re.fullmatch(f"{UUID}_tenant1", created["session"]["handle"])
    assert created["session"]["tenantId"] == "tenant1"
    assert _claims(created["accessToken"]["token"])["tId"] == "tenant1"


def test_create_with_anti_csrf_and_static_key(client: Client) -> None:
    created = _create(client, enableAntiCsrf=True, useDynamicSigningKey=False)
    token = created["accessToken"]["token"]

    assert re.fullmatch(UUID, created["antiCsrfToken"])
    assert _claims(token)["antiCsrfToken"] == created["antiCsrfToken"]
    assert _header(token)["kid"].startswith("s-")
    assert _header(token)["kid"] in _jwks_kids(client)


# -- verify ---------------------------------------------------------------------------


def test_verify_a_fresh_token_without_a_new_one(client: Client) -> None:
    created = _create(client, userDataInJWT={"role": "admin"})

    verified = _verify(client, created["accessToken"]["token"], checkDatabase=True)

    assert verified == {"status": "OK", "session": created["session"]}


@pytest.mark.parametrize(
    ("mint", "message"),
    [
        ({"key": "foreign"}, "Key not found"),
        ({"claims": {"rsub": None}}, "Access token does not contain all the required claims"),
        ({"claims": {"sub": 12}}, "Access token claim 'sub' is missing or has the wrong type"),
        ({"header": {"version": 5}}, "JWT header mismatch"),
        ({"header": {"version": "2"}}, "JWT header mismatch"),
        ({"header": {"typ": None}}, "JWT header mismatch"),
        ({"version": 2, "key": "foreign"}, "JWT verification failed"),
    ],
)
def test_verify_refuses_bad_tokens(client: Client, mint: dict[str, Any], message: str) -> None:
    verified = _verify(client, _mint(client, **mint))

    assert verified == {"status": "TRY_REFRESH_TOKEN", "message": message}


def test_verify_refuses_a_foreign_signature_under_a_known_kid(client: Client) -> None:
    token = _mint(client, key="foreign", header={"kid": _jwks_kids(client)[0]})

    failure = {"status": "TRY_REFRESH_TOKEN", "message": "JWT verification failed"}
    assert _verify(client, token) == failure


def test_verify_refuses_garbage(client: Client) -> None:
    assert _verify(client, "not-a-jwt")["status"] == "TRY_REFRESH_TOKEN"
    assert _verify(client, "a.b.c")["status"] == "TRY_REFRESH_TOKEN"


def test_verify_refuses_expired_tokens(client: Client, clock: FakeClock) -> None:
    token = _create(client)["accessToken"]["token"]

    clock.advance(ACCESS_VALIDITY + 1)

    assert _verify(client, token) == {"status": "TRY_REFRESH_TOKEN", "message": "Access token expired"}


def test_verify_accepts_older_versions_and_a_missing_version_header(client: Client) -> None:
    handle = _create(client, "user-v", userDataInJWT={"role": "admin"})["session"]["handle"]

    mints: list[dict[str, Any]] = [
        {"version": 3},
        {"version": 4},
        {"header": {"version": None}},
        {"version": 2},
        {"version": 2, "key": "static"},
    ]
    for mint in mints:
        verified = _verify(client, _mint(client, sessionHandle=handle, **mint), checkDatabase=True)
        assert verified["status"] == "OK", (mint, verified)
        assert verified["session"]["userId"] == "user-v"
        assert verified["session"]["userDataInJWT"] == {"role": "admin"}
        assert "accessToken" not in verified


def test_verify_anti_csrf(client: Client) -> None:
    created = _create(client, enableAntiCsrf=True)
    token = created["accessToken"]["token"]
    checked = {"doAntiCsrfCheck": True, "enableAntiCsrf": True}
    failure = {"status": "TRY_REFRESH_TOKEN", "message": "anti-csrf check failed"}

    assert _verify(client, token, **checked) == failure
    assert _verify(client, token, antiCsrfToken="wrong", **checked) == failure
    assert _verify(client, token, antiCsrfToken=created["antiCsrfToken"], **checked)["status"] == "OK"
    assert _verify(client, token, doAntiCsrfCheck=False, enableAntiCsrf=True)["status"] == "OK"


def test_verify_with_database_check_sees_revocation(client: Client) -> None:
    created = _create(client)
    token = created["accessToken"]["token"]
    _post(client, "/recipe/session/remove", {"sessionHandles": [created["session"]["handle"]]})

    assert _verify(client, token)["status"] == "OK"
    assert _verify(client, token, checkDatabase=True) == {
        "status": "UNAUTHORISED",
        "message": "Either the session has ended or has been blacklisted",
    }


def test_verify_with_database_check_reissues_an_outdated_payload(
    client: Client, clock: FakeClock
) -> None:
    created = _create(client, userDataInJWT={"role": "user"})
    token = created["accessToken"]["token"]
    handle = created["session"]["handle"]
    _put(client, "/recipe/jwt/data", {"sessionHandle": handle, "userDataInJWT": {"role": "admin"}})
    clock.advance(5)

    verified = _verify(client, token, checkDatabase=True)

    new_token = verified["accessToken"]["token"]
    assert verified["session"]["userDataInJWT"] == {"role": "admin"}
    assert _claims(new_token)["role"] == "admin"
    assert _claims(new_token)["refreshTokenHash1"] == _claims(token)["refreshTokenHash1"]
    assert _claims(new_token)["exp"] == _claims(token)["exp"] + 5
    assert "accessToken" not in _verify(client, token)  # without the check, nothing changes


def test_verify_promotes_a_refreshed_token(client: Client) -> None:
    created = _create(client)
    refreshed = _refresh(client, created["refreshToken"]["token"])
    child = refreshed["accessToken"]["token"]

    verified = _verify(client, child)

    promoted = verified["accessToken"]["token"]
    assert _claims(promoted)["parentRefreshTokenHash1"] is None
    assert _claims(promoted)["refreshTokenHash1"] == _claims(child)["refreshTokenHash1"]
    assert "accessToken" in _verify(client, child)  # the lineage is current, so still reissued
    assert "accessToken" not in _verify(client, promoted)
    # The first refresh token is now superseded.
    assert _refresh(client, created["refreshToken"]["token"])["status"] == "TOKEN_THEFT_DETECTED"


def test_verify_of_a_refreshed_token_needs_the_session(client: Client) -> None:
    created = _create(client)
    child = _refresh(client, created["refreshToken"]["token"])["accessToken"]["token"]
    _post(client, "/recipe/session/remove", {"userId": "user-1"})

    assert _verify(client, child) == {"status": "UNAUTHORISED", "message": "Session missing in db"}


def test_verify_leaves_a_token_from_another_lineage_alone(client: Client) -> None:
    handle = _create(client)["session"]["handle"]
    token = _mint(client, sessionHandle=handle, claims={"parentRefreshTokenHash1": "unrelated"})

    verified = _verify(client, token)

    assert verified["status"] == "OK"
    assert verified["session"]["handle"] == handle
    assert "accessToken" not in verified


# -- refresh --------------------------------------------------------------------------


def test_refresh_rotates_lazily(client: Client) -> None:
    created = _create(client, userDataInJWT={"role": "admin"})
    first = created["refreshToken"]["token"]

    refreshed = _refresh(client, first)

    second = refreshed["refreshToken"]["token"]
    child = refreshed["accessToken"]["token"]
    assert second != first
    assert refreshed["session"] == created["session"]
    assert _claims(child)["parentRefreshTokenHash1"] == sha256_hex(first)
    assert _claims(child)["refreshTokenHash1"] == sha256_hex(second)
    assert _claims(child)["role"] == "admin"
    assert _refresh(client, first)["status"] == "OK"  # still current until the child is used


def test_refresh_detects_reuse_after_the_child_was_used(client: Client) -> None:
    created = _create(client)
    first = created["refreshToken"]["token"]
    second = _refresh(client, first)["refreshToken"]["token"]
    _refresh(client, second)

    stolen = _refresh(client, first)

    assert stolen["status"] == "TOKEN_THEFT_DETECTED"
    handle = created["session"]["handle"]
    assert stolen["session"] == {"handle": handle, "userId": "user-1", "recipeUserId": "user-1"}
    assert stolen["message"]


def test_refresh_refuses_unknown_and_revoked_tokens(client: Client) -> None:
    created = _create(client)
    _post(client, "/recipe/session/remove", {"sessionHandles": [created["session"]["handle"]]})

    assert _refresh(client, "made-up") == {"status": "UNAUTHORISED", "message": "Invalid refresh token"}
    assert _refresh(client, created["refreshToken"]["token"])["status"] == "UNAUTHORISED"


def test_refresh_refuses_an_expired_session(client: Client, clock: FakeClock) -> None:
    refresh_token = _create(client)["refreshToken"]["token"]

    clock.advance(REFRESH_VALIDITY + 1)

    assert _refresh(client, refresh_token)["status"] == "UNAUTHORISED"


def test_refresh_checks_the_anti_csrf_token(client: Client) -> None:
    created = _create(client, enableAntiCsrf=True)
    refresh_token = created["refreshToken"]["token"]

    wrong = _refresh(client, refresh_token, enableAntiCsrf=True, antiCsrfToken="wrong")
    right = _refresh(client, refresh_token, enableAntiCsrf=True, antiCsrfToken=created["antiCsrfToken"])

    assert wrong == {"status": "UNAUTHORISED", "message": "Anti CSRF token missing, or not matching"}
    assert right["antiCsrfToken"] not in (None, created["antiCsrfToken"])
    assert _claims(right["accessToken"]["token"])["antiCsrfToken"] == right["antiCsrfToken"]


def test_refresh_can_switch_to_the_static_key(client: Client) -> None:
    refresh_token = _create(client)["refreshToken"]["token"]

    refreshed = _refresh(client, refresh_token, useDynamicSigningKey=False)

    assert _header(refreshed["accessToken"]["token"])["kid"].startswith("s-")


def test_promotion_extends_the_session(client: Client, clock: FakeClock) -> None:
    created = _create(client)
    handle = created["session"]["handle"]
    child = _refresh(client, created["refreshToken"]["token"])["accessToken"]["token"]
    expiry_before = _get(client, "/recipe/session", sessionHandle=handle)["expiry"]
    clock.advance(10)

    _verify(client, child)

    expiry_after = _get(client, "/recipe/session", sessionHandle=handle)["expiry"]
    assert expiry_after == expiry_before + 10_000


# -- session management ---------------------------------------------------------------


def test_session_information_and_data(client: Client, clock: FakeClock) -> None:
    created = _create(client, userDataInJWT={"role": "admin"}, userDataInDatabase={"plan": "pro"})
    handle = created["session"]["handle"]
    _put(client, "/recipe/session/data", {"sessionHandle": handle, "userDataInDatabase": {"plan": "x"}})

    info = _get(client, "/recipe/session", sessionHandle=handle)

    assert info == {
        "status": "OK",
        "sessionHandle": handle,
        "userId": "user-1",
        "recipeUserId": "user-1",
        "userDataInDatabase": {"plan": "x"},
        "expiry": int(clock.now * 1000) + REFRESH_VALIDITY * 1000,
        "userDataInJWT": {"role": "admin"},
        "timeCreated": int(clock.now * 1000),
        "tenantId": "public",
    }


def test_unknown_sessions_are_unauthorised(client: Client) -> None:
    unauthorised = {"status": "UNAUTHORISED", "message": "Session does not exist."}

    assert _get(client, "/recipe/session", sessionHandle="nope") == unauthorised
    data = {"sessionHandle": "nope", "userDataInDatabase": {}}
    payload = {"sessionHandle": "nope", "userDataInJWT": {}}
    assert _put(client, "/recipe/session/data", data) == unauthorised
    assert _put(client, "/recipe/jwt/data", payload) == unauthorised


def test_list_and_remove_sessions_by_user_and_tenant(client: Client) -> None:
    public = _create(client, "user-2")["session"]["handle"]
    tenant = _create(client, "user-2", path="/tenant1/recipe/session")["session"]["handle"]
    other = _create(client, "user-3")["session"]["handle"]

    def listed(path: str, **params: Any) -> list[str]:
        return _get(client, path, userId="user-2", **params)["sessionHandles"]

    assert sorted(listed("/recipe/session/user")) == sorted([public, tenant])
    assert listed("/tenant1/recipe/session/user", fetchAcrossAllTenants="false") == [tenant]
    in_tenant = {"userId": "user-2", "revokeAcrossAllTenants": False}
    removed = _post(client, "/tenant1/recipe/session/remove", in_tenant)
    assert removed["sessionHandlesRevoked"] == [tenant]
    assert listed("/recipe/session/user") == [public]
    everywhere = _post(client, "/recipe/session/remove", {"userId": "user-2"})
    assert everywhere["sessionHandlesRevoked"] == [public]
    by_handle = _post(client, "/recipe/session/remove", {"sessionHandles": [other, "nope", other]})
    assert by_handle == {"status": "OK", "sessionHandlesRevoked": [other]}


@pytest.mark.parametrize(
    "body",
    [{}, {"userId": "u", "sessionHandles": ["h"]}, {"sessionHandles": [1]}],
)
def test_remove_needs_exactly_one_selector(client: Client, body: dict[str, Any]) -> None:
    assert client.simulate_post("/recipe/session/remove", json=body).status_code == 400


def test_regenerate_keeps_expiry_and_lineage(client: Client, clock: FakeClock) -> None:
    created = _create(client)
    child = _refresh(client, created["refreshToken"]["token"])["accessToken"]["token"]
    clock.advance(30)

    body = {"accessToken": child, "userDataInJWT": {"theme": "dark"}}
    regenerated = _post(client, "/recipe/session/regenerate", body)

    token = regenerated["accessToken"]["token"]
    assert regenerated["session"]["userDataInJWT"] == {"theme": "dark"}
    assert _claims(token)["theme"] == "dark"
    for claim in ("exp", "refreshTokenHash1", "parentRefreshTokenHash1"):
        assert _claims(token)[claim] == _claims(child)[claim]
    info = _get(client, "/recipe/session", sessionHandle=created["session"]["handle"])
    assert info["userDataInJWT"] == {"theme": "dark"}


def test_regenerate_an_expired_token_only_stores_the_payload(client: Client, clock: FakeClock) -> None:
    token = _create(client)["accessToken"]["token"]
    clock.advance(ACCESS_VALIDITY + 1)

    body = {"accessToken": token, "userDataInJWT": {"a": 1}}
    regenerated = _post(client, "/recipe/session/regenerate", body)

    assert regenerated["status"] == "OK"
    assert "accessToken" not in regenerated
    assert regenerated["session"]["userDataInJWT"] == {"a": 1}


def test_regenerate_refuses_forged_tokens_and_ended_sessions(client: Client) -> None:
    forged = _mint(client, key="foreign", header={"kid": _jwks_kids(client)[0]})
    orphan = _mint(client)

    for token in (forged, orphan):
        body = {"accessToken": token, "userDataInJWT": {}}
        result = _post(client, "/recipe/session/regenerate", body)
        assert result["status"] == "UNAUTHORISED"
        assert result["message"]


# -- dev endpoints --------------------------------------------------------------------


def test_rotate_keys_adds_a_signing_key(client: Client, anonymous: Client) -> None:
    old_token = _create(client)["accessToken"]["token"]
    old_kids = _jwks_kids(client)

    first = _post(client, "/dev/keys/rotate", {})["kid"]
    second = _post(client, "/dev/keys/rotate", {})["kid"]  # same clock millisecond

    assert first != second
    assert _jwks_kids(client) == [second, first, *old_kids]
    assert _header(_create(client)["accessToken"]["token"])["kid"] == second
    assert _verify(client, old_token)["status"] == "OK"
    assert anonymous.simulate_post("/dev/keys/rotate").status_code == 401


def test_dev_tokens_key_kinds(client: Client) -> None:
    kids = _jwks_kids(client)

    assert _header(_mint(client))["kid"] == kids[0]
    assert _header(_mint(client, key="static"))["kid"] == kids[1]
    assert _header(_mint(client, key="foreign"))["kid"] not in kids


def test_dev_tokens_default_claims_and_overrides(client: Client) -> None:
    default = _claims(_mint(client))
    v3 = _claims(_mint(client, version=3, claims={"sub": "someone", "antiCsrfToken": None, "x": [1]}))

    assert default["sub"] == default["rsub"] == "dev-user"
    assert default["exp"] - default["iat"] == ACCESS_VALIDITY
    assert default["parentRefreshTokenHash1"] is None
    assert v3["sub"] == "someone" and v3["x"] == [1]
    assert not {"tId", "rsub", "antiCsrfToken"} & v3.keys()


def test_dev_tokens_v2_from_a_session(client: Client) -> None:
    created = _create(client, "user-l", userDataInJWT={"role": "admin"})

    token = _mint(client, version=2, sessionHandle=created["session"]["handle"])

    assert token.split(".")[0] == V2_HEADER
    payload = json.loads(base64.b64decode(token.split(".")[1]))
    assert (payload["userId"], payload["userData"]) == ("user-l", {"role": "admin"})


@pytest.mark.parametrize(
    "body",
    [
        {"version": 7},
        {"version": "5"},
        {"version": True},
        {"key": "nope"},
        {"version": 2, "header": {"kid": "x"}},
        {"sessionHandle": "no-such-session"},
        {"claims": ["not", "an", "object"]},
    ],
)
def test_dev_tokens_bad_requests(client: Client, body: dict[str, Any]) -> None:
    result = client.simulate_post("/dev/tokens", json=body)

    assert result.status_code == 400
    assert result.text


def test_dev_sessions_shortcut(client: Client) -> None:
    body = {"userId": "demo", "tenantId": "t2", "enableAntiCsrf": True}
    created = _post(client, "/dev/sessions", body)

    assert set(created) == {"status", "session", "accessToken", "refreshToken", "antiCsrfToken"}
    assert created["session"]["tenantId"] == "t2"
    assert _verify(client, created["accessToken"]["token"], checkDatabase=True)["status"] == "OK"
    assert client.simulate_post("/dev/sessions", json={}).status_code == 400


def test_request_log_keeps_original_paths(client: Client, core: DevCore) -> None:
    _create(client, path="/appid-a/public/recipe/session")

    assert core.request_log()[-1] == ("POST", "/appid-a/public/recipe/session")


# -- construction and servers ---------------------------------------------------------


def test_validities_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DevCore(access_token_validity=0)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.com"])
def test_servers_refuse_non_loopback_addresses(host: str) -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        serve_devcore(host, 0, access_token_validity=60, api_key=None, allow_remote=False)
    with pytest.raises(ValueError, match="non-loopback"):
        start_in_thread(host)


def test_start_in_thread_serves_over_http_until_stopped() -> None:
    core, base_url, stop = start_in_thread(api_key=API_KEY)
    try:
        def create(index: int) -> str:
            request = urllib.request.Request(
                f"{base_url}/dev/sessions",
                data=json.dumps({"userId": f"user-{index % 3}"}).encode(),
                headers={"api-key": API_KEY, "content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.load(response)["session"]["handle"]

        with ThreadPoolExecutor(max_workers=8) as pool:
            handles = list(pool.map(create, range(24)))
        with urllib.request.urlopen(f"{base_url}/hello", timeout=5) as response:
            assert response.read() == b"Hello"
    finally:
        stop()

    assert base_url.startswith("http://127.0.0.1:")
    assert len(set(handles)) == 24
    assert len(core.session_handles_for_user("user-0", None)["sessionHandles"]) == 8
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base_url}/hello", timeout=2)


def test_dev_requests_lists_what_the_core_received(client: Client) -> None:
    _create(client)
    client.simulate_get("/.well-known/jwks.json")

    answer = client.simulate_get("/dev/requests").json
    seen = answer["requests"]

    assert answer["counts"]["POST /public/recipe/session"] >= 1
    assert answer["counts"]["GET /dev/requests"] == sum(pair == ["GET", "/dev/requests"] for pair in seen)
    assert seen[-3:] == [["POST", "/public/recipe/session"], ["GET", "/.well-known/jwks.json"], ["GET", "/dev/requests"]]
