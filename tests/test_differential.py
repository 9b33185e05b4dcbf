"""Differential suite: for each request, the service decides what supertokens-python 0.31.4's
``verify_session`` decides, against the same development core over real HTTP.

Compared per scenario: status, body message (or the verified user), which cookies are cleared,
whether a new access token is handed to the browser, and the ``front-token`` header.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

import falcon.testing
import pytest
from fastapi.testclient import TestClient
from sdk_oracle import POLICY, ROUTES, init_sdk, oracle_app

from forward_auth import settings as settings_module
from forward_auth.app import create_app
from forward_auth.devcore.server import start_in_thread
from forward_auth.devcore.state import DevCore

API_KEY = "differential-key"


@dataclass(frozen=True)
class Config:
    """One SDK configuration and the service settings that mean the same."""

    anti_csrf: str = "NONE"
    static_key: bool = False
    expired_status: int = 401

    def sdk_options(self) -> dict[str, Any]:
        return {"anti_csrf": self.anti_csrf, "use_dynamic_access_token_signing_key": not self.static_key,
                "session_expired_status_code": self.expired_status}

    def settings(self, core_url: str, policy_file: str) -> settings_module.Settings:
        return settings_module.load({
            "core_url": core_url, "core_api_key": API_KEY, "anti_csrf": self.anti_csrf, "policy_file": policy_file,
            "use_static_signing_key": str(self.static_key), "session_expired_status": str(self.expired_status),
            "jwks_refetch_cooldown_seconds": "0",
        }, environ={})


CUSTOM, TOKEN, STATIC, LEGACY_440 = Config("VIA_CUSTOM_HEADER"), Config("VIA_TOKEN"), Config(static_key=True), \
    Config(expired_status=440)

Headers = dict[str, str]


@dataclass(frozen=True)
class Case:
    """A request: built once against the core (it may create, refresh or revoke sessions)."""

    name: str
    build: Callable[[DevCore], Headers]
    method: str = "GET"
    route: str = "required"
    config: Config = field(default_factory=Config)


# --- request builders ------------------------------------------------------------------------

def session(core: DevCore, **kwargs: Any) -> dict[str, Any]:
    return core.create_session(kwargs.pop("tenant", "public"), kwargs.pop("user", "alice"),
                               kwargs.pop("jwt", {"st-role": {"v": ["admin"], "t": 1}}), {}, **kwargs)


def at(answer: dict[str, Any]) -> str:
    return answer["accessToken"]["token"]


def cookie(token: str, **extra: str) -> Headers:
    return {"Cookie": "; ".join([f"sAccessToken={token}"] + [f"{k}={v}" for k, v in extra.items()])}


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def minted(*, version: int = 5, key: str = "dynamic", header: dict[str, Any] | None = None,
           via: Callable[[str], Headers] = cookie, **claims: Any) -> Callable[[DevCore], Headers]:
    def build(core: DevCore) -> Headers:
        handle = session(core)["session"]["handle"]
        return via(core.mint_token(version=version, key=key, claim_overrides=claims, header_overrides=header,
                                   session_handle=handle))
    return build


def live(via: Callable[[str], Headers] = cookie, **kwargs: Any) -> Callable[[DevCore], Headers]:
    return lambda core: via(at(session(core, **kwargs)))


def refreshed(via: Callable[[str], Headers] = cookie) -> Callable[[DevCore], Headers]:
    """A token just minted by a refresh: it carries parentRefreshTokenHash1 (promotion)."""
    def build(core: DevCore) -> Headers:
        first = session(core)
        return via(at(core.refresh_session(first["refreshToken"]["token"])))
    return build


def revoked(*, refresh_first: bool = False) -> Callable[[DevCore], Headers]:
    def build(core: DevCore) -> Headers:
        created = session(core)
        token = at(core.refresh_session(created["refreshToken"]["token"])) if refresh_first else at(created)
        core.remove_sessions([created["session"]["handle"]])
        return cookie(token)
    return build


def tampered(core: DevCore) -> Headers:
    header, payload, signature = at(session(core)).split(".")
    other_header, other_payload, _ = at(session(core, user="mallory")).split(".")
    return cookie(f"{header}.{other_payload}.{signature}")


def alg_hs256(core: DevCore) -> Headers:
    return cookie(core.mint_token(header_overrides={"alg": "HS256"}, session_handle=session(core)["session"]["handle"]))


def now_s(delta: int = 0) -> int:
    return int(time.time()) + delta


def fixed(headers: Headers) -> Callable[[DevCore], Headers]:
    return lambda core: dict(headers)


def with_extra(build: Callable[[DevCore], Headers], extra: Headers) -> Callable[[DevCore], Headers]:
    return lambda core: {**build(core), **extra}


def csrf_session(core: DevCore) -> tuple[str, str]:
    created = session(core, enable_anti_csrf=True)
    return at(created), created["antiCsrfToken"]


def csrf(header: str | None) -> Callable[[DevCore], Headers]:
    """A VIA_TOKEN cookie session, sending the right, a wrong, or no anti-csrf header."""
    def build(core: DevCore) -> Headers:
        token, value = csrf_session(core)
        sent = {"right": value, "wrong": "not-it"}.get(header or "")
        return {**cookie(token), **({"anti-csrf": sent} if sent else {})}
    return build


def csrf_v2(header: str | None) -> Callable[[DevCore], Headers]:
    def build(core: DevCore) -> Headers:
        created = session(core, enable_anti_csrf=True)
        token = core.mint_token(version=2, session_handle=created["session"]["handle"],
                                claim_overrides={"antiCsrfToken": created["antiCsrfToken"]})
        sent = {"right": created["antiCsrfToken"], "wrong": "not-it"}.get(header or "")
        return {**cookie(token), **({"anti-csrf": sent} if sent else {})}
    return build


def tenant(core: DevCore) -> Headers:
    return cookie(at(session(core, tenant="tenant1", user="bob")))


CASES: list[Case] = [
    # versions and transports
    Case("v5 cookie", live()),
    Case("v5 bearer", live(via=bearer)),
    Case("v5 cookie url-encoded", lambda core: cookie(quote(at(session(core)), safe=""))),
    Case("v5 cookie quoted", lambda core: cookie('"' + at(session(core)) + '"')),
    Case("v4 token", minted(version=4, rsub=None)),
    Case("v3 token", minted(version=3, rsub=None, tId=None)),
    Case("no version header counts as v3", minted(header={"version": None}, rsub=None, tId=None)),
    Case("numeric version header", minted(header={"version": 5})),
    Case("v2 legacy valid", minted(version=2)),
    Case("v2 legacy expired", minted(version=2, expiryTime=(now_s() - 10) * 1000)),
    Case("v2 legacy foreign key", minted(version=2, key="foreign")),
    Case("v2 legacy bearer", minted(version=2, via=bearer)),
    Case("tenant session", tenant),
    # token failures
    Case("v5 expired", minted(exp=now_s(-1))),
    Case("v5 expires now", minted(exp=now_s())),
    Case("v5 tampered payload", tampered),
    Case("v5 foreign kid", minted(key="foreign")),
    Case("v5 static kid, dynamic config", minted(key="static")),
    Case("v5 iat in the future", minted(iat=now_s(30))),
    Case("v5 nbf in the future", minted(nbf=now_s(30))),
    Case("v5 with aud", minted(aud="someone")),
    Case("v5 alg HS256", alg_hs256),
    Case("v5 stt=1", minted(stt=1)),
    Case("v5 missing tId", minted(tId=None)),
    Case("v5 missing rsub", minted(rsub=None)),
    Case("v5 sub not a string", minted(sub=42)),
    Case("garbage cookie", fixed(cookie("abc.def"))),
    Case("16 KB garbage cookie", fixed(cookie("a" * 16384))),
    Case("latin-1 garbage cookie", fixed(cookie("\xe9\xff.\xe9.\xff"))),
    Case("no token", fixed({})),
    Case("refresh token only", fixed({"Cookie": "sRefreshToken=abc"})),
    Case("lower-case bearer", lambda core: {"Authorization": "bearer " + at(session(core))}),
    # selection rules
    Case("duplicate sAccessToken", lambda core: {"Cookie": f"sAccessToken={at(session(core))}; "
                                                           f"sAccessToken={at(session(core))}"}),
    Case("legacy sIdRefreshToken with valid cookie", lambda core: cookie(at(session(core)), sIdRefreshToken="x")),
    Case("legacy sIdRefreshToken with valid bearer", lambda core: {**bearer(at(session(core))),
                                                                   "Cookie": "sIdRefreshToken=x"}),
    Case("valid bearer and garbage cookie", lambda core: {**bearer(at(session(core))), **cookie("x.y")}),
    Case("garbage bearer and valid cookie", lambda core: {**bearer("x.y"), **cookie(at(session(core)))}),
    Case("bearer user wins over cookie user", lambda core: {**bearer(at(session(core, user="h"))),
                                                            **cookie(at(session(core, user="c")))}),
    # the core: promotion, revocation
    Case("refreshed token is promoted (cookie)", refreshed()),
    Case("refreshed token is promoted (header)", refreshed(via=bearer)),
    Case("revoked, no database check", revoked()),
    Case("revoked, database check", revoked(), route="checkdb"),
    Case("revoked refreshed token", revoked(refresh_first=True)),
    Case("valid, database check", live(), route="checkdb"),
    Case("expired, database check", minted(exp=now_s(-1)), route="checkdb"),
    Case("garbage, database check", fixed(cookie("x")), route="checkdb"),
    # methods with anti-CSRF off
    *[Case(f"{m} without CSRF protection", live(), method=m) for m in ("POST", "PUT", "PATCH", "DELETE")],
    Case("HEAD no token", fixed({}), method="HEAD"),
    # optional sessions
    Case("optional, no token", fixed({}), route="optional"),
    Case("optional, garbage", fixed(cookie("x.y.z")), route="optional"),
    Case("optional, expired", minted(exp=now_s(-1)), route="optional"),
    Case("optional, valid", live(), route="optional"),
    Case("optional, sIdRefreshToken", fixed({"Cookie": "sIdRefreshToken=x"}), route="optional"),
    Case("optional, revoked session", revoked(), route="optional"),
    Case("optional, OPTIONS with an expired token", minted(exp=now_s(-1)), method="OPTIONS", route="optional"),
    Case("optional, TRACE with a valid token", live(), method="TRACE", route="optional"),
    Case("custom header: optional OPTIONS without rid", live(), method="OPTIONS", route="optional", config=CUSTOM),
    # VIA_CUSTOM_HEADER
    Case("custom header: POST without rid", live(), method="POST", config=CUSTOM),
    Case("custom header: POST with rid", with_extra(live(), {"rid": "anti-csrf"}), method="POST", config=CUSTOM),
    Case("custom header: GET without rid", live(), config=CUSTOM),
    Case("custom header: DELETE without rid", live(), method="DELETE", config=CUSTOM),
    Case("custom header: HEAD without rid", live(), method="HEAD", config=CUSTOM),
    Case("custom header: bearer POST without rid", live(via=bearer), method="POST", config=CUSTOM),
    Case("custom header: forced on GET", live(), route="csrf_on", config=CUSTOM),
    Case("custom header: skipped on POST", live(), method="POST", route="csrf_off", config=CUSTOM),
    Case("custom header: POST, no token", fixed({}), method="POST", config=CUSTOM),
    Case("custom header: POST expired with rid", with_extra(minted(exp=now_s(-1)), {"rid": "x"}), method="POST",
         config=CUSTOM),
    # VIA_TOKEN
    Case("via token: POST right", csrf("right"), method="POST", config=TOKEN),
    Case("via token: POST wrong", csrf("wrong"), method="POST", config=TOKEN),
    Case("via token: POST missing", csrf(None), method="POST", config=TOKEN),
    Case("via token: GET missing", csrf(None), config=TOKEN),
    Case("via token: forced on GET, right", csrf("right"), route="csrf_on", config=TOKEN),
    Case("via token: forced on GET, missing", csrf(None), route="csrf_on", config=TOKEN),
    Case("via token: token without claim", with_extra(live(), {"anti-csrf": "x"}), method="POST", config=TOKEN),
    Case("via token: bearer POST missing", live(via=bearer), method="POST", config=TOKEN),
    Case("via token: v2 POST right", csrf_v2("right"), method="POST", config=TOKEN),
    Case("via token: v2 POST wrong", csrf_v2("wrong"), method="POST", config=TOKEN),
    Case("via token: v2 POST missing", csrf_v2(None), method="POST", config=TOKEN),
    Case("via token: revoked, database check", revoked(), route="checkdb", config=TOKEN),
    Case("via token: promotion echoes anti-csrf", lambda core: {**refreshed()(core), "anti-csrf": "echo-me"},
         config=TOKEN),
    Case("via token: promotion in header mode", lambda core: {**refreshed(via=bearer)(core), "anti-csrf": "x"},
         config=TOKEN),
    # static signing keys
    Case("static config: static kid", lambda core: cookie(at(session(core, use_dynamic_key=False))), config=STATIC),
    Case("static config: dynamic kid", live(), config=STATIC),
    # 440 (legacy status)
    Case("440: expired", minted(exp=now_s(-1)), config=LEGACY_440),
    Case("440: no token", fixed({}), config=LEGACY_440),
    Case("440: revoked, database check", revoked(), route="checkdb", config=LEGACY_440),
    Case("440: valid", live(), config=LEGACY_440),
    # claim validators (values present: the SDK would otherwise refetch them through the core)
    *[Case(f"claims: {route}, {label}", live(jwt=payload), route=route) for route, label, payload in [
        ("role_admin", "has admin", {"st-role": {"v": ["admin", "user"], "t": 1}}),
        ("role_admin", "has user only", {"st-role": {"v": ["user"], "t": 1}}),
        ("role_admin", "empty roles", {"st-role": {"v": [], "t": 1}}),
        ("roles_admin_editor", "has admin only", {"st-role": {"v": ["admin"], "t": 1}}),
        ("roles_admin_editor", "has neither", {"st-role": {"v": ["user"], "t": 1}}),
        ("roles_admin_editor", "has both", {"st-role": {"v": ["editor", "admin"], "t": 1}}),
        ("perm_edit", "has read", {"st-perm": {"v": ["read"], "t": 1}}),
        ("perm_edit", "has edit", {"st-perm": {"v": ["read", "edit"], "t": 1}}),
        ("email_verified", "verified", {"st-ev": {"v": True, "t": 1}}),
        ("email_verified", "not verified, fresh", {"st-ev": {"v": False, "t": 4102444800000}}),
        ("roles_all", "has both", {"st-role": {"v": ["editor", "admin"], "t": 1}}),
        ("roles_all", "has admin only", {"st-role": {"v": ["admin"], "t": 1}}),
        ("roles_any", "has editor", {"st-role": {"v": ["editor"], "t": 1}}),
        ("roles_any", "has neither", {"st-role": {"v": ["user"], "t": 1}}),
        ("roles_excludes", "not banned", {"st-role": {"v": ["user"], "t": 1}}),
        ("roles_excludes", "banned", {"st-role": {"v": ["user", "banned"], "t": 1}}),
        ("roles_excludes_all", "suspended", {"st-role": {"v": ["suspended"], "t": 1}}),
        ("roles_excludes_all", "clean", {"st-role": {"v": [], "t": 1}}),
        ("perm_all_ev_fresh", "all good", {"st-perm": {"v": ["read", "write"], "t": 1},
                                           "st-ev": {"v": True, "t": 4102444800000}}),
        ("perm_all_ev_fresh", "read only, unverified", {"st-perm": {"v": ["read"], "t": 1},
                                                        "st-ev": {"v": False, "t": 4102444800000}}),
    ]],
    Case("claims: role_admin, expired token", minted(exp=now_s(-1)), route="role_admin"),
    Case("claims: role_admin, v2 token without roles claim", minted(version=2, userData={"st-role": {"v": ["x"],
                                                                                                     "t": 1}}),
         route="role_admin"),
]


def duplicated(first: Callable[[DevCore], str], second: Callable[[DevCore], str]) -> Callable[[DevCore], Headers]:
    """Two ``sAccessToken`` cookies: python keeps the last, node the first; their detectors differ."""
    return lambda core: {"Cookie": f"sAccessToken={first(core)}; sAccessToken={second(core)}"}


def a_token(core: DevCore) -> str:
    return at(session(core))


def a_v2_token(core: DevCore) -> str:
    """A v2 token: its padded base64 holds ``=``, which python's duplicate detector skips."""
    return core.mint_token(version=2, session_handle=session(core)["session"]["handle"])


