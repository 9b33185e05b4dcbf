"""The Falcon app through falcon.testing: statuses, bodies, cookie clearing, identity headers."""

from __future__ import annotations

import base64
import json
import time

import pytest
from conftest import FakeCore, v2, v5

from forward_auth.decisions import JsonFormatter
from forward_auth.devcore.minter import SigningKey


def cookie(token: str, **more: str) -> dict[str, str]:
    pairs = [f"sAccessToken={token}"] + [f"{k}={v}" for k, v in more.items()]
    return {"Cookie": "; ".join(pairs)}


def test_valid_cookie_session_gets_200_and_identity_headers(client, key: SigningKey) -> None:
    result = client.simulate_get("/verify", headers=cookie(v5(key, tId="t1", rsub="r1")))
    assert result.status_code == 200
    assert result.headers["X-User-Id"] == "user-1"
    assert result.headers["X-Recipe-User-Id"] == "r1"
    assert result.headers["X-Tenant-Id"] == "t1"
    assert result.headers["X-Session-Handle"] == "handle-1"
    assert int(result.headers["X-Session-Expiry"]) > time.time() * 1000
    assert int(result.headers["X-Session-Created"]) < time.time() * 1000
    assert "set-cookie" not in result.headers


def test_the_200_body_names_the_session_in_json(client, key: SigningKey) -> None:
    result = client.simulate_get("/verify", headers=cookie(v5(key, sub="usér-ü", tId="t1")))
    assert result.headers["content-type"] == "application/json"
    assert result.json == {"message": "ok", "userId": "usér-ü", "sessionHandle": "handle-1", "tenantId": "t1"}
    assert b" " not in result.content  # compact, as every other answer
    assert result.headers["X-User-Id"] == "us%C3%A9r-%C3%BC"


def test_header_names_are_read_case_insensitively_as_falcon_does(client, key: SigningKey) -> None:
    raw = v5(key)
    for name in ("authorization", "AUTHORIZATION", "Authorization"):
        assert client.simulate_get("/verify", headers={name: f"Bearer {raw}"}).status_code == 200


def test_bearer_header_session(client, key: SigningKey) -> None:
    result = client.simulate_get("/verify", headers={"Authorization": "Bearer " + v5(key)})
    assert result.status_code == 200 and result.headers["X-User-Id"] == "user-1"


def test_header_token_wins_over_cookie(client, key: SigningKey) -> None:
    headers = {"Authorization": "Bearer " + v5(key, sub="from-header"), **cookie(v5(key, sub="from-cookie"))}
    assert client.simulate_get("/verify", headers=headers).headers["X-User-Id"] == "from-header"


@pytest.mark.parametrize("authorization", ["bearer x", "Bearer\tx", "Basic abc"])
def test_other_authorization_schemes_are_not_tokens(client, authorization: str) -> None:
    result = client.simulate_get("/verify", headers={"Authorization": authorization})
    assert result.status_code == 401 and result.json == {"message": "unauthorised"}


def test_no_token_is_unauthorised_without_clearing(client) -> None:
    result = client.simulate_get("/verify")
    assert (result.status_code, result.json) == (401, {"message": "unauthorised"})
    assert "set-cookie" not in result.headers and "front-token" not in result.headers
    assert result.headers["X-Forward-Auth-Reason"] == "no-token"


def test_malformed_token_is_unauthorised_without_clearing(client) -> None:
    result = client.simulate_get("/verify", headers=cookie("not.a.jwt"))
    assert (result.status_code, result.json) == (401, {"message": "unauthorised"})
    assert result.headers["X-Forward-Auth-Reason"] == "malformed-token"


def test_expired_token_is_try_refresh(client, key: SigningKey) -> None:
    result = client.simulate_get("/verify", headers=cookie(v5(key, exp=int(time.time()) - 1)))
    assert (result.status_code, result.json) == (401, {"message": "try refresh token"})
    assert result.headers["X-Forward-Auth-Reason"] == "expired"
    assert "set-cookie" not in result.headers


