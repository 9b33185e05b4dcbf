"""Route policies end to end: real nginx with ``deploy/nginx-policy.conf.example`` (ONE auth location
for every route) in front of the echoing application, ``forward-auth serve --policy-file`` behind it.

    client -> nginx (every path: auth_request /verify?proxy=nginx) -> echo application
                 \\-> forward-auth --policy-file POLICY --anti-csrf VIA_CUSTOM_HEADER -> dev core

The service picks the rule from the original method and path nginx sends it; nginx passes on
the identity and claim headers of the answer (``X-User-Roles``, ``X-User-Email``) and the rule's
name (``X-Forward-Auth-Rule``) and nothing the client sent under those names. Every case
asserts what the browser gets and what the application received.
"""

from __future__ import annotations

import random
import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import proxy_harness
import pytest
import yaml
from proxy_harness import (
    ROOT,
    Answer,
    DevCore,
    EchoUpstream,
    Ports,
    Received,
    dev_core,
    free_port,
    http_request,
    process,
    start_proxy,
    startup_problems,
    tampered,
    wait_http,
)
from test_paths import READINGS, SEGMENTS, rule_of_reading
from test_proxies import (
    API_KEY,
    CLI,
    FORGED,
    NAVIGATION,
    assert_anonymous,
    assert_identity,
    assert_no_original_request_headers,
    cookie,
    invalid_claim_body,
)

from forward_auth.policy import parse_policy

CONFIG = ROOT / "deploy" / "nginx-policy.conf.example"

POLICY = """\
default: {session: required}
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
    headers: {X-User-Roles: st-role, X-User-Email: email}
  - name: webhook
    match: {path_prefix: /webhook/}
    anti_csrf: false
  - name: reports-read
    match: {path_prefix: /reports/, methods: [GET]}
    session: public
  - name: verified
    match: {path_prefix: /verified/}
    claims:
      - {claim: st-ev, equals: true, redirect: /verify-email}
  - name: api-only
    match: {path_prefix: /api-only/}
    on_denied: api
"""
#: The service's sign-in page for denied browser navigations (README "Protecting pages").
LOGIN_URL = "/signin"

#: Claim headers a client sends itself, on top of the identity and original-request ones:
#: none of these values may ever reach the application.
FORGED_CLAIMS = {**FORGED, "X-User-Roles": "admin,forged-role", "X-User-Email": "mallory@forged.example",
                 "X_User_Roles": "admin,forged-alias", "X-Forward-Auth-Rule": "forged-rule",
                 "X-Access-Token-Payload": "forged-payload"}
CLAIM_HEADERS = ("X-User-Roles", "X-User-Email")


# --- the stack ------------------------------------------------------------------------------

@dataclass
class Site:
    """nginx with the policy config, the service and the application behind it."""

    port: int
    core: DevCore
    echo: EchoUpstream
    service_log: Path
    nginx_dir: Path

    def token(self, user_id: str, roles: list[str] | None = None, email: str | None = None) -> str:
        """An access token whose payload carries ``st-role`` (SuperTokens' claim shape) and ``email``."""
        data: dict[str, Any] = {}
        if roles is not None:
            data["st-role"] = {"v": roles, "t": 0}
        if email is not None:
            data["email"] = email
        created = self.core.post("/dev/sessions", {"userId": user_id, "userDataInJWT": data})
        return str(created["accessToken"]["token"])

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
        return http_request(self.port, method, path, headers)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("policy")
    policy_file = work / "policy.yaml"
    policy_file.write_text(POLICY)
    core_port, service_port, listen = free_port(), free_port(), free_port()
    core_url = f"http://127.0.0.1:{core_port}"
    service_log = work / "service.log"
    # start_proxy renders ROOT/nginx.conf.example: point it at a directory where that name is
    # this config, so the harness's templating, command line and route wait are used as they are.
    shim = work / "root"
    shim.mkdir()
    (shim / "nginx.conf.example").symlink_to(CONFIG)
    with ExitStack() as stack:
        echo = stack.enter_context(EchoUpstream())
        core = stack.enter_context(dev_core(core_port, API_KEY, work / "core.log"))
        stack.enter_context(process(
            [*CLI, "serve", "--bind", f"127.0.0.1:{service_port}", "--workers", "2", "--core-url", core_url,
             "--log-level", "info", "--anti-csrf", "VIA_CUSTOM_HEADER", "--policy-file", str(policy_file)],
            service_log, env={"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_LOGIN_URL": LOGIN_URL}))
        wait_http(f"http://127.0.0.1:{service_port}/readyz")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(proxy_harness, "ROOT", shim)
            stack.enter_context(start_proxy("nginx", work / "nginx", Ports(listen, service_port, echo.port)))
        yield Site(listen, core, echo, service_log, work / "nginx")