#: Where supertokens-python and supertokens-node decide differently (issue 14), short of a 500.
FAMILY_CASES: list[Case] = [
    # cookie parsing and duplicates
    Case("j: JSON cookie value", lambda core: {"Cookie": f'sAccessToken=j:"{at(session(core))}"'}),
    Case("j: JSON cookie value, optional", lambda core: {"Cookie": f'sAccessToken=j:"{at(session(core))}"'},
         route="optional"),
    Case("j: JSON object cookie value", fixed({"Cookie": 'sAccessToken=j:{"a":1}'})),
    Case("duplicate: valid then garbage", duplicated(a_token, lambda core: "garbage")),
    Case("duplicate: garbage then valid", duplicated(lambda core: "garbage", a_token)),
    Case("duplicate: two v2 tokens", duplicated(a_v2_token, a_v2_token)),
    Case("duplicate: second value holds =", duplicated(a_token, lambda core: "x=y")),
    Case("duplicate: second without a value", lambda core: {"Cookie": f"sAccessToken={a_token(core)}; sAccessToken"}),
    Case("duplicate: valid twice, bearer wins", lambda core: {**duplicated(a_token, a_token)(core),
                                                              **bearer(a_token(core))}),
    Case("440: duplicate valid then garbage", duplicated(a_token, lambda core: "garbage"), config=LEGACY_440),
    Case("custom header: duplicate v2 tokens, POST with rid", with_extra(duplicated(a_v2_token, a_v2_token),
                                                                         {"rid": "x"}), method="POST", config=CUSTOM),
    # JWT claim rules: PyJWT against jose (an hour ahead: cases are built at collection, long before a full run ends)
    Case("v5 numeric jti", minted(jti=7)),
    Case("v5 string jti", minted(jti="seven")),
    Case("v5 aud list", minted(aud=["a", "b"])),
    Case("v5 iat in the future, bearer", minted(iat=now_s(3600), via=bearer)),
    Case("440: v5 iat in the future", minted(iat=now_s(3600)), config=LEGACY_440),
    Case("via token: iat in the future, POST right", lambda core: {**cookie(core.mint_token(
        claim_overrides={"iat": now_s(3600), "antiCsrfToken": "c"}, session_handle=session(core)["session"]["handle"])),
        "anti-csrf": "c"}, method="POST", config=TOKEN),
    Case("v5 signature with a trailing =", lambda core: cookie(at(session(core)) + "=")),
    # token header parsing
    Case("version header 5abc", minted(header={"version": "5abc"})),
    Case("version header 5.0", minted(header={"version": "5.0"})),
    Case("version header 0x5", minted(header={"version": "0x5"})),
    Case("v1 header", minted(version=1)),
    Case("v4 missing tId", minted(version=4, rsub=None, tId=None)),
    Case("v5 missing tId, database check", minted(tId=None), route="checkdb"),
    Case("custom header: v5 missing tId, POST with rid", with_extra(minted(tId=None), {"rid": "x"}), method="POST",
         config=CUSTOM),
]
CASES += FAMILY_CASES
CASES.sort(key=lambda case: (case.config.anti_csrf, case.config.static_key, case.config.expired_status))


