"""The node profile's pure pieces and its start-up warning, and ``clock_skew_seconds``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import falcon.testing
import pytest
from conftest import v5
from prometheus_client import REGISTRY

from forward_auth import claims, cookies
from forward_auth import settings as settings_module
from forward_auth import token as tokens
from forward_auth.devcore.minter import SigningKey
from forward_auth.server import MasterPolicy

Client = Callable[..., falcon.testing.TestClient]


def _refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("forward_auth_decisions_total", {"outcome": "deny", "reason": reason}) or 0.0


def test_a_future_iat_is_refused_with_its_own_reason_counted_and_logged(
        make_client: Client, key: SigningKey, caplog: pytest.LogCaptureFixture) -> None:
    before = _refusals("future-iat")
    with caplog.at_level(logging.INFO, logger="forward_auth"):
        result = make_client().simulate_get("/verify", headers={"Authorization": "Bearer " + v5(
            key, iat=int(time.time()) + 30)})
    assert (result.status_code, result.json, result.headers["X-Forward-Auth-Reason"]) == (
        401, {"message": "try refresh token"}, "future-iat")
    assert _refusals("future-iat") == before + 1
    assert any("future-iat" in record.getMessage() for record in caplog.records)


def test_clock_skew_tolerates_a_future_iat_and_nbf_but_never_a_past_exp(make_client: Client, key: SigningKey) -> None:
    now = int(time.time())
    client = make_client(clock_skew_seconds="60")
    for claims_changed, status in (({"iat": now + 30}, 200), ({"nbf": now + 30}, 200), ({"iat": now + 90}, 401),
                                   ({"exp": now - 1}, 401)):
        result = client.simulate_get("/verify", headers={"Authorization": "Bearer " + v5(key, **claims_changed)})
        assert result.status_code == status, claims_changed


def test_node_profile_takes_a_future_iat_as_jose_does(make_client: Client, key: SigningKey) -> None:
    token = v5(key, iat=int(time.time()) + 3600)
    assert make_client(sdk_profile="node").simulate_get("/verify", headers={"Authorization": "Bearer " + token}
                                                        ).status_code == 200


@pytest.mark.parametrize(("header", "token", "duplicate"), [
    ('sAccessToken=a; sAccessToken=b', "a", True),
    ('sAccessToken=j:"x.y.z"', "x.y.z", False),
    ('sAccessToken=j:{"a":1}', {"a": 1}, False),
    ('sAccessToken=j:0', "j:0", False),  # falsy JSON stays text
    ('sAccessToken="q"; other=%E9', "q", False),
    ('sAccessToken=a%zz', "a%zz", False),  # decodeURIComponent throws: the raw value
    ('sAccessToken=v=w; sAccessToken=x=y', "v=w", True),
    ('sAccessToken; sAccessToken=a', "a", True),
])
def test_node_cookie_parsing(header: str, token: object, duplicate: bool) -> None:
    assert cookies.parse_cookie_header_node(header)["sAccessToken"] == token
    assert cookies.has_duplicate_node(header, "sAccessToken") is duplicate


@pytest.mark.parametrize(("version", "parsed"), [("5abc", 5), (" 4", 4), ("0x5", 5), ("5.9", 5), ("abc", None),
                                                 (5, None), ("2", None), ("9" * 400, None)])
def test_node_version_header(key: SigningKey, version: object, parsed: int | None) -> None:
    token = v5(key, header={"version": version})
    if parsed is None:
        with pytest.raises(tokens.MalformedToken):
            tokens.parse(token, sdk_profile="node")
    else:
        assert tokens.parse(token, sdk_profile="node").version == parsed


def test_node_leaves_out_an_undefined_actual_value() -> None:
    validator = claims.Validator("st-role", "includes", "admin")
    assert claims.failures([validator], {}, 0, sdk_profile="node") == [
        {"id": "st-role", "reason": {"message": "value does not exist", "expectedToInclude": "admin"}}]
    assert claims.failures([validator], {}, 0)[0]["reason"]["actualValue"] is None


POLICY = """
default: {session: public}
rules:
  - {name: reads, match: {path_prefix: /api/, methods: [GET, POST]}}
  - {name: admin, match: {path_prefix: /admin/}}
  - {name: blog, match: {path_prefix: /blog/}, session: optional}
"""


@pytest.mark.parametrize(("profile", "policy", "warned"), [
    ("node", POLICY, "admin"), ("node", None, "default"), ("python", POLICY, None),
    ("node", "default: {session: public}\nrules: []\n", None)])
def test_node_profile_warns_at_start_about_routes_where_options_pass(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, profile: str, policy: str | None, warned: str | None) -> None:
    overrides = {"sdk_profile": profile, "policy_reload_seconds": "0"}
    if policy is not None:
        (tmp_path / "policy.yaml").write_text(policy)
        overrides["policy_file"] = str(tmp_path / "policy.yaml")
    with caplog.at_level(logging.WARNING, logger="forward_auth"):
        MasterPolicy(settings_module.load(overrides, environ={}))
    messages = [r.getMessage() for r in caplog.records if "OPTIONS and TRACE" in r.getMessage()]
    assert messages == ([] if warned is None else [messages[0]])
    if warned is not None:
        assert messages[0].endswith(f"(rules: {warned})")
