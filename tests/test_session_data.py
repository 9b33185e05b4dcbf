"""``X-Session-Data`` and ``X-Access-Token`` on ``/verify``: the real app against the dev core
(served from a thread) and, for time and failures, the fake core at the one HTTP seam."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
from conftest import FakeCore, ManualClock, v5

from forward_auth import verifier
from forward_auth.app import create_app
from forward_auth.core import CoreClient
from forward_auth.devcore.minter import SigningKey
from forward_auth.devcore.server import start_in_thread
from forward_auth.devcore.state import DevCore
from forward_auth.errors import CoreUnavailable
from forward_auth.policy import PolicyFile
from forward_auth.session_data import SessionData
from forward_auth.settings import load
from forward_auth.transport import Reply, TransportError

POLICY = """
rules:
  - {name: data, match: {path_prefix: /data/}, session_data: true}
  - {name: token, match: {path_prefix: /token/}, access_token: true}
  - {name: plain, match: {path_prefix: /plain/}}
"""


def decoded(value: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


@pytest.fixture(scope="module")
def devcore() -> Iterator[tuple[DevCore, str]]:
    core, url, stop = start_in_thread()
    yield core, url
    stop()


@pytest.fixture
def gate(devcore: tuple[DevCore, str], tmp_path: Path) -> Callable[..., falcon.testing.TestClient]:
    def build(**overrides: Any) -> falcon.testing.TestClient:
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        settings = load({"core_url": devcore[1], **overrides}, environ={})
        return falcon.testing.TestClient(create_app(settings, policies=PolicyFile(str(policy))))
    return build


def session(core: DevCore, data: dict[str, Any]) -> tuple[str, str]:
    created = core.create_session("public", "user-sd", {}, data, use_dynamic_key=True, enable_anti_csrf=False)
    return created["session"]["handle"], created["accessToken"]["token"]


def data_reads(core: DevCore) -> int:
    return core.request_counts().get("GET /recipe/session", 0)


def ask(client: falcon.testing.TestClient, token: str, uri: str, **params: str) -> falcon.testing.Result:
    return client.simulate_get("/verify", params=params, headers={"Cookie": f"sAccessToken={token}",
                                                                  "X-Forwarded-Uri": uri})


def test_the_rule_forwards_the_cores_session_data_cached_per_handle(gate: Callable[..., Any], devcore: Any) -> None:
    core: DevCore = devcore[0]
    client = gate(session_data_cache_seconds=60)
    handle, token = session(core, {"plan": "pro", "seats": [1, 2], "name": "Zoë"})
    before = data_reads(core)

    answers = [ask(client, token, "/data/x") for _ in range(3)]

    assert [a.status_code for a in answers] == [200] * 3
    assert all(decoded(a.headers["X-Session-Data"]) == {"plan": "pro", "seats": [1, 2], "name": "Zoë"}
               for a in answers)
    assert data_reads(core) == before + 1  # one core round trip per handle per cache period
    core.update_session_data(handle, {"plan": "free"})
    assert decoded(ask(client, token, "/data/x").headers["X-Session-Data"])["plan"] == "pro"  # as set: 60 s
    assert "X-Session-Data" not in ask(client, token, "/plain/x").headers
    assert data_reads(core) == before + 1


def test_without_a_cache_every_answer_asks_and_the_query_parameter_asks_too(gate: Callable[..., Any],
                                                                            devcore: Any) -> None:
    core: DevCore = devcore[0]
    client = gate(session_data_cache_seconds=0)
    handle, token = session(core, {"v": 1})
    before = data_reads(core)
    assert decoded(ask(client, token, "/plain/x", sessionData="true").headers["X-Session-Data"]) == {"v": 1}
    core.update_session_data(handle, {"v": 2})
    assert decoded(ask(client, token, "/plain/x", sessionData="true").headers["X-Session-Data"]) == {"v": 2}
    assert "X-Session-Data" not in ask(client, token, "/data/x", sessionData="false").headers
    assert data_reads(core) == before + 2


def test_too_large_session_data_is_left_out_and_named(gate: Callable[..., Any], devcore: Any) -> None:
    _, token = session(devcore[0], {"blob": "x" * 5000})
    answer = ask(gate(), token, "/data/x")
    assert answer.status_code == 200
    assert "X-Session-Data" not in answer.headers
    assert answer.headers["X-Forward-Auth-Omitted"] == "X-Session-Data"


def test_a_session_the_core_no_longer_knows_is_unauthorised_clearing_tokens(gate: Callable[..., Any],
                                                                            devcore: Any) -> None:
    core: DevCore = devcore[0]
    handle, token = session(core, {})
    core.remove_sessions([handle])
    answer = ask(gate(), token, "/data/x")
    assert (answer.status_code, answer.json) == (401, {"message": "unauthorised"})
    assert answer.headers["X-Forward-Auth-Reason"] == "revoked" and answer.headers["front-token"] == "remove"


def test_the_access_token_header_is_the_token_the_request_carried(gate: Callable[..., Any], devcore: Any) -> None:
    _, token = session(devcore[0], {})
    client = gate()
    assert ask(client, token, "/token/x").headers["X-Access-Token"] == token
    bearer = client.simulate_get("/verify", headers={"Authorization": f"Bearer {token}", "X-Forwarded-Uri": "/token/"})
    assert bearer.headers["X-Access-Token"] == token
    assert "X-Access-Token" not in ask(client, token, "/plain/x").headers


def test_a_core_that_cannot_answer_is_503_never_a_401_nor_a_missing_header(
        make_client: Callable[..., falcon.testing.TestClient], fake_core: FakeCore, key: SigningKey) -> None:
    def no_session_answers(method: str, url: str, headers: dict[str, str], body: bytes | None) -> Reply:
        if "/recipe/session?" in url:
            raise TransportError("GET /recipe/session: ReadTimeoutError")
        return Reply(200, {}, json.dumps(fake_core.jwks).encode())

    client = make_client()
    fake_core.override = no_session_answers
    answer = client.simulate_get("/verify", params={"sessionData": "true"}, headers={"Cookie": f"sAccessToken={v5(key)}"})
    assert (answer.status_code, answer.json) == (503, {"message": "core-unavailable"})
    assert answer.headers["X-Forward-Auth-Reason"] == "core-unavailable" and answer.headers["Retry-After"]
    nginx = client.simulate_get("/verify", params={"sessionData": "true", "proxy": "nginx"},
                                headers={"Cookie": f"sAccessToken={v5(key)}", "X-Original-URI": "/x"})
    assert nginx.headers["X-Forward-Auth-Status"] == "503"


def test_the_cache_keeps_an_entry_for_its_seconds_and_never_past_the_tokens_exp() -> None:
    answers = [{"status": "OK", "sessionHandle": "h", "userId": "u", "timeCreated": 1, "expiry": 2,
                "userDataInJWT": {}, "userDataInDatabase": {"n": n}} for n in range(10)]
    sent: list[str] = []

    class Transport:
        def request(self, method: str, url: str, **_: Any) -> Reply:
            sent.append(url)
            return Reply(200, {}, json.dumps(answers[len(sent) - 1]).encode())

    clock = ManualClock()
    data = SessionData(CoreClient(["http://core"], Transport()), 30, clock=clock)

    def seen(exp_s: float) -> Any:
        value = data.header_value(verifier.Session("u", "u", "h", "public", int(exp_s * 1000), 0, {}, "cookie"))
        return decoded(value or "")["n"]

    assert [seen(5000), seen(5000)] == [0, 0]
    clock.now += 31
    assert seen(1040) == 1  # refetched after 30 s; this entry lives until the token's exp (1040)
    clock.now = 1039
    assert seen(5000) == 1
    clock.now = 1041
    assert seen(5000) == 2
    assert len(sent) == 3 and all("/recipe/session?sessionHandle=h" in url for url in sent)


def test_the_core_client_says_it_may_block_before_asking() -> None:
    from forward_auth.blocking import REFUSE, no_waiting

    class Transport:
        def request(self, *args: Any, **kwargs: Any) -> Reply:
            raise AssertionError("the core was asked")

    data = SessionData(CoreClient(["http://core"], Transport()), 30)
    with no_waiting(REFUSE), pytest.raises(CoreUnavailable):
        data.header_value(verifier.Session("u", "u", "h", "public", 2**41, 0, {}, "cookie"))