# --- running both sides ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def devcore() -> Iterator[tuple[DevCore, str]]:
    core, url, stop = start_in_thread(api_key=API_KEY)
    yield core, url
    stop()


class Sides:
    """The oracle and the service for one configuration (the SDK is process-global)."""

    def __init__(self, core_url: str, policy_file: str) -> None:
        self._core_url = core_url
        self._policy_file = policy_file
        self._config: Config | None = None
        self.oracle: TestClient
        self.service: falcon.testing.TestClient

    def use(self, config: Config) -> Sides:
        if config != self._config:
            init_sdk(self._core_url, API_KEY, **config.sdk_options())
            self.oracle = TestClient(oracle_app())
            self.service = falcon.testing.TestClient(create_app(config.settings(self._core_url, self._policy_file)))
            self._config = config
        return self


@pytest.fixture(scope="module")
def sides(devcore: tuple[DevCore, str], tmp_path_factory: pytest.TempPathFactory) -> Sides:
    policy_file = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy_file.write_text(POLICY)
    return Sides(devcore[1], str(policy_file))


def outcome(status: int, set_cookies: list[str], headers: dict[str, str], body: Any, method: str) -> dict[str, Any]:
    cookies: dict[str, str] = {}
    for line in set_cookies:
        parsed = SimpleCookie()
        parsed.load(line)
        cookies.update({name: morsel.value for name, morsel in parsed.items()})
    if method == "HEAD":
        message = None  # no body to compare
    elif status == 200:
        message = ("user", body.get("userId"))
    else:
        message = body.get("message"), body.get("claimValidationErrors")
    return {
        "status": status,
        "message": message,
        "cleared": sorted(name for name, value in cookies.items() if value == ""),
        "new_access_token": bool(cookies.get("sAccessToken") or headers.get("st-access-token")),
        "front_token": None if "front-token" not in headers else (
            "remove" if headers["front-token"] == "remove" else "set"),
        "anti_csrf": headers.get("anti-csrf"),
        # the names, as a browser reads them: the SDK names front-token twice when it clears a session
        "exposed": sorted({name.strip() for name in headers.get("access-control-expose-headers", "").split(",")} - {""}),
    }