def test_unknown_kid_refetches_once_then_try_refresh(client, fake_core: FakeCore, foreign_key: SigningKey,
                                                     key: SigningKey) -> None:
    assert client.simulate_get("/verify", headers=cookie(v5(key))).status_code == 200
    fetched = fake_core.count("jwks.json")
    time.sleep(0.6)
    result = client.simulate_get("/verify", headers=cookie(v5(foreign_key)))
    assert (result.status_code, result.headers["X-Forward-Auth-Reason"]) == (401, "unknown-kid")
    assert fake_core.count("jwks.json") == fetched + 1
    client.simulate_get("/verify", headers=cookie(v5(foreign_key)))
    assert fake_core.count("jwks.json") == fetched + 1  # within the cooldown: no refetch


def test_static_key_is_refused_unless_configured(make_client, static_key: SigningKey, key: SigningKey) -> None:
    assert make_client().simulate_get("/verify", headers=cookie(v5(static_key))).json == {"message": "try refresh token"}
    static_only = make_client(use_static_signing_key="true")
    assert static_only.simulate_get("/verify", headers=cookie(v5(static_key))).status_code == 200
    assert static_only.simulate_get("/verify", headers=cookie(v5(key))).status_code == 401


def test_duplicate_access_cookie_is_try_refresh(client, key: SigningKey) -> None:
    headers = {"Cookie": f"sAccessToken={v5(key)}; sAccessToken={v5(key, sub='other')}"}
    result = client.simulate_get("/verify", headers=headers)
    assert (result.status_code, result.json) == (401, {"message": "try refresh token"})


def test_legacy_id_refresh_cookie_is_try_refresh_even_with_a_valid_header(client, key: SigningKey) -> None:
    headers = {"Authorization": "Bearer " + v5(key), "Cookie": "sIdRefreshToken=abc"}
    assert client.simulate_get("/verify", headers=headers).json == {"message": "try refresh token"}


def test_optional_session(client, key: SigningKey) -> None:
    result = client.simulate_get("/verify", params={"sessionRequired": "false"})
    assert (result.status_code, result.json) == (200, {"message": "no session"})
    assert "X-User-Id" not in result.headers
    with_session = client.simulate_get("/verify", params={"sessionRequired": "false"}, headers=cookie(v5(key)))
    assert with_session.headers["X-User-Id"] == "user-1"
    expired = client.simulate_get("/verify", params={"sessionRequired": "false"},
                                  headers=cookie(v5(key, exp=int(time.time()) - 1)))
    assert expired.status_code == 401  # an optional session still refreshes a bad token, as the SDK


def test_bad_policy_parameter_is_400(client) -> None:
    result = client.simulate_get("/verify", params={"sessionRequired": "maybe"})
    assert result.status_code == 400 and "sessionRequired" in result.json["message"]


class TestAntiCsrf:
    def test_custom_header_mode_uses_the_original_method(self, make_client, key: SigningKey) -> None:
        client = make_client(anti_csrf="VIA_CUSTOM_HEADER")
        post = {"X-Forwarded-Method": "POST", **cookie(v5(key))}
        assert client.simulate_get("/verify", headers=post).json == {"message": "try refresh token"}
        assert client.simulate_get("/verify", headers={**post, "rid": "anti-csrf"}).status_code == 200
        assert client.simulate_get("/verify", headers=cookie(v5(key))).status_code == 200  # GET is exempt
        nginx = {"X-Original-Method": "DELETE", **cookie(v5(key))}
        assert client.simulate_get("/verify", headers=nginx).status_code == 401
        assert client.simulate_post("/verify", headers=cookie(v5(key))).status_code == 401  # direct curl -X POST

    def test_header_mode_tokens_are_exempt(self, make_client, key: SigningKey) -> None:
        client = make_client(anti_csrf="VIA_CUSTOM_HEADER")
        headers = {"X-Forwarded-Method": "POST", "Authorization": "Bearer " + v5(key)}
        assert client.simulate_get("/verify", headers=headers).status_code == 200

    def test_via_token(self, make_client, key: SigningKey) -> None:
        client = make_client(anti_csrf="VIA_TOKEN")
        token = v5(key, antiCsrfToken="csrf-1")
        post = {"X-Forwarded-Method": "POST", **cookie(token)}
        assert client.simulate_get("/verify", headers=post).headers["X-Forward-Auth-Reason"] == "csrf-header-missing"
        assert client.simulate_get("/verify", headers={**post, "anti-csrf": "wrong"}).status_code == 401
        assert client.simulate_get("/verify", headers={**post, "anti-csrf": "csrf-1"}).status_code == 200
        no_claim = {"X-Forwarded-Method": "POST", "anti-csrf": "x", **cookie(v5(key))}
        assert client.simulate_get("/verify", headers=no_claim).headers["X-Forward-Auth-Reason"] == "csrf-no-claim"

    def test_query_parameter_forces_or_skips_the_check(self, make_client, key: SigningKey) -> None:
        client = make_client(anti_csrf="VIA_CUSTOM_HEADER")
        assert client.simulate_get("/verify", params={"antiCsrf": "true"}, headers=cookie(v5(key))).status_code == 401
        skip = {"X-Forwarded-Method": "POST", **cookie(v5(key))}
        assert client.simulate_get("/verify", params={"antiCsrf": "false"}, headers=skip).status_code == 200

    def test_global_switch_turns_every_check_off(self, make_client, key: SigningKey) -> None:
        client = make_client(anti_csrf="VIA_TOKEN", enable_anti_csrf="false")
        assert client.simulate_get("/verify", headers={"X-Forwarded-Method": "POST", **cookie(v5(key))}).status_code == 200