@pytest.fixture
def marker(request: pytest.FixtureRequest) -> str:
    """A unique query value per case, to find its requests at the application."""
    return f"case={request.node.name}-{uuid.uuid4().hex[:8]}"


# --- what the browser and the application must get ------------------------------------------

def allowed(site: Site, answer: Answer, marker: str, rule: str) -> Received:
    """The application answered, once, and was told which rule let the request through."""
    assert answer.status == 200 and answer.get("X-Echo") == "1", answer
    echo = answer.echo()
    assert len(site.echo.received(marker)) == 1, site.echo.received(marker)
    assert echo.values("X-Forward-Auth-Rule") == [rule], echo
    assert_no_original_request_headers(echo)
    return echo


def denied(site: Site, answer: Answer, marker: str, status: int, body: dict[str, object]) -> None:
    """The service's denial, delivered whole to the browser; the application never saw the request."""
    assert answer.status == status, answer
    assert answer.json == body, answer
    assert answer.get("X-Echo") is None and not site.echo.received(marker), "a denied request reached the application"
    assert answer.get("Cache-Control") == "no-store" and answer.get("X-Forward-Auth-Reason"), answer
    assert not [k for k, _ in answer.headers if k.lower().startswith("x-forward-auth-")
                and k.lower() != "x-forward-auth-reason"], f"nginx-only headers leaked to the browser: {answer}"


def no_claim_headers(echo: Received) -> None:
    for name in (*CLAIM_HEADERS, "X-Access-Token-Payload", "X-Forward-Auth-Omitted"):
        assert echo.values(name) == [], f"{name} reached the application: {echo}"


def nothing_forged(echo: Received) -> None:
    """Not one value a client sent under an identity, claim or original-request name."""
    forged = set(FORGED_CLAIMS.values())
    assert not [(k, v) for k, v in echo.headers if v in forged], f"a forged value reached the application: {echo}"


UNAUTHORISED = {"message": "unauthorised"}
TRY_REFRESH = {"message": "try refresh token"}


# --- the cases ------------------------------------------------------------------------------

def test_config_loads_without_warnings(site: Site) -> None:
    assert startup_problems("nginx", site.nginx_dir) == []


def test_public_rule_checks_nothing(site: Site, marker: str) -> None:
    """Even a tampered token: no check, no identity, no claim headers; the client's copies removed."""
    headers = {**cookie(tampered(site.token("alice", ["admin"], "a@example.com"))), **FORGED_CLAIMS}
    echo = allowed(site, site.request("GET", f"/public/page?{marker}", headers), marker, "public")
    assert_anonymous(echo)
    no_claim_headers(echo)
    nothing_forged(echo)


def test_optional_rule_without_session(site: Site, marker: str) -> None:
    echo = allowed(site, site.request("GET", f"/optional/page?{marker}", FORGED_CLAIMS), marker, "optional")
    assert_anonymous(echo)
    no_claim_headers(echo)
    nothing_forged(echo)


def test_optional_rule_with_session(site: Site, marker: str) -> None:
    """Identity, but not the claims: the optional rule forwards no claim headers."""
    headers = {**cookie(site.token("olga", ["admin"], "olga@example.com")), **FORGED_CLAIMS}
    echo = allowed(site, site.request("GET", f"/optional/page?{marker}", headers), marker, "optional")
    assert_identity(echo, "olga")
    no_claim_headers(echo)
    nothing_forged(echo)