def ask_oracle(sides: Sides, case: Case, headers: Headers) -> dict[str, Any]:
    raw = {name: value.encode("latin-1") for name, value in headers.items()}  # as bytes on the wire
    reply = sides.oracle.request(case.method, "/" + case.route, headers=raw)
    body = reply.json() if reply.content else {}
    return outcome(reply.status_code, reply.headers.get_list("set-cookie"),
                   {k.lower(): v for k, v in reply.headers.items()}, body, case.method)


def ask_service(sides: Sides, case: Case, headers: Headers) -> dict[str, Any]:
    sent = {**headers, "X-Forwarded-Method": case.method, "X-Forwarded-Uri": "/" + case.route}
    result = sides.service.simulate_get("/verify", params=ROUTES[case.route], headers=sent)
    set_cookies = [f"{c.name}={c.value}" for c in result.cookies.values()]
    return outcome(result.status_code, set_cookies, {k.lower(): v for k, v in result.headers.items()},
                   result.json if result.content else {"userId": result.headers.get("x-user-id")}, case.method)


def test_there_are_at_least_sixty_scenarios() -> None:
    assert len(CASES) >= 60
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_service_decides_as_the_sdk(case: Case, sides: Sides, devcore: tuple[DevCore, str]) -> None:
    sides.use(case.config)
    headers = case.build(devcore[0])
    expected = ask_oracle(sides, case, headers)
    assert ask_service(sides, case, headers) == expected