class TestCore:
    def test_parent_hash_goes_to_the_core_and_the_new_token_reaches_the_browser(
        self, client, fake_core: FakeCore, key: SigningKey
    ) -> None:
        fresh = v5(key, parentRefreshTokenHash1=None)
        fake_core.verify_answer = {
            "status": "OK",
            "session": {"handle": "handle-1", "userId": "user-1", "recipeUserId": "user-1", "userDataInJWT": {},
                        "tenantId": "public"},
            "accessToken": {"token": fresh, "expiry": 4102444800000, "createdTime": 1700000000000},
        }
        result = client.simulate_get("/verify", headers=cookie(v5(key, parentRefreshTokenHash1="abc")))
        assert result.status_code == 200
        assert result.cookies["sAccessToken"].value == fresh
        front = json.loads(base64.b64decode(result.headers["front-token"]))
        assert front["uid"] == "user-1" and front["ate"] == 4102444800000 and front["up"]["sub"] == "user-1"
        assert result.headers["X-Session-Expiry"] == "4102444800000"
        sent = fake_core.requests[-1][2]
        assert sent["checkDatabase"] is False and sent["doAntiCsrfCheck"] is False

    def test_promotion_in_header_mode_uses_st_access_token(self, client, fake_core: FakeCore, key: SigningKey) -> None:
        fresh = v5(key)
        fake_core.verify_answer = {
            "status": "OK", "session": {"handle": "h", "userId": "user-1", "recipeUserId": "user-1",
                                        "userDataInJWT": {}, "tenantId": "public"},
            "accessToken": {"token": fresh, "expiry": 1, "createdTime": 1},
        }
        result = client.simulate_get("/verify", headers={"Authorization": "Bearer " + v5(key, parentRefreshTokenHash1="p")})
        assert result.headers["st-access-token"] == fresh and "set-cookie" not in result.headers

    def test_revoked_session_is_unauthorised_with_clearing(self, make_client, fake_core: FakeCore,
                                                           key: SigningKey) -> None:
        fake_core.verify_answer = {"status": "UNAUTHORISED", "message": "Either the session has ended or has been blacklisted"}
        result = make_client(check_database="true").simulate_get("/verify", headers=cookie(v5(key)))
        assert (result.status_code, result.json) == (401, {"message": "unauthorised"})
        assert result.cookies["sAccessToken"].value == "" and result.cookies["sRefreshToken"].value == ""
        assert result.cookies["sRefreshToken"].path == "/auth/session/refresh"
        assert result.headers["front-token"] == "remove"
        assert result.headers["st-access-token"] == "" and result.headers["st-refresh-token"] == ""
        assert "1970" in result.headers["set-cookie"]
        assert result.headers["access-control-expose-headers"] == "front-token,st-access-token,st-refresh-token"

    def test_check_database_query_parameter(self, client, fake_core: FakeCore, key: SigningKey) -> None:
        fake_core.verify_answer = {"status": "UNAUTHORISED", "message": "gone"}
        assert client.simulate_get("/verify", headers=cookie(v5(key))).status_code == 200
        assert client.simulate_get("/verify", params={"checkDatabase": "true"}, headers=cookie(v5(key))).status_code == 401

    def test_core_try_refresh(self, make_client, fake_core: FakeCore, key: SigningKey) -> None:
        fake_core.verify_answer = {"status": "TRY_REFRESH_TOKEN", "message": "x"}
        result = make_client(check_database="true").simulate_get("/verify", headers=cookie(v5(key)))
        assert result.json == {"message": "try refresh token"} and "set-cookie" not in result.headers

    def test_core_down_is_503_never_401(self, make_client, fake_core: FakeCore, key: SigningKey) -> None:
        client = make_client(check_database="true")
        fake_core.down = True
        result = client.simulate_get("/verify", headers=cookie(v5(key)))
        assert result.status_code == 503 and result.headers["Retry-After"] == "1"

    def test_core_garbage_is_502(self, make_client, fake_core: FakeCore, key: SigningKey) -> None:
        fake_core.verify_answer = {"status": "OK", "session": "nope"}
        assert make_client(check_database="true").simulate_get("/verify", headers=cookie(v5(key))).status_code == 502


