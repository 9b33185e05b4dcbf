"""The decision cache in front of the real ``/verify`` endpoint (falcon.testing), with really signed tokens.

The seam: the wrapped endpoint is the real one behind a counter of the calls that reach it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import falcon.testing
import pytest
from conftest import CORE, FakeCore, v5
from prometheus_client import REGISTRY

from forward_auth import settings as settings_module
from forward_auth.app import build_gate
from forward_auth.decision_cache import DecisionCache
from forward_auth.devcore.minter import SigningKey
from forward_auth.endpoint import Answer, Incoming, Verify, VerifyEndpoint
from forward_auth.policy import PolicyFile
from forward_auth.resources import VerifyResource


class Counted:
    """The ``/verify`` endpoint, counting the requests that get past the cache."""

    def __init__(self, verify: Verify) -> None:
        self.verify, self.calls = verify, 0

    def __call__(self, incoming: Incoming) -> Answer:
        self.calls += 1
        return self.verify(incoming)


@pytest.fixture
def cached(fake_core: FakeCore) -> Callable[..., tuple[falcon.testing.TestClient, Counted]]:
    def build(seconds: float = 30.0, now: Callable[[], float] = time.time,
              **overrides: Any) -> tuple[falcon.testing.TestClient, Counted]:
        settings = settings_module.load({"core_url": CORE, **overrides}, environ={})
        policies = PolicyFile(settings.policy_file, every=1) if settings.policy_file else None
        gate = build_gate(settings, transport=fake_core)
        gate.now = now
        counted = Counted(VerifyEndpoint(gate, policies))
        app = falcon.App()
        app.add_route("/verify", VerifyResource(DecisionCache(
            counted, seconds, now=gate.now, policy=policies.current if policies else lambda: None)))
        return falcon.testing.TestClient(app), counted

    return build


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _allowed() -> float:
    return _sample("forward_auth_decisions_total", outcome="allow", reason="ok")


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"sAccessToken={token}"}


def test_the_same_request_again_is_answered_from_the_cache(cached, key: SigningKey) -> None:
    client, app = cached()
    token = v5(key)
    hits, allowed = _sample("forward_auth_cache_total", cache="decision", result="hit"), _allowed()
    first = client.simulate_get("/verify", headers={**cookie(token), "X-Request-Id": "one"})
    again = client.simulate_get("/verify", headers={**cookie(token), "X-Request-Id": "two"})

    assert app.calls == 1
    assert _sample("forward_auth_cache_total", cache="decision", result="hit") == hits + 1
    assert _allowed() == allowed + 2  # a hit counts as a decision
    assert (again.status_code, again.text) == (first.status_code, first.text) == (200, first.text)
    assert [h for h in again.headers.items() if h[0] != "x-request-id"] == \
           [h for h in first.headers.items() if h[0] != "x-request-id"]
    assert (first.headers["X-Request-Id"], again.headers["X-Request-Id"]) == ("one", "two")
    assert again.headers["X-User-Id"] == "user-1"


@pytest.mark.parametrize("change", [
    {"Cookie": "sAccessToken=OTHER"},                  # another token
    {"X-Forwarded-Uri": "/admin/x"},                   # another original request
    {"X-Forwarded-Method": "POST"},                    # anti-CSRF applies
    {"rid": "anti-csrf"},                              # any other header
])
def test_any_other_input_is_decided_afresh(cached, key: SigningKey, change: dict[str, str]) -> None:
    client, app = cached(anti_csrf="VIA_CUSTOM_HEADER")
    token = v5(key)
    base = {**cookie(token), "X-Forwarded-Uri": "/api/x", "X-Forwarded-Method": "GET"}
    client.simulate_get("/verify", headers=base)
    changed = {**base, **{k: v.replace("OTHER", v5(key, sub="user-2")) for k, v in change.items()}}

    answer = client.simulate_get("/verify", headers=changed)

    assert app.calls == 2
    if "X-Forwarded-Method" in change:
        assert answer.status_code == 401  # the cached 200 of the GET did not leak to the POST
    if "Cookie" in change:
        assert answer.headers["X-User-Id"] == "user-2"


def test_query_string_and_path_are_part_of_the_key(cached, key: SigningKey) -> None:
    client, app = cached()
    headers = cookie(v5(key, **{"st-role": None}))
    assert client.simulate_get("/verify", headers=headers).status_code == 200
    assert client.simulate_get("/verify", params={"requireRole": "admin"}, headers=headers).status_code == 403
    assert app.calls == 2


def test_denials_are_never_kept(cached) -> None:
    client, app = cached()
    for _ in range(3):
        assert client.simulate_get("/verify").status_code == 401
    assert app.calls == 3


def test_revocation_checks_promotions_and_max_age_claims_are_never_kept(cached, fake_core: FakeCore, key: SigningKey,
                                                                       tmp_path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: [{name: fresh-ev, match: {path_prefix: /ev/},"
                      " claims: [{claim: st-ev, equals: true, max_age_seconds: 300}]}]\n")
    client, app = cached(policy_file=str(policy))
    now_ms = int(time.time() * 1000)
    fake_core.verify_answer = {"status": "OK", "session": {"handle": "handle-1", "userId": "user-1",
                                                           "recipeUserId": "user-1", "userDataInJWT": {},
                                                           "tenantId": "public"},
                               "accessToken": {"token": v5(key), "expiry": now_ms + 3_600_000, "createdTime": now_ms}}
    requests = [
        ({"checkDatabase": "true"}, cookie(v5(key))),
        ({}, cookie(v5(key, parentRefreshTokenHash1="p"))),
        ({}, {**cookie(v5(key, **{"st-ev": {"v": True, "t": now_ms}})), "X-Forwarded-Uri": "/ev/x"}),
    ]
    for params, headers in requests:
        for _ in range(2):
            assert client.simulate_get("/verify", params=params, headers=headers).status_code == 200
    assert app.calls == 6


def test_an_answer_never_outlives_its_token(cached, key: SigningKey) -> None:
    client, app = cached(seconds=60)
    expiry_ms = int(time.time() * 1000) + 1200
    headers = cookie(v5(key, exp=expiry_ms // 1000))
    assert client.simulate_get("/verify", headers=headers).status_code == 200
    time.sleep(max(0.0, expiry_ms / 1000 - time.time()) + 1.05)

    assert client.simulate_get("/verify", headers=headers).status_code == 401  # try refresh: expired
    assert app.calls == 2


def test_an_answer_lives_at_most_the_setting(cached, key: SigningKey) -> None:
    client, app = cached(seconds=0.2)
    headers = cookie(v5(key))
    client.simulate_get("/verify", headers=headers)
    time.sleep(0.3)
    client.simulate_get("/verify", headers=headers)
    assert app.calls == 2


def test_a_policy_reload_ends_every_kept_answer(cached, key: SigningKey, tmp_path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: [{name: api, match: {path_prefix: /api/}}]\n")
    client, app = cached(policy_file=str(policy))
    headers = {**cookie(v5(key, **{"st-role": None})), "X-Forwarded-Uri": "/api/x"}
    assert client.simulate_get("/verify", headers=headers).status_code == 200
    assert client.simulate_get("/verify", headers=headers).status_code == 200
    policy.write_text("rules: [{name: api, match: {path_prefix: /api/}, claims: [{claim: st-role, includes: admin}]}]\n")
    time.sleep(1.05)  # the file is looked at once a second here

    assert client.simulate_get("/verify", headers=headers).status_code == 403  # the new rule, at once
    assert app.calls == 2


def test_the_tokens_expiry_is_read_on_the_gates_clock(cached, key: SigningKey) -> None:
    clock = [time.time()]
    client, app = cached(now=lambda: clock[0])
    headers = cookie(v5(key, exp=int(clock[0]) + 60))
    assert client.simulate_get("/verify", headers=headers).status_code == 200
    clock[0] += 61

    assert client.simulate_get("/verify", headers=headers).status_code == 401  # try refresh, as decided afresh
    assert app.calls == 2


def test_a_request_whose_parts_cannot_be_told_apart_is_never_kept() -> None:
    from forward_auth.decision_cache import key, raw_key

    assert key(Incoming("GET", "/verify", "a=1", {"cookie": "x"}, "127.0.0.1")) is not None
    assert key(Incoming("GET", "/verify", "a\0cookie", {"x": "1"}, "127.0.0.1")) is None
    assert raw_key(b"GET", b"/verify", b"a\0b", b"127.0.0.1", [(b"cookie", b"x")]) == (None, None)
    assert raw_key(b"GET", b"/verify", b"", b"", [(b"x-request-id", b"r1"), (b"a", b"b\0c")]) == (None, "r1")
    plain = raw_key(b"GET", b"/verify", b"", b"", [(b"cookie", b"x")])[0]
    traced = [(b"traceparent", b"00-1-2-01"), (b"cookie", b"x"), (b"x-request-id", b"r"), (b"tracestate", b"a=b")]
    assert raw_key(b"GET", b"/verify", b"", b"", traced) == (plain, "r")  # left out of the key
    assert raw_key(b"GET", b"/verify", b"", b"", [(b"cookie", b"x"), (b"a", b"x-request-id")])[0] != plain
    assert raw_key(b"POST", b"/verify", b"", b"", [(b"cookie", b"x"), (b"content-length", b"0")]) == (None, None)
    # the same request as text and as bytes: two digests, never one for two requests
    assert key(Incoming("GET", "/verify", "", {}, "")) != raw_key(b"GET", b"/verify", b"", b"", [])[0]


def test_with_no_verified_signature_memory_nothing_is_replayed(cached, key: SigningKey) -> None:
    client, app = cached(verified_cache_size="0")  # every signature checked: a withdrawn key shows at once
    headers = cookie(v5(key))
    for _ in range(2):
        assert client.simulate_get("/verify", headers=headers).status_code == 200
    assert app.calls == 2


@pytest.mark.parametrize(("overrides", "on"), [
    ({}, True),  # on by default
    ({"decision_cache_seconds": "0"}, False),
    ({"verified_cache_size": "0"}, False),  # who checks every signature wants no replay either
    ({"verified_cache_size": "0", "decision_cache_seconds": "5"}, True),
])
def test_the_setting_wraps_the_worker_app(overrides: dict[str, str], on: bool) -> None:
    from forward_auth.server import worker_app

    settings = settings_module.load({"core_url": "http://127.0.0.1:9", **overrides}, environ={})
    assert isinstance(worker_app(settings).verify, DecisionCache) is on


def test_tracing_turns_the_default_off_and_refuses_an_explicit_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert settings_module.load({"tracing": "true"}, environ={}).decision_cache_seconds == 0
    with pytest.raises(settings_module.SettingsError, match="decision_cache_seconds"):
        settings_module.load({"tracing": "true", "decision_cache_seconds": "1"}, environ={})


def test_a_token_the_core_was_asked_about_is_never_kept_even_when_it_mints_nothing(cached, fake_core: FakeCore,
                                                                                  key: SigningKey) -> None:
    """A refreshed token (``parentRefreshTokenHash1``) is decided by the core on every request.
    The core answers OK *without* a new token for one whose refresh token was rotated again
    (neither promoted now nor before: supertokens-core's getSession); its next answer may be
    UNAUTHORISED (the session revoked), so replaying the OK would outlive a revocation."""
    client, app = cached()
    fake_core.verify_answer = {"status": "OK", "session": {"handle": "handle-1", "userId": "user-1",
                                                           "recipeUserId": "user-1", "userDataInJWT": {},
                                                           "tenantId": "public"}}
    headers = cookie(v5(key, parentRefreshTokenHash1="p"))
    assert client.simulate_get("/verify", headers=headers).status_code == 200
    fake_core.verify_answer = {"status": "UNAUTHORISED", "message": "Session missing in db"}

    assert client.simulate_get("/verify", headers=headers).status_code == 401  # revoked: as decided afresh
    assert app.calls == 2 and fake_core.count("/recipe/session/verify") == 2


def test_a_token_with_a_fractional_exp_is_not_replayed_past_the_second_pyjwt_ends_it(cached, key: SigningKey) -> None:
    """PyJWT (the python profile) counts a token expired once ``int(exp) <= now``: a replay must
    end then too, not at ``exp`` itself."""
    clock = [float(int(time.time()))]
    client, app = cached(now=lambda: clock[0])
    headers = cookie(v5(key, exp=clock[0] + 60.5))
    assert client.simulate_get("/verify", headers=headers).status_code == 200
    clock[0] += 60.2  # past int(exp), before exp

    answer = client.simulate_get("/verify", headers=headers)
    assert (answer.status_code, answer.headers.get("X-Forward-Auth-Reason")) == (401, "expired")  # as decided afresh
    assert app.calls == 2


def test_a_replayed_x_accel_expires_is_never_in_the_past(cached, key: SigningKey) -> None:
    """``X-Accel-Expires`` is whole seconds (``@int(now + proxy_cache_seconds)``): a replay kept for
    ``proxy_cache_seconds`` must not outlive it."""
    client, app = cached(seconds=2, proxy_cache_seconds=2)
    headers = cookie(v5(key))
    while time.time() % 1 < 0.6:  # late in a second, so that the header's second ends well before the entry
        time.sleep(0.05)
    first = client.simulate_get("/verify", headers=headers)
    accel = int(first.headers["X-Accel-Expires"].lstrip("@"))
    time.sleep(max(0.0, accel + 0.2 - time.time()))

    again = client.simulate_get("/verify", headers=headers)
    assert again.status_code == 200
    assert int(again.headers["X-Accel-Expires"].lstrip("@")) > time.time()  # a fresh decision's: in the future
    assert app.calls == 2


def test_a_replay_is_logged_with_the_fields_of_its_decision(cached, key: SigningKey, tmp_path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: [{name: 'my api é', match: {path_prefix: /api/}}]\n")
    client, app = cached(policy_file=str(policy))
    headers = {**cookie(v5(key)), "X-Forwarded-Uri": "/api/x"}
    with caplog.at_level("DEBUG", logger="forward_auth.decisions"):
        for _ in range(2):
            assert client.simulate_get("/verify", headers=headers).status_code == 200
    decided, replayed = (dict(r.decision) for r in caplog.records if hasattr(r, "decision"))
    assert app.calls == 1 and replayed.pop("cached") is True
    for record in (decided, replayed):
        record.pop("request_id"), record.pop("latency_ms")
    assert replayed == decided


def test_a_replay_never_outlives_the_trust_in_its_verified_signature(cached, fake_core: FakeCore, key: SigningKey,
                                                                    foreign_key: SigningKey) -> None:
    """A signature verified once is trusted at most 300 s (``VERIFIED_TTL_CAP``): an answer kept
    from that memory late in its life must not carry the trust past it. Here the JWKS drops the
    token's key meanwhile (seen when a token with a new kid comes): a fresh decision once the
    memory ends refuses the token, and so must the cache."""
    clock = [time.time()]
    client, app = cached(seconds=60, now=lambda: clock[0])
    token = v5(key)
    assert client.simulate_get("/verify", headers={**cookie(token), "X-Forwarded-Uri": "/a"}).status_code == 200
    clock[0] += 299  # the signature is still remembered: this one is allowed from memory, and kept
    assert client.simulate_get("/verify", headers={**cookie(token), "X-Forwarded-Uri": "/b"}).status_code == 200
    fake_core.jwks = {"keys": [foreign_key.public_jwk()]}  # key withdrawn; a new kid makes the gate look
    time.sleep(0.6)  # past the refetch cooldown
    assert client.simulate_get("/verify", headers=cookie(v5(foreign_key))).status_code == 200
    clock[0] += 2  # the memory of the signature has ended

    answer = client.simulate_get("/verify", headers={**cookie(token), "X-Forwarded-Uri": "/b"})
    assert (answer.status_code, answer.headers.get("X-Forward-Auth-Reason")) == (401, "unknown-kid")
    assert app.calls == 4


def test_a_policy_edit_that_is_not_utf8_keeps_the_previous_policy_in_force(
        cached, key: SigningKey, tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """The cache asks for the policy in force before the endpoint does (outside its fail-closed
    handler): a file saved in latin-1 must be a broken policy like any other, not an exception
    out of the cache (a bare 500, or granian's), and the previous policy stays in force."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: [{name: api, match: {path_prefix: /api/}}]\n")
    client, app = cached(policy_file=str(policy))
    headers = {**cookie(v5(key)), "X-Forwarded-Uri": "/api/x"}
    assert client.simulate_get("/verify", headers=headers).status_code == 200
    policy.write_bytes("rules: [{name: 'caf\u00e9', match: {path_prefix: /api/}}]\n".encode("latin-1"))
    time.sleep(1.05)  # the file is looked at once a second here

    with caplog.at_level("ERROR", logger="forward_auth"):
        answer = client.simulate_get("/verify", headers=headers)
    assert (answer.status_code, answer.headers.get("X-Forward-Auth-Rule")) == (200, "api")
    assert any("policy not reloaded" in r.getMessage() for r in caplog.records)
