"""The app with a policy file: rule selection, public rules, claims, claim headers, ?policy=."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import CORE, v5

from forward_auth.devcore.minter import SigningKey

POLICY = """
rules:
  - name: public
    match: {path_prefix: /public/}
    session: public
  - name: optional
    match: {path_prefix: /optional/}
    session: optional
  - name: admin
    match: {path_prefix: /admin/}
    claims:
      - {claim: st-role, includes: admin}
      - {claim: plan, at_least: 2}
    headers: {X-User-Roles: st-role, X-User-Email: email, X-User-Plan: plan}
  - name: payload
    match: {path_prefix: /payload/}
    forward_payload: true
  - name: no-csrf
    match: {path_prefix: /webhook/}
    anti_csrf: false
"""


@pytest.fixture
def policy_client(make_client, tmp_path: Path):  # noqa: ANN001, ANN201
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return make_client(policy_file=str(path), anti_csrf="VIA_CUSTOM_HEADER")


def at(uri: str, token: str | None = None, method: str = "GET", **extra: str) -> dict[str, str]:
    headers = {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri, **extra}
    if token:
        headers["Cookie"] = f"sAccessToken={token}"
    return headers


def test_public_rule_checks_nothing(policy_client) -> None:  # noqa: ANN001
    result = policy_client.simulate_get("/verify", headers=at("/public/x", "garbage"))
    assert (result.status_code, result.content) == (200, b"")
    assert result.headers["X-Forward-Auth-Rule"] == "public" and "X-User-Id" not in result.headers


def test_allowed_answers_to_a_proxy_are_headers_only_and_json_to_a_person(policy_client, key: SigningKey) -> None:  # noqa: ANN001
    """A proxy (it names the original request) reads only headers, and nginx keeps its upstream
    connection only after an empty answer; a direct curl gets the JSON."""
    proxied = policy_client.simulate_get("/verify", headers=at("/api/x", v5(key)))
    assert (proxied.status_code, proxied.content, proxied.headers["X-User-Id"]) == (200, b"", "user-1")
    direct = policy_client.simulate_get("/verify", headers={"Cookie": f"sAccessToken={v5(key)}"})
    assert direct.status_code == 200 and direct.json["userId"] == "user-1" and direct.json["message"] == "ok"
    for headers, message in (({"X-Original-URI": "/public/x"}, None), ({}, "no session")):
        answer = policy_client.simulate_get("/verify", params={"sessionRequired": "false"}, headers=headers)
        assert answer.status_code == 200
        assert (answer.json or {}).get("message") == message
    assert policy_client.simulate_get("/verify/api/x", headers={"Cookie": f"sAccessToken={v5(key)}"}).content == b""


def test_optional_rule(policy_client, key: SigningKey) -> None:  # noqa: ANN001
    no_session = policy_client.simulate_get("/verify", headers=at("/optional/x"))
    assert (no_session.status_code, no_session.content) == (200, b"") and "X-User-Id" not in no_session.headers
    assert policy_client.simulate_get("/verify", headers=at("/optional/x", v5(key))).headers["X-User-Id"] == "user-1"


def test_default_rule_requires_a_session(policy_client) -> None:  # noqa: ANN001
    result = policy_client.simulate_get("/verify", headers=at("/anything"))
    assert result.status_code == 401 and result.headers["X-Forward-Auth-Rule"] == "default"


def test_claims_and_claim_headers(policy_client, key: SigningKey) -> None:  # noqa: ANN001
    good = v5(key, plan=3, email="ann@example.com", **{"st-role": {"v": ["admin", "ops"], "t": 1}})
    result = policy_client.simulate_get("/verify", headers=at("/admin/x", good))
    assert result.status_code == 200
    assert result.headers["X-User-Roles"] == "admin,ops"
    assert result.headers["X-User-Email"] == "ann@example.com"
    assert result.headers["X-User-Plan"] == "3"
    poor = v5(key, plan=1)
    denied = policy_client.simulate_get("/verify", headers=at("/admin/x", poor))
    assert denied.status_code == 403
    assert denied.json == {"message": "invalid claim", "claimValidationErrors": [
        {"id": "plan", "reason": {"message": "wrong value", "expectedAtLeast": 2, "actualValue": 1}}]}
    assert denied.headers["X-Forward-Auth-Rule"] == "admin"


def test_claim_headers_cannot_inject(policy_client, key: SigningKey) -> None:  # noqa: ANN001
    evil = v5(key, plan=2, email="a@b\r\nX-Admin: 1", **{"st-role": {"v": ["admin", "x\ny"], "t": 1}})
    result = policy_client.simulate_get("/verify", headers=at("/admin/x", evil))
    assert result.headers["X-User-Email"] == "a@b%0D%0AX-Admin:%201"
    assert result.headers["X-User-Roles"] == "admin,x%0Ay"
    assert "X-Admin" not in result.headers


def test_oversized_claim_headers_are_left_out_and_named(policy_client, key: SigningKey) -> None:  # noqa: ANN001
    big = v5(key, plan=2, email="e" * 5000, **{"st-role": {"v": ["admin"], "t": 1}})
    result = policy_client.simulate_get("/verify", headers=at("/admin/x", big))
    assert result.status_code == 200 and "X-User-Email" not in result.headers
    assert result.headers["X-Forward-Auth-Omitted"] == "X-User-Email"
    assert result.headers["X-User-Roles"] == "admin"


def test_whole_payload_header(policy_client, key: SigningKey) -> None:  # noqa: ANN001
    result = policy_client.simulate_get("/verify", headers=at("/payload/x", v5(key)))
    encoded = result.headers["X-Access-Token-Payload"]
    assert json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))["sub"] == "user-1"


def test_rule_turns_anti_csrf_off(policy_client, key: SigningKey) -> None:  # noqa: ANN001
    assert policy_client.simulate_get("/verify", headers=at("/webhook/x", v5(key), "POST")).status_code == 200
    assert policy_client.simulate_get("/verify", headers=at("/other", v5(key), "POST")).status_code == 401


def test_named_rule_from_the_query(policy_client, key: SigningKey) -> None:  # noqa: ANN001
    result = policy_client.simulate_get("/verify", params={"policy": "admin"}, headers=at("/public/x", v5(key)))
    assert result.status_code == 403 and result.headers["X-Forward-Auth-Rule"] == "admin"
    unknown = policy_client.simulate_get("/verify", params={"policy": "nope"})
    assert unknown.status_code == 400 and "nope" in unknown.json["message"]


def test_query_parameters_override_the_rule(policy_client) -> None:  # noqa: ANN001
    result = policy_client.simulate_get("/verify", params={"sessionRequired": "false"}, headers=at("/anything"))
    assert result.status_code == 200 and "X-User-Id" not in result.headers


def test_named_rule_without_a_policy_file_is_400(client) -> None:  # noqa: ANN001
    assert client.simulate_get("/verify", params={"policy": "admin"}).status_code == 400


def test_commas_inside_list_items_are_encoded(policy_client, key: SigningKey) -> None:  # noqa: ANN001
    token = v5(key, plan=2, **{"st-role": {"v": ["admin", "a,b"], "t": 1}})
    assert policy_client.simulate_get("/verify", headers=at("/admin/x", token)).headers["X-User-Roles"] == "admin,a%2Cb"


class TestPathRoute:
    """``/verify/<original path>`` for Envoy ext_authz: method and path are the request's own."""

    def test_method_and_path_come_from_the_request(self, policy_client, key: SigningKey) -> None:  # noqa: ANN001
        public = policy_client.simulate_get("/verify/public/x")
        assert public.status_code == 200 and public.headers["X-Forward-Auth-Rule"] == "public"
        assert policy_client.simulate_get("/verify/admin/x", headers={"Cookie": f"sAccessToken={v5(key)}"}
                                          ).status_code == 403
        token = {"Cookie": f"sAccessToken={v5(key)}"}
        assert policy_client.simulate_get("/verify/api/x", headers=token).status_code == 200
        post = policy_client.simulate_post("/verify/api/x", headers=token)
        assert post.status_code == 401 and post.headers["X-Forward-Auth-Reason"] == "csrf-rid-missing"

    def test_the_clients_query_string_never_chooses_the_policy(self, policy_client) -> None:  # noqa: ANN001
        for query in ("sessionRequired=false", "policy=public", "antiCsrf=false"):
            assert policy_client.simulate_get("/verify/api/x", query_string=query).status_code == 401

    def test_forwarded_headers_are_not_believed_there(self, policy_client, key: SigningKey) -> None:  # noqa: ANN001
        forged = {"X-Forwarded-Uri": "/public/x", "X-Forwarded-Method": "GET", "Cookie": f"sAccessToken={v5(key)}"}
        result = policy_client.simulate_post("/verify/api/x", headers=forged)
        assert result.status_code == 401 and result.headers["X-Forward-Auth-Rule"] == "default"

    def test_root_and_trailing_slash_keep_their_meaning(self, policy_client) -> None:  # noqa: ANN001
        result = policy_client.simulate_get("/verify/", query_string="sessionRequired=false&policy=public")
        assert result.status_code == 401 and result.headers["X-Forward-Auth-Rule"] == "default"
        assert policy_client.simulate_get("/verify/admin/").headers["X-Forward-Auth-Rule"] == "admin"
        assert policy_client.simulate_get("/verify/admin").headers["X-Forward-Auth-Rule"] == "default"

    def test_the_path_is_decoded_once(self, policy_client) -> None:  # noqa: ANN001
        result = policy_client.simulate_get("/verify/admin/caf%C3%A9")  # the application reads /admin/café
        assert result.status_code == 401 and result.headers["X-Forward-Auth-Rule"] == "admin"
        for path in ("/verify/admin/%2e%2e/public/x",  # Falcon decodes to "..": refused
                     "/verify/admin/%252e%252e/public/x"):  # a backend that decodes twice reads "..": refused
            refused = policy_client.simulate_get(path)
            assert refused.status_code == 400 and refused.headers["X-Forward-Auth-Reason"] == "ambiguous-path", path