def test_optional_rule_with_a_bad_token(site: Site, marker: str) -> None:
    """Optional is not public: a token that fails verification is still try refresh token."""
    answer = site.request("GET", f"/optional/page?{marker}", cookie(tampered(site.token("olga"))))
    denied(site, answer, marker, 401, TRY_REFRESH)


def test_default_rule_requires_a_session(site: Site, marker: str) -> None:
    denied(site, site.request("GET", f"/api/items?{marker}", FORGED_CLAIMS), marker, 401, UNAUTHORISED)


def test_default_rule_with_session(site: Site, marker: str) -> None:
    """Identity headers; the default rule forwards no claims, and the client's copies are removed."""
    headers = {**cookie(site.token("alice", ["admin"], "alice@example.com")), **FORGED_CLAIMS}
    echo = allowed(site, site.request("GET", f"/api/items?{marker}", headers), marker, "default")
    assert_identity(echo, "alice")
    no_claim_headers(echo)
    nothing_forged(echo)


def test_admin_rule_forwards_claim_headers(site: Site, marker: str) -> None:
    """Roles as a comma list, the email as it is; the client's X-User-Roles / -Email / -Id replaced."""
    headers = {**cookie(site.token("root", ["admin", "ops"], "root@example.com")), **FORGED_CLAIMS}
    echo = allowed(site, site.request("GET", f"/admin/users?{marker}", headers), marker, "admin")
    assert_identity(echo, "root")
    assert echo.values("X-User-Roles") == ["admin,ops"], echo
    assert echo.values("X-User-Email") == ["root@example.com"], echo
    nothing_forged(echo)


def test_admin_rule_claim_missing_from_token_is_not_forwarded(site: Site, marker: str) -> None:
    """No email in the token: no X-User-Email at all, in particular not the client's."""
    headers = {**cookie(site.token("root", ["admin"])), **FORGED_CLAIMS}
    echo = allowed(site, site.request("GET", f"/admin/users?{marker}", headers), marker, "admin")
    assert echo.values("X-User-Roles") == ["admin"], echo
    assert echo.values("X-User-Email") == [], echo
    nothing_forged(echo)


def test_admin_rule_wrong_role_gets_the_403_body(site: Site, marker: str) -> None:
    headers = {**cookie(site.token("alice", ["user"], "alice@example.com")), **FORGED_CLAIMS}
    denied(site, site.request("GET", f"/admin/users?{marker}", headers), marker, 403, invalid_claim_body(["user"]))