def test_keys_unavailable_is_503_not_401(client, fake_core: FakeCore, key: SigningKey) -> None:
    fake_core.down = True
    result = client.simulate_get("/verify", headers=cookie(v5(key)))
    assert result.status_code == 503 and result.headers["X-Forward-Auth-Reason"] == "keys-unavailable"


def test_v2_token_verifies_locally_without_the_core(client, fake_core: FakeCore, key: SigningKey) -> None:
    result = client.simulate_get("/verify", headers=cookie(v2(key)))
    assert result.status_code == 200 and result.headers["X-User-Id"] == "legacy-user"
    assert fake_core.count("/recipe/session/verify") == 0


class TestLegacyProfile:
    def test_no_id_refresh_token_is_440_with_clearing(self, make_client, key: SigningKey) -> None:
        result = make_client(legacy="true").simulate_get("/verify", headers=cookie(v5(key)))
        assert (result.status_code, result.json) == (440, {"message": "unauthorised"})
        assert {"sAccessToken", "sRefreshToken", "sIdRefreshToken"} <= set(result.cookies)

    def test_id_refresh_without_access_token_is_try_refresh(self, make_client) -> None:
        result = make_client(legacy="true").simulate_get("/verify", headers={"Cookie": "sIdRefreshToken=x"})
        assert (result.status_code, result.json) == (440, {"message": "try refresh token"})

    def test_both_present_verifies(self, make_client, key: SigningKey) -> None:
        result = make_client(legacy="true").simulate_get("/verify", headers=cookie(v5(key), sIdRefreshToken="x"))
        assert result.status_code == 200


