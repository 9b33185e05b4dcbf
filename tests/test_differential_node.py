"""Differential suite against supertokens-node 24.0.3: under ``sdk_profile: node`` the service
decides every request of ``tests/test_differential.py`` (and the OPTIONS/TRACE cases, where
supertokens-python answers 500) as node's ``verifySession()`` under express does, a real process on
the same development core. Compared: what the Python suite compares, plus the identity (user,
recipe user, tenant, handle)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import falcon.testing
import pytest
from sdk_node import NodeOracle
from sdk_oracle import POLICY, ROUTES
from test_differential import (
    API_KEY,
    CASES,
    CUSTOM,
    FAMILY_CASES,
    LEGACY_440,
    TOKEN,
    Case,
    Config,
    Headers,
    at,
    cookie,
    fixed,
    live,
    minted,
    now_s,
    outcome,
    revoked,
    session,
)

from forward_auth.app import create_app
from forward_auth.devcore.server import start_in_thread
from forward_auth.devcore.state import DevCore

#: Where supertokens-node passes a request before it looks at any token, and python raises.
NODE_ONLY: list[Case] = [
    Case("OPTIONS required, no token", fixed({}), method="OPTIONS"),
    Case("OPTIONS required, garbage", fixed(cookie("x.y.z")), method="OPTIONS"),
    Case("OPTIONS required, expired", minted(exp=now_s(-1)), method="OPTIONS"),
    Case("OPTIONS required, revoked, database check", revoked(), method="OPTIONS", route="checkdb"),
    Case("OPTIONS required, sIdRefreshToken", fixed({"Cookie": "sIdRefreshToken=x"}), method="OPTIONS"),
    Case("TRACE required, valid", live(), method="TRACE"),
    Case("OPTIONS required, claims unmet", live(jwt={"st-role": {"v": ["user"], "t": 1}}), method="OPTIONS",
         route="role_admin"),
    Case("custom header: OPTIONS required without rid", live(), method="OPTIONS", config=CUSTOM),
    Case("via token: OPTIONS required, anti-csrf missing", lambda core: cookie(at(session(core, enable_anti_csrf=True))),
         method="OPTIONS", config=TOKEN),
    Case("440: OPTIONS required, no token", fixed({}), method="OPTIONS", config=LEGACY_440),
    Case("sub with spaces is trimmed", minted(sub=" alice ")),
]
NODE_CASES = sorted(CASES + NODE_ONLY,
                    key=lambda case: (case.config.anti_csrf, case.config.static_key, case.config.expired_status))


@pytest.fixture(scope="module")
def devcore() -> Iterator[tuple[DevCore, str]]:
    core, url, stop = start_in_thread(api_key=API_KEY)
    yield core, url
    stop()


@pytest.fixture(scope="module")
def node(devcore: tuple[DevCore, str]) -> Iterator[NodeOracle]:
    oracle = NodeOracle(devcore[1], API_KEY)
    yield oracle
    oracle.close()


class Sides:
    """The node oracle and the service (``sdk_profile: node``) for one configuration."""

    def __init__(self, node: NodeOracle, core_url: str, policy_file: str) -> None:
        self.node = node
        self._core_url = core_url
        self._policy_file = policy_file
        self._config: Config | None = None
        self.service: falcon.testing.TestClient
        self.python_service: falcon.testing.TestClient

    def use(self, config: Config) -> Sides:
        if config != self._config:
            self.node.init(antiCsrf=config.anti_csrf, useDynamicAccessTokenSigningKey=not config.static_key,
                           sessionExpiredStatusCode=config.expired_status)
            settings = config.settings(self._core_url, self._policy_file)
            self.service = falcon.testing.TestClient(create_app(dataclasses.replace(settings, sdk_profile="node")))
            self.python_service = falcon.testing.TestClient(create_app(settings))
            self._config = config
        return self


@pytest.fixture(scope="module")
def sides(node: NodeOracle, devcore: tuple[DevCore, str], tmp_path_factory: pytest.TempPathFactory) -> Sides:
    policy_file = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy_file.write_text(POLICY)
    return Sides(node, devcore[1], str(policy_file))


def ask_node(sides: Sides, case: Case, headers: Headers) -> dict[str, Any]:
    raw = {name: value.encode("latin-1") for name, value in headers.items()}
    reply = sides.node.request(case.method, "/" + case.route, headers=raw)
    body = reply.json() if reply.content else {}
    result = outcome(reply.status_code, reply.headers.get_list("set-cookie"),
                     {k.lower(): v for k, v in reply.headers.items()}, body, case.method)
    identity = {key: body.get(key) for key in ("tenantId", "recipeUserId", "handle")} if body.get("userId") else {}
    return {**result, "identity": identity}


def ask_service(sides: Sides, case: Case, headers: Headers, *, python: bool = False) -> dict[str, Any]:
    sent = {**headers, "X-Forwarded-Method": case.method, "X-Forwarded-Uri": "/" + case.route}
    reply = (sides.python_service if python else sides.service).simulate_get("/verify", params=ROUTES[case.route], headers=sent)
    found = {key: reply.headers.get(name) for key, name in (("userId", "x-user-id"), ("tenantId", "x-tenant-id"),
             ("recipeUserId", "x-recipe-user-id"), ("handle", "x-session-handle"))}
    found = {key: None if value is None else unquote(value) for key, value in found.items()}  # header_value's escapes
    body = reply.json if reply.content else {"userId": found["userId"]}
    result = outcome(reply.status_code, [f"{c.name}={c.value}" for c in reply.cookies.values()],
                     {k.lower(): v for k, v in reply.headers.items()}, body, case.method)
    identity = {key: found[key] for key in ("tenantId", "recipeUserId", "handle")} if found["userId"] else {}
    return {**result, "identity": identity}


def test_there_are_at_least_eighty_scenarios() -> None:
    assert len(NODE_CASES) >= 80
    assert len({case.name for case in NODE_CASES}) == len(NODE_CASES)


@pytest.mark.parametrize("case", NODE_CASES, ids=[case.name for case in NODE_CASES])
def test_node_profile_decides_as_supertokens_node(case: Case, sides: Sides, devcore: tuple[DevCore, str]) -> None:
    sides.use(case.config)
    headers = case.build(devcore[0])
    expected = ask_node(sides, case, headers)
    assert ask_service(sides, case, headers) == expected


#: Family cases where both SDKs agree: the controls beside each difference.
AGREEING = {"j: JSON object cookie value", "duplicate: valid twice, bearer wins", "v5 string jti"}


def test_the_families_differ_between_the_profiles(sides: Sides, devcore: tuple[DevCore, str]) -> None:
    """Each family case (but the controls) gets another answer under the python profile, which
    ``test_differential.py`` holds to supertokens-python: the suite above compares real differences."""
    agreeing = set()
    for case in sorted(FAMILY_CASES + NODE_ONLY, key=lambda case: case.config.anti_csrf):
        sides.use(case.config)
        headers = case.build(devcore[0])
        if ask_service(sides, case, headers) == ask_service(sides, case, headers, python=True):
            agreeing.add(case.name)
    assert agreeing == AGREEING


@pytest.mark.parametrize("mode", ["cookie", "header"])
def test_node_backed_sessions_verify_at_the_gate_under_both_profiles(sides: Sides, mode: str) -> None:
    """A session created, then refreshed, by supertokens-node on the dev core: the gate allows its
    tokens under either profile (the refreshed one promoted through the core, as node does)."""
    sides.use(Config())
    login = sides.node.request("POST", "/__login", {"st-auth-mode": mode.encode()}, json={"userId": "nina"})
    assert login.status_code == 200, login.text

    def tokens_of(reply: Any) -> tuple[str, str]:
        if mode == "header":
            return reply.headers["st-access-token"], reply.headers["st-refresh-token"]
        jar = {c.split("=", 1)[0]: c.split(";", 1)[0].split("=", 1)[1] for c in reply.headers.get_list("set-cookie")}
        return jar["sAccessToken"], jar["sRefreshToken"]

    access, refresh = tokens_of(login)
    sent = {"Authorization": f"Bearer {refresh}"} if mode == "header" else {"Cookie": f"sRefreshToken={refresh}"}
    refreshed = sides.node.request("POST", "/auth/session/refresh", {k: v.encode() for k, v in
                                                                    {**sent, "st-auth-mode": mode}.items()})
    assert refreshed.status_code == 200, refreshed.text
    new_access, _ = tokens_of(refreshed)
    assert new_access != access
    for token, promoted in ((access, False), (new_access, True)):
        headers = {"Authorization": f"Bearer {token}"} if mode == "header" else {"Cookie": f"sAccessToken={token}"}
        for client in (sides.service, sides.python_service):
            reply = client.simulate_get("/verify", headers=headers)
            assert (reply.status_code, reply.headers["x-user-id"]) == (200, "nina")
            assert ("front-token" in reply.headers) is promoted  # the core re-minted the refreshed token once