def test_a_raw_utf8_byte_in_the_path_is_judged_by_its_rule(site: Site, marker: str) -> None:
    """nginx passes the client's raw bytes in X-Original-URI; the service's server must hand
    them over (granian's RSGI layer dropped such headers: the default rule then let it in)."""
    token = site.token("alice", ["user"])
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as conn:
        conn.sendall(b"GET /admin/caf\xc3\xa9?" + marker.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Cookie: sAccessToken=" + token.encode() + b"\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 403 "), reply[:200]
    assert not site.echo.received(marker)


@pytest.mark.parametrize("raw", [b"/adm\xc4\xb1n/users", b"/\xef\xbc\x8e\xef\xbc\x8e/admin/users",
                                 b"/public/\xc0\xae\xc0\xae/admin/users", b"/admin/cafe\xcc\x81"])
def test_raw_bytes_that_servers_read_as_other_paths_are_refused(site: Site, marker: str, raw: bytes) -> None:
    """Raw UTF-8 as nginx passes it on: decoded as UTF-8 (as the application does), and refused
    when a case mapping, a compatibility form, NFC or an invalid sequence makes it another path."""
    token = site.token("alice", ["user"])
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as conn:
        conn.sendall(b"GET " + raw + b"?" + marker.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Cookie: sAccessToken=" + token.encode() + b"\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ") and b"ambiguous-path" in reply, reply[:300]
    assert not site.echo.received(marker)


def test_admin_rule_no_role_claim_gets_the_403_body(site: Site, marker: str) -> None:
    answer = site.request("GET", f"/admin/users?{marker}", cookie(site.token("alice")))
    reason = {"message": "value does not exist", "expectedToInclude": "admin", "actualValue": None}
    denied(site, answer, marker, 403,
           {"message": "invalid claim", "claimValidationErrors": [{"id": "st-role", "reason": reason}]})


def test_admin_rule_without_session(site: Site, marker: str) -> None:
    denied(site, site.request("GET", f"/admin/users?{marker}", FORGED_CLAIMS), marker, 401, UNAUTHORISED)


def test_claim_values_with_cr_lf_arrive_percent_encoded(site: Site, marker: str) -> None:
    """A claim cannot split the header it is forwarded in, nor add one; non-ASCII is encoded too."""
    token = site.token("eve", ["admin", "ops\r\nX-Injected: role"], "eve@example.com\r\nX-Injected: email\nX-Too: 1")
    echo = allowed(site, site.request("GET", f"/admin/users?{marker}", cookie(token)), marker, "admin")
    assert echo.values("X-User-Roles") == ["admin,ops%0D%0AX-Injected:%20role"], echo
    assert echo.values("X-User-Email") == ["eve@example.com%0D%0AX-Injected:%20email%0AX-Too:%201"], echo
    assert echo.values("X-Injected") == [] and echo.values("X-Too") == [], echo

    token = site.token("eve", ["admin", "usér"], "ève@example.com")
    echo = allowed(site, site.request("GET", f"/admin/users?{marker}-2", cookie(token)), f"{marker}-2", "admin")
    assert echo.values("X-User-Roles") == ["admin,us%C3%A9r"], echo
    assert echo.values("X-User-Email") == ["%C3%A8ve@example.com"], echo


def test_oversized_claim_is_left_out_and_named(site: Site, marker: str) -> None:
    """A claim header over 4096 bytes is not forwarded (nor cut): the application is told which."""
    email = "x" * 4100 + "@example.com"
    token = site.token("root", ["admin"], email)
    echo = allowed(site, site.request("GET", f"/admin/users?{marker}", cookie(token)), marker, "admin")
    assert echo.values("X-User-Email") == [] and echo.values("X-User-Roles") == ["admin"], echo
    assert echo.values("X-Forward-Auth-Omitted") == ["X-User-Email"], echo
    forged = {**cookie(site.token("root", ["admin"])), "X-Forward-Auth-Omitted": "forged-omitted"}
    echo = allowed(site, site.request("GET", f"/admin/users?{marker}-2", forged), f"{marker}-2", "admin")
    assert echo.values("X-Forward-Auth-Omitted") == [], echo


def test_anti_csrf_on_by_default(site: Site, marker: str) -> None:
    """VIA_CUSTOM_HEADER: a POST without `rid` is try refresh token; with it, it goes through."""
    token = site.token("alice")
    denied(site, site.request("POST", f"/api/items?{marker}", cookie(token)), marker, 401, TRY_REFRESH)
    echo = allowed(site, site.request("POST", f"/api/items?{marker}-rid", {**cookie(token), "rid": "session"}),
                   f"{marker}-rid", "default")
    assert echo.method == "POST"
    assert_identity(echo, "alice")


def test_anti_csrf_on_admin_and_optional_rules(site: Site, marker: str) -> None:
    admin = cookie(site.token("root", ["admin"], "root@example.com"))
    denied(site, site.request("POST", f"/admin/users?{marker}", admin), marker, 401, TRY_REFRESH)
    optional = cookie(site.token("olga"))
    denied(site, site.request("POST", f"/optional/page?{marker}", optional), marker, 401, TRY_REFRESH)


def test_anti_csrf_off_on_webhook_rule(site: Site, marker: str) -> None:
    """anti_csrf: false: a POST without `rid` goes through, but a session is still required."""
    headers = {**cookie(site.token("hook")), **FORGED_CLAIMS}
    echo = allowed(site, site.request("POST", f"/webhook/github?{marker}", headers), marker, "webhook")
    assert echo.method == "POST"
    assert_identity(echo, "hook")
    no_claim_headers(echo)
    nothing_forged(echo)
    denied(site, site.request("POST", f"/webhook/github?{marker}-anon"), f"{marker}-anon", 401, UNAUTHORISED)


def test_method_scoped_rule(site: Site, marker: str) -> None:
    """GET /reports/ is public; any other method falls through to the default (session + anti-CSRF)."""
    echo = allowed(site, site.request("GET", f"/reports/q1?{marker}-get", FORGED_CLAIMS), f"{marker}-get",
                   "reports-read")
    assert_anonymous(echo)
    nothing_forged(echo)
    denied(site, site.request("POST", f"/reports/q1?{marker}-anon"), f"{marker}-anon", 401, UNAUTHORISED)
    head = site.request("HEAD", f"/reports/q1?{marker}-head")  # a HEAD answer has no body: the status only
    assert head.status == 401 and not site.echo.received(f"{marker}-head"), head
    token = cookie(site.token("rita"))
    denied(site, site.request("POST", f"/reports/q1?{marker}-csrf", token), f"{marker}-csrf", 401, TRY_REFRESH)
    echo = allowed(site, site.request("POST", f"/reports/q1?{marker}-ok", {**token, "rid": "session"}),
                   f"{marker}-ok", "default")
    assert_identity(echo, "rita")


def test_client_cannot_pick_the_rule(site: Site, marker: str) -> None:
    """Neither ?policy= on the request nor forged original-request headers choose a public rule."""
    denied(site, site.request("GET", f"/api/items?policy=public&{marker}"), marker, 401, UNAUTHORISED)
    forged = {"X-Forwarded-Uri": "/public/x", "X-Original-URI": "/public/x", "X-Original-URL": "http://h/public/x",
              "X-Forwarded-Method": "GET", "X-Original-Method": "GET"}
    denied(site, site.request("GET", f"/api/items?{marker}-uri", forged), f"{marker}-uri", 401, UNAUTHORISED)
    admin = cookie(site.token("alice", ["user"]))
    denied(site, site.request("GET", f"/admin/users?policy=default&{marker}-admin", {**admin, **forged}),
           f"{marker}-admin", 403, invalid_claim_body(["user"]))
    webhook_only = cookie(site.token("alice"))
    denied(site, site.request("POST", f"/api/items?policy=webhook&{marker}-csrf", {**webhook_only, **forged}),
           f"{marker}-csrf", 401, TRY_REFRESH)


#: Paths the service (matching the raw path) would judge by another rule than the one for the
#: path nginx passes on or the application routes on (decoded, dot segments resolved).
NON_CANONICAL = ("//admin/users", "/./admin/users", "/public/../admin/users", "/public/x/../../api/items",
                 "/public/%2e%2e/admin/users", "/public/.%2E/api/items", "/public/..%2Fadmin/users",
                 "/%61dmin/users", "/%41PI/items", "/admin%2fusers", "/public\\..\\admin/users", "/public/..",
                 "/admin;jsessionid=1/users", "/admin%3bx/users", "/public/..;/admin/users", "/public/..%5cadmin/users",
                 "/admin/users#.css", "/public/%252e%252e/admin/users")


@pytest.mark.parametrize("path", NON_CANONICAL)
def test_non_canonical_paths_refused(site: Site, marker: str, path: str) -> None:
    """A user without the admin role (or without a session) cannot reach /admin/ or /api/ through
    a path that the service would match against another rule: nginx refuses it (400)."""
    for name, headers in (("user", cookie(site.token("alice", ["user"]))), ("anon", {})):
        answer = site.request("GET", f"{path}?{marker}-{name}", headers)
        assert answer.status == 400, (path, answer)
        assert not site.echo.received(f"{marker}-{name}"), f"{path} reached the application"


@pytest.mark.parametrize("path", ["/ADMIN/users", "/Admin/users", "/admin./users", "/admin%20/users"])
def test_paths_whose_case_or_trailing_dots_pick_the_rule_are_refused(site: Site, marker: str, path: str) -> None:
    """Express (by default), ASP.NET and IIS route /ADMIN/users and IIS /admin./users as /admin/users:
    the service refuses them (nginx cannot tell), so the default rule never judges an admin page."""
    answer = site.request("GET", f"{path}?{marker}", cookie(site.token("alice", ["user"])))
    assert answer.status == 400 and answer.get("X-Forward-Auth-Reason") == "ambiguous-path", answer
    assert not site.echo.received(marker), f"{path} reached the application"


def test_generated_paths_through_nginx_never_reach_a_route_another_reading_protects(site: Site, marker: str) -> None:
    """The property of tests/test_paths.py through real nginx, on a sample of generated paths: a
    path that reaches the application, anonymously or as a user without the admin role, was
    judged by the rule that every backend's reading of it gets."""
    policy = parse_policy(yaml.safe_load(POLICY))
    segments = [s for s in SEGMENTS if s.isascii() and " " not in s] + ["users", "items", "page"]
    sample = random.Random(16).choices
    user = cookie(site.token("alice", ["user"]))
    for n in range(150):
        path = "/" + "/".join(sample(segments, k=1 + n % 4))
        for who, headers in (("anon", {}), ("user", user)):
            tag = f"{marker}-{n}-{who}"
            answer = site.request("GET", f"{path}?{tag}", headers)
            received = site.echo.received(tag)
            if not received:
                assert answer.status in (400, 401, 403, 404), (path, answer)
                continue
            [rule] = received[0].values("X-Forward-Auth-Rule")
            for name, read, folded in READINGS:
                assert rule_of_reading(policy, path, read, folded).name == rule, (path, name, rule)


def test_canonical_paths_with_dots_and_escapes_pass(site: Site, marker: str) -> None:
    """The guard is not too wide: dots inside names, reserved and non-ASCII escapes, any query."""
    path = f"/public/v1.2/..x/a..b/%20%3F%C3%A9/?{marker}&next=/../a//b%2e%61%25"
    echo = allowed(site, site.request("GET", path), marker, "public")
    assert echo.path == path, echo
    token = cookie(site.token("alice"))
    echo = allowed(site, site.request("GET", f"/api/file.tar.gz?{marker}-api&x=..%2F", token), f"{marker}-api",
                   "default")
    assert_identity(echo, "alice")


def test_service_saw_the_original_requests(site: Site, marker: str) -> None:
    """The rule was chosen from the original method and path (the service logs each denial so)."""
    tag = marker.replace("=", "-")
    site.request("POST", f"/reports/{tag}?x")
    log = site.service_log.read_text(errors="replace")
    assert f"POST /reports/{tag}" in log, log[-2000:]


# --- browser navigations (README "Protecting pages") -------------------------------------------

def redirected(site: Site, answer: Answer, marker: str, target: str) -> None:
    """nginx's 302 to ``target``, kept a path; the application saw nothing."""
    assert answer.status == 302, answer
    assert answer.get("Location") == target, answer  # a path: absolute_redirect off (never the client's Host)
    assert not site.echo.received(marker) and answer.get("Cache-Control") == "no-store", answer


def test_a_navigation_without_a_session_is_sent_to_sign_in(site: Site, marker: str) -> None:
    answer = site.request("GET", f"/anything/page?{marker}", NAVIGATION)
    redirected(site, answer, marker, f"{LOGIN_URL}?redirectToPath=%2Fanything%2Fpage%3F{marker.replace('=', '%3D')}")


def test_a_claim_with_a_redirect_sends_the_navigation_there(site: Site, marker: str) -> None:
    answer = site.request("GET", f"/verified/page?{marker}", {**NAVIGATION, **cookie(site.token("alice"))})
    redirected(site, answer, marker, f"/verify-email?redirectToPath=%2Fverified%2Fpage%3F{marker.replace('=', '%3D')}")


def test_a_claim_without_a_redirect_gets_the_403_page(site: Site, marker: str) -> None:
    answer = site.request("GET", f"/admin/page?{marker}", {**NAVIGATION, **cookie(site.token("alice", ["viewer"]))})
    assert answer.status == 403 and answer.get("Content-Type") == "text/html; charset=utf-8", answer
    assert b"Access denied" in answer.body and not site.echo.received(marker), answer
    api = site.request("GET", f"/admin/page?{marker}", cookie(site.token("alice", ["viewer"])))
    denied(site, api, marker, 403, invalid_claim_body(["viewer"]))


def test_a_rule_keeps_navigations_on_api_answers(site: Site, marker: str) -> None:
    denied(site, site.request("GET", f"/api-only/x?{marker}", NAVIGATION), marker, 401, UNAUTHORISED)