class TestJsonApi:
    def test_get_session_with_legacy_arguments(self, client, key: SigningKey) -> None:
        result = client.simulate_post("/sessions/verify", json={"accessToken": v2(key), "doAntiCsrfCheck": False})
        assert result.status_code == 200
        assert result.json["session"]["userId"] == "legacy-user"
        assert result.json["session"]["userDataInJWT"] == {"role": "admin"}

    def test_missing_access_token_is_try_refresh(self, client) -> None:
        assert client.simulate_post("/sessions/verify", json={}).json == {"message": "try refresh token"}

    def test_legacy_profile_needs_id_refresh_token(self, make_client, key: SigningKey) -> None:
        result = make_client(legacy="true").simulate_post("/sessions/verify", json={"accessToken": v5(key)})
        assert result.status_code == 440 and result.json == {"message": "unauthorised"}

    def test_anti_csrf_arguments(self, make_client, key: SigningKey) -> None:
        client = make_client(anti_csrf="VIA_TOKEN")
        token = v5(key, antiCsrfToken="c")
        ok = {"accessToken": token, "antiCsrfToken": "c", "doAntiCsrfCheck": True}
        assert client.simulate_post("/sessions/verify", json=ok).status_code == 200
        assert client.simulate_post("/sessions/verify", json={**ok, "antiCsrfToken": "d"}).status_code == 401

    @pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"accessToken": 5}', b'{"doAntiCsrfCheck": "yes"}'])
    def test_bad_bodies_are_400(self, client, body: bytes) -> None:
        assert client.simulate_post("/sessions/verify", body=body).status_code == 400

    def test_a_body_over_the_limit_is_413_saying_the_limit(self, client, key: SigningKey) -> None:
        body = json.dumps({"accessToken": v5(key), "padding": "x" * (2 << 20)})  # valid JSON, 2 MB
        result = client.simulate_post("/sessions/verify", body=body, headers={"content-type": "application/json"})
        assert (result.status_code, result.headers["X-Forward-Auth-Reason"]) == (413, "body-too-large")
        assert result.json == {"message": "the body is over the limit of 1048576 bytes (1 MiB)"}

    def test_an_answer_falcon_gives_is_logged_with_its_own_reason(self, client,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level("INFO", logger="forward_auth.decisions")
        assert client.simulate_get("/sessions/verify").status_code == 405
        assert caplog.messages == ["deny 405 /sessions/verify: method-not-allowed"]


class TestBadInput:
    def test_huge_cookie(self, client) -> None:
        result = client.simulate_get("/verify", headers={"Cookie": "sAccessToken=" + "a" * 16384})
        assert result.status_code == 401 and result.json == {"message": "unauthorised"}

    def test_non_utf8_cookie(self, client) -> None:
        result = client.simulate_get("/verify", headers={"Cookie": "sAccessToken=\xff\xfe.\xff.\xff"})
        assert result.status_code == 401

    def test_duplicated_authorization_headers_are_joined_and_ignored(self, client, key: SigningKey) -> None:
        result = client.simulate_get("/verify", headers=[("Authorization", "Bearer " + v5(key)),
                                                         ("Authorization", "Bearer " + v5(key))])
        assert result.status_code in (200, 401) and result.status_code != 500

    def test_control_characters_never_reach_identity_headers(self, client, key: SigningKey) -> None:
        result = client.simulate_get("/verify", headers=cookie(v5(key, sub="evil\r\nX-Admin: 1", rsub="é",
                                                                   tId=" admin ")))
        assert result.headers["X-User-Id"] == "evil%0D%0AX-Admin:%201"
        assert result.headers["X-Recipe-User-Id"] == "%C3%A9"
        assert result.headers["X-Tenant-Id"] == "%20admin%20"  # servers strip unencoded edge spaces


def test_health_and_readiness(client, fake_core: FakeCore) -> None:
    assert client.simulate_get("/healthz").json == {"status": "ok"}
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200 and ready.json["jwks"]["loaded"] is True


def test_not_ready_without_keys(client, fake_core: FakeCore) -> None:
    fake_core.down = True
    assert client.simulate_get("/readyz").status_code == 503


def test_readiness_names_no_core_address_nor_error(make_client, fake_core: FakeCore) -> None:
    """/readyz answers anyone on the main port: facts only; addresses and errors go to the log."""
    client = make_client()
    assert client.simulate_get("/readyz").json["jwks"]["last_fetch_failed"] is False
    fake_core.down = True
    for name in ("good", "down"):
        ready = client.simulate_get("/readyz")
        assert sorted(ready.json["jwks"]) == ["age_seconds", "kids", "last_fetch_failed", "loaded", "stale_seconds",
                                              "usable"], name
        assert "core.test" not in ready.text and "3567" not in ready.text and "Error" not in ready.text, ready.text
        client = make_client()


class TestTrustedProxies:
    def test_forwarded_method_is_not_believed_from_an_untrusted_peer(self, make_client, key: SigningKey) -> None:
        client = make_client(anti_csrf="VIA_CUSTOM_HEADER")
        forged = {"X-Forwarded-Method": "GET", **cookie(v5(key))}
        assert client.simulate_post("/verify", headers=forged, remote_addr="203.0.113.9").status_code == 401
        assert client.simulate_post("/verify", headers=forged, remote_addr="127.0.0.1").status_code == 200

    def test_an_untrusted_proxy_fails_closed(self, make_client, key: SigningKey) -> None:
        """Traefik outside trusted_proxies sends GET /verify for a POST: the check must still run."""
        client = make_client(anti_csrf="VIA_CUSTOM_HEADER")
        post = {"X-Forwarded-Method": "POST", **cookie(v5(key))}
        result = client.simulate_get("/verify", headers=post, remote_addr="172.18.0.5")
        assert result.status_code == 401 and result.headers["X-Forward-Auth-Reason"] == "csrf-rid-missing"
        plain_get = client.simulate_get("/verify", headers=cookie(v5(key)), remote_addr="172.18.0.5")
        assert plain_get.status_code == 200  # no forwarded method: the request as it came

    def test_configured_ranges(self, make_client, key: SigningKey) -> None:
        client = make_client(anti_csrf="VIA_CUSTOM_HEADER", trusted_proxies="10.0.0.0/8")
        get = {"X-Forwarded-Method": "GET", **cookie(v5(key))}
        assert client.simulate_post("/verify", headers=get, remote_addr="10.1.2.3").status_code == 200
        assert client.simulate_post("/verify", headers=get, remote_addr="127.0.0.1").status_code == 401


class TestPreflight:
    preflight = {"X-Forwarded-Method": "OPTIONS", "Access-Control-Request-Method": "POST"}

    def test_passes_without_a_session_when_enabled(self, make_client) -> None:
        result = make_client(cors_preflight="true").simulate_get("/verify", headers=self.preflight)
        assert (result.status_code, result.content) == (200, b"")  # to a proxy: headers only
        assert "X-User-Id" not in result.headers

    def test_is_verified_like_any_request_by_default(self, client) -> None:
        assert client.simulate_get("/verify", headers=self.preflight).status_code == 401

    def test_options_without_the_preflight_header_is_verified(self, make_client) -> None:
        result = make_client(cors_preflight="true").simulate_get("/verify", headers={"X-Forwarded-Method": "OPTIONS"})
        assert result.status_code == 401


class TestClaims:
    def test_required_role(self, client, key: SigningKey) -> None:
        assert client.simulate_get("/verify", params={"requireRole": "admin"}, headers=cookie(v5(key))).status_code == 200
        result = client.simulate_get("/verify", params={"requireRole": "root"}, headers=cookie(v5(key)))
        assert result.status_code == 403
        assert result.json == {"message": "invalid claim", "claimValidationErrors": [
            {"id": "st-role", "reason": {"message": "wrong value", "expectedToInclude": "root",
                                         "actualValue": ["admin"]}}]}

    def test_invalid_claim_status_is_configurable(self, make_client, key: SigningKey) -> None:
        result = make_client(invalid_claim_status="404").simulate_get("/verify", params={"requirePermission": "x"},
                                                                      headers=cookie(v5(key)))
        assert result.status_code == 404 and result.json["claimValidationErrors"][0]["id"] == "st-perm"

    def test_email_verified(self, client, key: SigningKey) -> None:
        verified = v5(key, **{"st-ev": {"v": True, "t": 1}})
        assert client.simulate_get("/verify", params={"requireEmailVerified": "true"},
                                   headers=cookie(verified)).status_code == 200
        assert client.simulate_get("/verify", params={"requireEmailVerified": "true"},
                                   headers=cookie(v5(key))).status_code == 403


class TestNginxCompat:
    def test_440_travels_as_401_with_the_status_and_body_in_headers(self, make_client, key: SigningKey) -> None:
        result = make_client(legacy="true").simulate_get("/verify", params={"proxy": "nginx"}, headers=cookie(v5(key)))
        assert result.status_code == 401
        assert result.headers["X-Forward-Auth-Status"] == "440"
        assert result.headers["X-Forward-Auth-Body"] == '{"message":"unauthorised"}'
        numbered = [result.headers[f"X-Forward-Auth-Set-Cookie-{i}"] for i in (1, 2, 3)]
        assert [c.split("=")[0] for c in numbered] == ["sAccessToken", "sRefreshToken", "sIdRefreshToken"]

    def test_403_body_and_200_status(self, client, key: SigningKey) -> None:
        denied = client.simulate_get("/verify", params={"proxy": "nginx", "requireRole": "root"}, headers=cookie(v5(key)))
        assert denied.status_code == 403 and "claimValidationErrors" in denied.headers["X-Forward-Auth-Body"]
        ok = client.simulate_get("/verify", params={"proxy": "nginx"}, headers=cookie(v5(key)))
        assert ok.headers["X-Forward-Auth-Status"] == "200" and "X-Forward-Auth-Body" not in ok.headers

    def test_other_proxies_get_the_plain_answer(self, make_client, key: SigningKey) -> None:
        result = make_client(legacy="true").simulate_get("/verify", headers=cookie(v5(key)))
        assert result.status_code == 440 and "X-Forward-Auth-Status" not in result.headers


def test_bodies_are_compact_json_as_the_sdk_writes_them(client) -> None:
    assert client.simulate_get("/verify").text == '{"message":"unauthorised"}'


def test_no_token_or_cookie_value_reaches_the_logs(make_client, fake_core: FakeCore, key: SigningKey,
                                                   foreign_key: SigningKey, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    client = make_client(anti_csrf="VIA_TOKEN", log_level="debug")
    tokens = [v5(key), v5(key, exp=int(time.time()) - 5), v5(foreign_key), v2(key), "garbage.tok.en",
              v5(key, aud="x"), v5(key, antiCsrfToken="secret-csrf")]
    for raw in tokens:
        client.simulate_get("/verify", headers={"X-Forwarded-Method": "POST", "anti-csrf": "secret-csrf", **cookie(raw)})
        client.simulate_get("/verify", headers={"Authorization": "Bearer " + raw})
    fake_core.down = True
    client.simulate_get("/verify", params={"checkDatabase": "true"}, headers=cookie(v5(key, sub="z")))
    logged = caplog.text
    assert "deny 401" in logged  # the denials are logged...
    for raw in tokens:
        for segment in raw.split("."):
            assert len(segment) < 8 or segment not in logged  # ...without any part of a token
    assert "secret-csrf" not in logged


def test_nginx_answers_have_an_empty_body(make_client, key: SigningKey) -> None:
    client = make_client(legacy="true")
    for headers in (cookie(v5(key), sIdRefreshToken="x"), cookie(v5(key))):
        result = client.simulate_get("/verify", params={"proxy": "nginx"}, headers=headers)
        assert result.content == b"" and result.headers["content-length"] == "0"


def test_proxy_cache_seconds_says_until_when_nginx_may_reuse_an_allowed_answer(make_client, key: SigningKey) -> None:
    """X-Accel-Expires: @epoch, at most proxy_cache_seconds ahead and never past the token's exp;
    only on answers that cannot change before exp; Cache-Control stays no-store for everyone else."""
    cached, plain = make_client(proxy_cache_seconds="30"), make_client()
    now = int(time.time())
    long_lived, short_lived = v5(key), v5(key, exp=now + 10)
    answer = cached.simulate_get("/verify", headers={"Cookie": f"sAccessToken={long_lived}"})
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    assert now + 29 <= int(answer.headers["X-Accel-Expires"].removeprefix("@")) <= now + 31
    short = cached.simulate_get("/verify", headers={"Cookie": f"sAccessToken={short_lived}"})
    assert short.headers["X-Accel-Expires"] == f"@{now + 10}"
    claim_with_max_age = cached.simulate_get("/verify", params={"requireEmailVerified": "true"},
                                             headers={"Cookie": f"sAccessToken={long_lived}"})
    assert "X-Accel-Expires" not in claim_with_max_age.headers  # a denial (403) is never reusable
    assert "X-Accel-Expires" not in cached.simulate_get("/verify").headers
    assert "X-Accel-Expires" not in plain.simulate_get("/verify", headers={"Cookie": f"sAccessToken={long_lived}"}
                                                        ).headers


# --- token text that no encoding may fail on ----------------------------------------------------

#: Lone surrogates: JSON allows "\udcff" in a token, and the core takes it in a user id.
LONE = "\udcff"
ODD_POLICY = """\
rules:
  - name: forwards
    match: {path_prefix: /forwards/}
    headers: {X-User-Roles: st-role, X-User-Email: email}
    forward_payload: true
  - name: admin
    match: {path_prefix: /admin/}
    claims: [{claim: st-role, includes: admin}]
"""


@pytest.fixture
def odd_client(make_client, tmp_path):  # noqa: ANN001, ANN201
    (tmp_path / "policy.yaml").write_text(ODD_POLICY)
    return make_client(policy_file=str(tmp_path / "policy.yaml"))


def odd_token(key: SigningKey, text: str) -> str:
    now_ms = int(time.time() * 1000)
    return v5(key, sub=f"u{text}", sessionHandle=f"h{text}", tId=f"t{text}", rsub=f"r{text}",
              email=f"e{text}", **{"st-role": {"v": [f"a{text}", "b,c"], "t": now_ms}})


@pytest.mark.parametrize("text", [LONE, "\udcfe\ud800", "\ud83d\ude00", "é\x00\r\n %"])
def test_no_token_text_gives_a_5xx_and_every_header_stays_distinct(odd_client, key: SigningKey, text: str) -> None:
    """Every header and body that carries token data: encoded, never a 500, never two texts alike."""
    token = odd_token(key, text)
    text = json.loads(json.dumps(text))  # as the token carries it: JSON joins an escaped surrogate pair
    forwarded = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/forwards/x", **cookie(token)}
    encoded = "".join(f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass"))
    answer = odd_client.simulate_get("/verify", headers=forwarded)
    assert answer.status_code == 200, answer.text
    for name, prefix in (("X-User-Id", "u"), ("X-Session-Handle", "h"), ("X-Tenant-Id", "t"),
                         ("X-Recipe-User-Id", "r"), ("X-User-Email", "e")):
        assert answer.headers[name] == prefix + encoded, name
    assert answer.headers["X-User-Roles"] == f"a{encoded},b%2Cc"
    payload = base64.urlsafe_b64decode(answer.headers["X-Access-Token-Payload"] + "==")
    assert json.loads(payload)["sub"] == f"u{text}"
    direct = odd_client.simulate_get("/verify", headers=cookie(token))  # a person's curl: JSON
    assert direct.status_code == 200 and json.loads(direct.content)["userId"] == f"u{text}"
    sessions = odd_client.simulate_post("/sessions/verify", json={"accessToken": token})
    assert sessions.status_code == 200 and json.loads(sessions.content)["session"]["userId"] == f"u{text}"
    for nginx in (False, True):  # a claim failure's body names the value it found, also in a header
        denied = odd_client.simulate_get("/verify", params={"proxy": "nginx"} if nginx else None,
                                         headers={**forwarded, "X-Forwarded-Uri": "/admin/x"})
        assert denied.status_code == 403, denied.text
        body = denied.headers["X-Forward-Auth-Body"] if nginx else denied.content.decode("ascii")
        [error] = json.loads(body)["claimValidationErrors"]
        assert error["reason"]["actualValue"] == [f"a{text}", "b,c"]


def test_a_decision_log_line_with_token_text_writes_to_any_stream(make_client, key: SigningKey,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    make_client(log_level="debug").simulate_get("/verify", headers=cookie(v5(key, sub=f"u{LONE}é")))
    [record] = [r for r in caplog.records if getattr(r, "decision", None)]
    line = JsonFormatter().format(record)
    assert json.loads(line.encode("utf-8"))["user_id"] == f"u{LONE}é"


def test_lone_surrogates_stay_apart_in_headers(odd_client, key: SigningKey) -> None:
    """"\\udcff" and "\\udcfe" are two users (U+FFFD for both would make them one)."""
    ids = {odd_client.simulate_get("/verify", headers=cookie(odd_token(key, text))).headers["X-User-Id"]
           for text in ("\udcff", "\udcfe", "\ufffd")}
    assert len(ids) == 3