def test_ambiguous_forwarded_paths_are_400(policy_client) -> None:  # noqa: ANN001
    for uri in ("//admin/x", "/public/../admin/x", "/public/..;/admin", "/public/%2e%2e/admin"):
        result = policy_client.simulate_get("/verify", headers=at(uri))
        assert result.status_code == 400 and result.headers["X-Forward-Auth-Reason"] == "ambiguous-path", uri


def test_forged_log_lines_are_impossible(policy_client, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    caplog.set_level("INFO")
    policy_client.simulate_get("/verify", headers=at("/x\n2026-01-01 INFO allow 200 GET /admin: ok"))
    assert "\n2026-01-01" not in caplog.text and "%0A2026-01-01" in caplog.text


def test_a_proxy_on_a_dual_stack_bind_chooses_the_rule(fake_core, key: SigningKey, tmp_path: Path) -> None:  # noqa: ANN001
    """Behind ``--bind [::]:8080`` the proxy at 127.0.0.1 is the peer ``::ffff:127.0.0.1``: its
    forwarded path still picks the rule (it once fell back to ``/verify``'s, passing /admin/ by the default)."""
    from forward_auth import settings as settings_module
    from forward_auth.app import build_gate, create_service
    from forward_auth.endpoint import Incoming

    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    settings = settings_module.load({"core_url": CORE, "policy_file": str(path)}, environ={})
    verify = create_service(settings, build_gate(settings, transport=fake_core)).verify
    headers = {"host": "app", "cookie": f"sAccessToken={v5(key)}", "x-forwarded-method": "GET",
               "x-forwarded-uri": "/admin/panel"}
    for peer in ("127.0.0.1", "::ffff:127.0.0.1"):
        answer = verify(Incoming("GET", "/verify", "", headers, peer))
        assert answer.status == 403, (peer, answer.headers)
