"""nginx, Traefik and Caddy, each run with the shipped example config in front of an echoing
application, with the real service (``forward-auth serve``) and the development core behind:
the same table of cases for every proxy, asserted on what the browser receives and on what the
application receives.

Topology (all on 127.0.0.1, each proxy kind started once for the module, four instances of it):

    client -> proxy[modern]  -> forward-auth (401 profile, anti-CSRF VIA_CUSTOM_HEADER, preflight on)
           -> proxy[legacy]  -> forward-auth (--legacy: 440, sIdRefreshToken; preflight off)
           -> proxy[broken]  -> forward-auth whose core is unreachable (503)
           -> proxy[down]    -> nothing listening
           (every proxy)     -> echo application (records what it received)

What a proxy cannot do is written down in ``LIMITS`` and asserted as such (a proxy that starts
doing it fails the test, so the table stays true).
"""

from __future__ import annotations

import base64
import json
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
from proxy_harness import (
    PROXIES,
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
    wait_port,
    websocket_request,
)

CLI = [sys.executable, "-m", "forward_auth"]
API_KEY = "proxy-test-key"
PROFILES = ("modern", "legacy", "broken", "down")
IDENTITY = ("X-User-Id", "X-Session-Handle", "X-Tenant-Id", "X-Recipe-User-Id", "X-Session-Expiry",
            "X-Session-Created")
#: The session object's headers (docs/session-object.md): set only from the answer, like IDENTITY.
SESSION_OBJECT = ("X-Session-Data", "X-Access-Token", "X-Forward-Auth-Omitted")
#: The policy each kind of route asks /verify for (as in the three example configs).
ROUTE_POLICY = {"/api/": "", "/optional/": "sessionRequired=false", "/admin/": "requireRole=admin&checkDatabase=true"}

#: Where the modern and broken gates send denied browser navigations (README "Protecting pages"):
#: an absolute sign-in URL and a refresh page given as a path (Traefik must keep it relative).
LOGIN_HOST = "login.example.test"
LOGIN_URL = f"https://{LOGIN_HOST}/signin"
REFRESH_PAGE = "/auth/refresh-page"
PAGES = {"FORWARD_AUTH_LOGIN_URL": LOGIN_URL, "FORWARD_AUTH_REFRESH_URL": REFRESH_PAGE,
         "FORWARD_AUTH_ALLOWED_REDIRECT_HOSTS": f"{LOGIN_HOST},127.0.0.1"}
#: What Chromium sends when a person opens a page.
NAVIGATION = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
              "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "none",
              "Upgrade-Insecure-Requests": "1"}
#: What supertokens-web-js adds to a fetch it intercepts (cookie mode).
SDK_FETCH = {"Accept": "*/*", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty", "rid": "anti-csrf",
             "fdi-version": "3.1", "st-auth-mode": "cookie"}

#: What a proxy cannot do, by (proxy, limit). Asserted: the proxy really does not do it.
LIMITS = {
    # Traefik passes only cookies (addAuthCookiesToResponse) from a 2xx auth answer to the browser:
    # a refresh promotion's front-token, st-access-token (header mode) and
    # Access-Control-Expose-Headers are lost.
    ("traefik", "headers on 2xx"),
    # nginx add_header never emits an empty value: the empty st-access-token / st-refresh-token
    # headers that clear a header-mode session are lost (front-token: remove is delivered).
    ("nginx", "empty st-* headers"),
}


# --- the stack ------------------------------------------------------------------------------

@dataclass
class Stack:
    core: DevCore
    echo: EchoUpstream
    service_ports: dict[str, int]
    service_logs: dict[str, Path]


@dataclass
class Front:
    """One proxy kind: an instance per profile."""

    kind: str
    ports: dict[str, int]
    startup_problems: list[str]


def _serve(port: int, core_url: str, *extra: str) -> list[str]:
    return [*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--core-url", core_url,
            "--log-level", "info", *extra]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("services")
    core_port, dead_core = free_port(), free_port()
    ports = {"modern": free_port(), "legacy": free_port(), "broken": free_port(), "down": free_port()}
    paths = {name: logs / f"{name}.log" for name in ports}
    env = {"FORWARD_AUTH_CORE_API_KEY": API_KEY}
    with EchoUpstream() as echo, dev_core(core_port, API_KEY, logs / "core.log"):
        yield from _services(echo, core_port, dead_core, ports, paths, env)


def _services(echo: EchoUpstream, core_port: int, dead_core: int, ports: dict[str, int], paths: dict[str, Path],
              env: dict[str, str]) -> Iterator[Stack]:
    core_url = f"http://127.0.0.1:{core_port}"
    with (
        process(_serve(ports["modern"], core_url, "--anti-csrf", "VIA_CUSTOM_HEADER"), paths["modern"],
                env={**env, "FORWARD_AUTH_CORS_PREFLIGHT": "true", **PAGES}),
        process(_serve(ports["legacy"], core_url, "--anti-csrf", "VIA_CUSTOM_HEADER", "--legacy"),
                paths["legacy"], env={**env, "FORWARD_AUTH_CORS_PREFLIGHT": "false"}),
        process(_serve(ports["broken"], f"http://127.0.0.1:{dead_core}"), paths["broken"],
                env={**env, **PAGES}),
    ):
        for name in ("modern", "legacy"):
            wait_http(f"http://127.0.0.1:{ports[name]}/readyz")
        wait_port(ports["broken"], log=paths["broken"])
        yield Stack(DevCore(core_port, API_KEY), echo, ports, paths)


@pytest.fixture(scope="module", params=PROXIES)
def front(request: pytest.FixtureRequest, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    kind = request.param
    base = tmp_path_factory.mktemp(kind)
    ports = {profile: free_port() for profile in PROFILES}
    with (
        start_proxy(kind, base / "modern", Ports(ports["modern"], stack.service_ports["modern"], stack.echo.port, stack.echo.port)),
        start_proxy(kind, base / "legacy", Ports(ports["legacy"], stack.service_ports["legacy"], stack.echo.port, stack.echo.port)),
        start_proxy(kind, base / "broken", Ports(ports["broken"], stack.service_ports["broken"], stack.echo.port, stack.echo.port)),
        start_proxy(kind, base / "down", Ports(ports["down"], stack.service_ports["down"], stack.echo.port, stack.echo.port)),
    ):
        yield Front(kind, ports, startup_problems(kind, base / "modern"))


@dataclass
class Ctx:
    """What a case needs: the proxy in front, the stack behind, a unique marker for this case."""

    front: Front
    stack: Stack
    marker: str

    @property
    def kind(self) -> str:
        return self.front.kind

    @property
    def core(self) -> DevCore:
        return self.stack.core

    def limited(self, limit: str) -> bool:
        return (self.kind, limit) in LIMITS

    def path(self, route: str, rest: str = "items") -> str:
        """A path on a route, carrying this case's marker (to find it at the application)."""
        return f"{route}{rest}?case={self.marker}"

    def request(self, profile: str, method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
        return http_request(self.front.ports[profile], method, path, headers)

    def reached_app(self) -> bool:
        return bool(self.stack.echo.received(self.marker))

    def service_saw(self, profile: str, text: str) -> bool:
        """``text`` is in the service's log (it logs each denial as ``deny STATUS METHOD PATH``)."""
        return text in self.stack.service_logs[profile].read_text(errors="replace")

    def direct(self, profile: str, method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
        """The service's own answer to the same request (as Traefik or Caddy would ask it)."""
        route = next(r for r in ROUTE_POLICY if path.startswith(r))
        forwarded = {**(headers or {}), "X-Forwarded-Method": method, "X-Forwarded-Uri": path}
        return http_request(self.stack.service_ports[profile], "GET", f"/verify?{ROUTE_POLICY[route]}", forwarded)


def cookie(token: str, **more: str) -> dict[str, str]:
    return {"Cookie": "; ".join([f"sAccessToken={token}", *(f"{k}={v}" for k, v in more.items())])}


# --- what the browser must get --------------------------------------------------------------

CLEARED_MODERN = ("sAccessToken", "sRefreshToken")
CLEARED_LEGACY = ("sAccessToken", "sRefreshToken", "sIdRefreshToken")


def assert_denied(ctx: Ctx, answer: Answer, status: int, body: dict[str, object],
                  cleared: tuple[str, ...] = ()) -> None:
    """The service's denial, delivered whole; the application never saw the request."""
    assert answer.status == status, answer
    assert answer.json == body, answer
    assert answer.get("X-Echo") is None and not ctx.reached_app(), "a denied request reached the application"
    assert not [k for k, _ in answer.headers if k.lower().startswith("x-forward-auth-") and
                k.lower() != "x-forward-auth-reason"], f"nginx-only headers leaked to the browser: {answer}"
    assert answer.get("X-Forward-Auth-Reason"), answer
    assert answer.get("Cache-Control") == "no-store", answer
    cookies = answer.cookies()
    assert sorted(cookies) == sorted(cleared), answer
    for name in cleared:
        value = cookies[name]
        assert re.match(rf'{name}=("")?;', value) and "1970" in value and "HttpOnly" in value, value
    if cleared:
        assert answer.values("front-token") == ["remove"], answer
        assert "front-token" in (answer.get("Access-Control-Expose-Headers") or ""), answer
        expected_st = [] if ctx.limited("empty st-* headers") else [""]
        assert answer.values("st-access-token") == expected_st, answer
        assert answer.values("st-refresh-token") == expected_st, answer
    else:
        assert answer.get("front-token") is None, answer


def assert_same_as_service(ctx: Ctx, answer: Answer, direct: Answer) -> None:
    """Status, body and every Set-Cookie exactly as the service itself answered."""
    assert (answer.status, answer.json) == (direct.status, direct.json), (answer, direct)
    assert answer.values("Set-Cookie") == direct.values("Set-Cookie"), (answer, direct)
    assert answer.get("front-token") == direct.get("front-token"), (answer, direct)


def assert_identity(echo: Received, user_id: str) -> None:
    """The application got the verified identity, once each (aliases such as X_User_Id included)."""
    assert echo.values("X-User-Id") == [user_id], echo
    assert echo.values("X-Tenant-Id") == ["public"], echo
    assert echo.values("X-Recipe-User-Id") == [user_id], echo
    for name in ("X-Session-Expiry", "X-Session-Created"):
        values = echo.values(name)
        assert len(values) == 1 and values[0].isdigit(), echo
    assert len(echo.values("X-Session-Handle")) == 1, echo


def assert_anonymous(echo: Received) -> None:
    for name in IDENTITY:
        assert echo.values(name) == [], f"{name} reached the application: {echo}"


def assert_no_original_request_headers(echo: Received) -> None:
    """The application never receives the original-request headers a client could forge."""
    for name in ("X-Forwarded-Uri", "X-Forwarded-Method", "X-Original-URI", "X-Original-Method"):
        assert echo.values(name) == [], f"{name} reached the application: {echo}"


FORGED = {"X-User-Id": "mallory", "X-Tenant-Id": "evil-tenant", "X-Session-Handle": "forged-handle",
          "X-Forwarded-Uri": "/forged/uri", "X-Original-URI": "/forged/original", "X_User_Id": "mallory-alias"}


def assert_not_forged(echo: Received) -> None:
    for _, value in echo.headers:
        assert value not in FORGED.values(), f"a forged value reached the application: {echo}"


# --- the cases ------------------------------------------------------------------------------

Case = Callable[[Ctx], None]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


@case
def valid_session(ctx: Ctx) -> None:
    created = ctx.core.session("alice", ["user"])
    answer = ctx.request("modern", "GET", ctx.path("/api/"), cookie(created["accessToken"]["token"]))
    assert answer.status == 200 and answer.get("X-Echo") == "1", answer
    echo = answer.echo()
    assert_identity(echo, "alice")
    assert echo.values("X-Session-Handle") == [created["session"]["handle"]]
    assert (echo.method, echo.path) == ("GET", ctx.path("/api/"))
    assert_no_original_request_headers(echo)
    # the application's answer, untouched: its cookie only, no session headers added
    assert list(answer.cookies()) == ["app-cookie"] and answer.get("front-token") is None, answer


@case
def valid_session_header_mode(ctx: Ctx) -> None:
    token = ctx.core.access_token("bob")
    answer = ctx.request("modern", "GET", ctx.path("/api/"), {"Authorization": f"Bearer {token}"})
    assert answer.status == 200, answer
    assert_identity(answer.echo(), "bob")


@case
def no_session(ctx: Ctx) -> None:
    path = ctx.path("/api/")
    answer = ctx.request("modern", "GET", path)
    assert_denied(ctx, answer, 401, {"message": "unauthorised"})
    assert_same_as_service(ctx, answer, ctx.direct("modern", "GET", path))


@case
def expired(ctx: Ctx) -> None:
    headers = cookie(ctx.core.mint(version=5, claims={"exp": 1}))
    answer = ctx.request("modern", "GET", ctx.path("/api/"), headers)
    assert_denied(ctx, answer, 401, {"message": "try refresh token"})


@case
def tampered_token(ctx: Ctx) -> None:
    headers = cookie(tampered(ctx.core.access_token("alice")))
    answer = ctx.request("modern", "GET", ctx.path("/api/"), headers)
    assert_denied(ctx, answer, 401, {"message": "try refresh token"})


@case
def csrf_failure(ctx: Ctx) -> None:
    """POST with the session cookie but no `rid` header (VIA_CUSTOM_HEADER): try refresh token."""
    headers = cookie(ctx.core.access_token("alice"))
    path = ctx.path("/api/", "x")
    answer = ctx.request("modern", "POST", path, headers)
    assert_denied(ctx, answer, 401, {"message": "try refresh token"})
    assert_same_as_service(ctx, answer, ctx.direct("modern", "POST", path, headers))


@case
def revoked_session_clears_cookies(ctx: Ctx) -> None:
    """UNAUTHORISED from the core (the admin route asks it): 401 and every cookie cleared."""
    headers = cookie(ctx.core.revoked_token("alice"))
    path = ctx.path("/admin/")
    answer = ctx.request("modern", "GET", path, headers)
    assert_denied(ctx, answer, 401, {"message": "unauthorised"}, cleared=CLEARED_MODERN)
    assert_same_as_service(ctx, answer, ctx.direct("modern", "GET", path, headers))


def invalid_claim_body(actual_roles: list[str]) -> dict[str, object]:
    """The 403 body of the admin route for a session whose roles are ``actual_roles``."""
    reason = {"message": "wrong value", "expectedToInclude": "admin", "actualValue": actual_roles}
    return {"message": "invalid claim", "claimValidationErrors": [{"id": "st-role", "reason": reason}]}


@case
def invalid_claim(ctx: Ctx) -> None:
    headers = cookie(ctx.core.access_token("alice", ["user"]))
    answer = ctx.request("modern", "GET", ctx.path("/admin/"), headers)
    assert_denied(ctx, answer, 403, invalid_claim_body(["user"]))


@case
def admin_claim_satisfied(ctx: Ctx) -> None:
    headers = cookie(ctx.core.access_token("root", ["admin", "user"]))
    answer = ctx.request("modern", "GET", ctx.path("/admin/"), headers)
    assert answer.status == 200, answer
    assert_identity(answer.echo(), "root")


@case
def refresh_promotion(ctx: Ctx) -> None:
    """A just-refreshed token: the core re-mints it and the browser gets the new cookie (and front-token)."""
    token = ctx.core.refreshed_token("carol")
    answer = ctx.request("modern", "GET", ctx.path("/api/"), cookie(token))
    assert answer.status == 200, answer
    assert_identity(answer.echo(), "carol")
    cookies = answer.cookies()
    assert set(cookies) == {"app-cookie", "sAccessToken"}, answer
    new = cookies["sAccessToken"].split(";")[0].split("=", 1)[1]
    assert new and new != token and "HttpOnly" in cookies["sAccessToken"], answer
    assert "1970" not in cookies["sAccessToken"], answer
    if ctx.limited("headers on 2xx"):
        assert answer.get("front-token") is None, answer
    else:
        front = json.loads(base64.b64decode(answer.values("front-token")[0]))
        assert front["uid"] == "carol" and isinstance(front["ate"], int), answer
        assert "front-token" in (answer.get("Access-Control-Expose-Headers") or ""), answer


@case
def refresh_promotion_header_mode(ctx: Ctx) -> None:
    """The same in header mode: the new token comes back as st-access-token, with front-token."""
    token = ctx.core.refreshed_token("carol")
    answer = ctx.request("modern", "GET", ctx.path("/api/"), {"Authorization": f"Bearer {token}"})
    assert answer.status == 200, answer
    assert_identity(answer.echo(), "carol")
    assert list(answer.cookies()) == ["app-cookie"], answer
    if ctx.limited("headers on 2xx"):
        assert answer.get("st-access-token") is None and answer.get("front-token") is None, answer
        return
    [new] = answer.values("st-access-token")
    assert new and new != token, answer
    front = json.loads(base64.b64decode(answer.values("front-token")[0]))
    assert front["uid"] == "carol", answer
    exposed = answer.get("Access-Control-Expose-Headers") or ""
    assert "front-token" in exposed and "st-access-token" in exposed, answer


@case
def optional_route_without_session(ctx: Ctx) -> None:
    answer = ctx.request("modern", "GET", ctx.path("/optional/"), FORGED)
    assert answer.status == 200, answer
    echo = answer.echo()
    assert_anonymous(echo)
    assert_not_forged(echo)
    assert_no_original_request_headers(echo)


@case
def optional_route_with_session(ctx: Ctx) -> None:
    headers = {**cookie(ctx.core.access_token("dave")), **FORGED}
    answer = ctx.request("modern", "GET", ctx.path("/optional/"), headers)
    assert answer.status == 200, answer
    echo = answer.echo()
    assert_identity(echo, "dave")
    assert_not_forged(echo)


@case
def forged_identity_on_public_route(ctx: Ctx) -> None:
    answer = ctx.request("modern", "GET", ctx.path("/public/"), FORGED)
    assert answer.status == 200, answer
    echo = answer.echo()
    assert_anonymous(echo)
    assert_not_forged(echo)
    assert_no_original_request_headers(echo)


@case
def forged_identity_on_the_supertokens_backend_route(ctx: Ctx) -> None:
    """/auth/ (the SuperTokens backend, here the echo application too) is public: no check, and
    nothing the client says about identity or the original request reaches it."""
    answer = ctx.request("modern", "POST", ctx.path("/auth/", "session/refresh"), FORGED)
    assert answer.status == 200, answer
    echo = answer.echo()
    assert echo.path.startswith("/auth/session/refresh")
    assert_anonymous(echo)
    assert_not_forged(echo)
    assert_no_original_request_headers(echo)


@case
def forged_identity_with_valid_session(ctx: Ctx) -> None:
    headers = {**cookie(ctx.core.access_token("alice")), **FORGED}
    answer = ctx.request("modern", "GET", ctx.path("/api/"), headers)
    assert answer.status == 200, answer
    echo = answer.echo()
    assert_identity(echo, "alice")
    assert_not_forged(echo)
    assert_no_original_request_headers(echo)


@case
def forged_identity_on_denied_request(ctx: Ctx) -> None:
    answer = ctx.request("modern", "GET", ctx.path("/api/"), FORGED)
    assert_denied(ctx, answer, 401, {"message": "unauthorised"})


@case
def original_method_and_uri(ctx: Ctx) -> None:
    """The service checks POST /api/x (the anti-CSRF check needs the real method), not GET /verify."""
    headers = cookie(ctx.core.access_token("alice"))
    path = ctx.path("/api/", f"x/{ctx.marker}")
    denied = ctx.request("modern", "POST", path, headers)
    assert denied.status == 401 and denied.json == {"message": "try refresh token"}, denied
    assert ctx.service_saw("modern", f"POST /api/x/{ctx.marker}"), f"the service did not log POST {path}"
    body = b'{"the":"body"}'
    allowed = http_request(ctx.front.ports["modern"], "POST", path, {**headers, "rid": "session"}, body=body)
    assert allowed.status == 200, allowed
    echo = allowed.echo()
    assert (echo.method, echo.path) == ("POST", path)
    assert echo.values("Content-Length") == [str(len(body))], echo  # the body went to the application
    assert_identity(echo, "alice")


@case
def forged_original_method(ctx: Ctx) -> None:
    """A client's own X-Forwarded-Method / X-Original-Method: GET cannot dodge the anti-CSRF check."""
    headers = {**cookie(ctx.core.access_token("alice")), "X-Forwarded-Method": "GET", "X-Original-Method": "GET",
               "X-Forwarded-Uri": "/public/x", "X-Original-URI": "/public/x"}
    path = ctx.path("/api/", f"x/{ctx.marker}")
    answer = ctx.request("modern", "POST", path, headers)
    assert_denied(ctx, answer, 401, {"message": "try refresh token"})
    assert ctx.service_saw("modern", f"POST /api/x/{ctx.marker}"), f"the service did not log POST {path}"


@case
def utf8_cookie_beside_the_token(ctx: Ctx) -> None:
    """A cookie of the site's own holding raw UTF-8 (as document.cookie may set it) does not hide
    the token: the session is verified (granian's RSGI layer dropped the whole Cookie header)."""
    token = ctx.core.access_token("alice")
    headers = [("Cookie", f"pref=caf\u00c3\u00a9; sAccessToken={token}")]  # http.client sends latin-1: the UTF-8 bytes
    answer = http_request(ctx.front.ports["modern"], "GET", ctx.path("/api/"), headers)
    assert answer.status == 200, answer
    assert_identity(answer.echo(), "alice")


@case
def many_request_headers(ctx: Ctx) -> None:
    """120 request headers are never a 5xx: nginx passes the service only what it reads (and
    would turn the service's 431 into a 500); Traefik and Caddy pass every header, and the
    431 of the service's server on."""
    answer = ctx.request("modern", "GET", ctx.path("/api/"), {f"X-Filler-{i}": "x" for i in range(120)})
    if ctx.kind == "nginx":  # the service decided: no session
        assert_denied(ctx, answer, 401, {"message": "unauthorised"})
    else:
        assert answer.status == 431, answer
        assert not ctx.reached_app()


@case
def preflight_allowed_when_enabled(ctx: Ctx) -> None:
    """cors_preflight=true (modern instance): a preflight goes through without identity."""
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST", **FORGED}
    answer = ctx.request("modern", "OPTIONS", ctx.path("/api/"), headers)
    assert answer.status == 200, answer
    echo = answer.echo()
    assert echo.method == "OPTIONS"
    assert_anonymous(echo)


@case
def preflight_verified_when_disabled(ctx: Ctx) -> None:
    """cors_preflight=false (legacy instance): OPTIONS is verified like any method (440 here)."""
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    answer = ctx.request("legacy", "OPTIONS", ctx.path("/api/"), headers)
    assert_denied(ctx, answer, 440, {"message": "unauthorised"}, cleared=CLEARED_LEGACY)


@case
def websocket_authenticated(ctx: Ctx) -> None:
    token = ctx.core.access_token("alice")
    answer = websocket_request(ctx.front.ports["modern"], ctx.path("/api/", "ws"), cookie(token))
    assert answer.status == 101 and answer.frames, answer
    echo = answer.echo()
    assert_identity(echo, "alice")
    assert (echo.get("Upgrade") or "").lower() == "websocket"
    refused_path = ctx.path("/api/", "ws-refused")
    refused = websocket_request(ctx.front.ports["modern"], refused_path, FORGED)
    assert refused.status == 401 and json.loads(refused.body) == {"message": "unauthorised"}, refused
    assert not [r for r in ctx.stack.echo.received(ctx.marker) if r.path == refused_path]


@case
def service_answers_5xx(ctx: Ctx) -> None:
    """The service cannot reach its core (no signing keys): 503 to the browser, nothing let through."""
    answer = ctx.request("broken", "GET", ctx.path("/api/"), cookie(ctx.core.access_token("alice")))
    assert answer.status == 503, answer
    assert answer.json["message"], answer
    assert not ctx.reached_app()


@case
def service_down(ctx: Ctx) -> None:
    answer = ctx.request("down", "GET", ctx.path("/api/"), cookie(ctx.core.access_token("alice")))
    assert 500 <= answer.status < 600, answer
    assert not ctx.reached_app()


# browser navigations (README "Protecting pages")

def assert_redirect(ctx: Ctx, answer: Answer, status: int, base: str, original: str | None) -> None:
    """A redirect to ``base`` (relative, or made absolute by nginx on the proxy's own origin) with
    the original path and query, and nothing else of the service's."""
    assert answer.status == status, answer
    assert answer.get("X-Echo") is None and not ctx.reached_app(), "a denied navigation reached the application"
    assert not [k for k, _ in answer.headers if k.lower().startswith("x-forward-auth-") and
                k.lower() != "x-forward-auth-reason"], f"nginx-only headers leaked to the browser: {answer}"
    assert answer.get("Cache-Control") == "no-store", answer
    location = answer.get("Location") or ""
    expected = base if original is None else f"{base}?redirectToPath={quote(original, safe='')}"
    if base.startswith("/"):
        split = urlsplit(location)
        assert split.netloc in ("", f"127.0.0.1:{ctx.front.ports['modern']}"), answer
        location = location[len(f"{split.scheme}://{split.netloc}"):] if split.netloc else location
    assert location == expected, answer


def assert_on_site(ctx: Ctx, answer: Answer) -> None:
    """Whatever the answer, a redirect names the sign-in host or the proxy's own origin, and its
    redirectToPath (if any) is a path on that site."""
    location = answer.get("Location")
    if answer.get("X-Echo") is not None or location is None:
        return
    split = urlsplit(location)
    assert split.netloc in ("", LOGIN_HOST, f"127.0.0.1:{ctx.front.ports['modern']}"), answer
    for value in parse_qs(split.query).get("redirectToPath", []):
        decoded = unquote(value)
        assert value.startswith("/") and not decoded.startswith("//") and "\\" not in decoded, answer


@case
def navigation_without_session_redirects_to_sign_in(ctx: Ctx) -> None:
    path = ctx.path("/api/", "reports") + "&year=2024"
    answer = ctx.request("modern", "GET", path, NAVIGATION)
    assert_redirect(ctx, answer, 302, LOGIN_URL, path)
    assert answer.get("X-Forward-Auth-Reason") == "no-token", answer


@case
def navigation_with_expired_token_redirects_to_the_refresh_page(ctx: Ctx) -> None:
    path = ctx.path("/api/", "reports")
    answer = ctx.request("modern", "GET", path, {**NAVIGATION, **cookie(ctx.core.mint(version=5, claims={"exp": 1}))})
    assert_redirect(ctx, answer, 302, REFRESH_PAGE, path)


@case
def navigation_with_valid_session_gets_the_page(ctx: Ctx) -> None:
    answer = ctx.request("modern", "GET", ctx.path("/api/"), {**NAVIGATION, **cookie(ctx.core.access_token("alice"))})
    assert answer.status == 200, answer
    assert_identity(answer.echo(), "alice")


@case
def navigation_form_post_gets_303(ctx: Ctx) -> None:
    path = ctx.path("/api/", "form")
    answer = ctx.request("modern", "POST", path, NAVIGATION)
    assert_redirect(ctx, answer, 303, LOGIN_URL, path)


@case
def navigation_with_revoked_session_is_cleared_and_sent_to_sign_in(ctx: Ctx) -> None:
    path = ctx.path("/admin/")
    answer = ctx.request("modern", "GET", path, {**NAVIGATION, **cookie(ctx.core.revoked_token("alice"))})
    assert_redirect(ctx, answer, 302, LOGIN_URL, path)
    assert sorted(answer.cookies()) == sorted(CLEARED_MODERN), answer
    assert answer.values("front-token") == ["remove"], answer


@case
def navigation_missing_a_claim_gets_the_403_page(ctx: Ctx) -> None:
    answer = ctx.request("modern", "GET", ctx.path("/admin/"), {**NAVIGATION, **cookie(ctx.core.access_token("alice", ["viewer"]))})
    assert answer.status == 403 and answer.get("Content-Type") == "text/html; charset=utf-8", answer
    assert answer.body.startswith(b"<!doctype html>") and b"Access denied" in answer.body, answer
    assert b"<script" not in answer.body and not ctx.reached_app()


@case
def navigation_while_keys_are_unavailable_gets_the_503_page(ctx: Ctx) -> None:
    answer = ctx.request("broken", "GET", ctx.path("/api/"), {**NAVIGATION, **cookie(ctx.core.access_token("alice"))})
    assert answer.status == 503 and answer.get("Content-Type") == "text/html; charset=utf-8", answer
    assert b"try again" in answer.body and answer.get("Retry-After") == "1", answer
    assert b"127.0.0.1" not in answer.body and not ctx.reached_app()


@case
def sdk_fetches_of_the_same_urls_keep_their_json(ctx: Ctx) -> None:
    """The frontend SDK's calls (rid, fdi-version, st-auth-mode) to the URLs a navigation is
    redirected from: the 401 JSON, exactly as the service answers an API call."""
    path = ctx.path("/api/", "reports")
    answer = ctx.request("modern", "GET", path, SDK_FETCH)
    assert_denied(ctx, answer, 401, {"message": "unauthorised"})
    assert_same_as_service(ctx, answer, ctx.direct("modern", "GET", path))
    expired_token = cookie(ctx.core.mint(version=5, claims={"exp": 1}))
    assert_denied(ctx, ctx.request("modern", "GET", path, {**SDK_FETCH, **expired_token}), 401,
                  {"message": "try refresh token"})
    legacy = ctx.request("legacy", "GET", path, NAVIGATION)  # no login_url there: the API answer
    assert_denied(ctx, legacy, 440, {"message": "unauthorised"}, cleared=CLEARED_LEGACY)


@case
def forged_hosts_and_paths_never_redirect_off_site(ctx: Ctx) -> None:
    marker = ctx.marker
    for host in ("evil.example", f"{LOGIN_HOST}.evil.example", "evil.example:443"):
        answer = ctx.request("modern", "GET", ctx.path("/api/"), {**NAVIGATION, "Host": host})
        assert answer.status == 401 and answer.get("Location") is None, answer  # not an allowed host: JSON
        assert answer.json == {"message": "unauthorised"}, answer
    forwarded = ctx.request("modern", "GET", ctx.path("/api/"), {**NAVIGATION, "X-Forwarded-Host": "evil.example"})
    assert_on_site(ctx, forwarded)
    for path in (f"//api/x?case={marker}", f"/api//evil.example?case={marker}", f"/api/\\evil.example?case={marker}",
                 f"/api/%5Cevil.example?case={marker}", f"/api/%2F%2Fevil.example?case={marker}",
                 f"http://evil.example/api/x?case={marker}", f"/api/x?case={marker}&next=//evil.example"):
        answer = ctx.request("modern", "GET", path, NAVIGATION)
        assert_on_site(ctx, answer)
        assert not ctx.reached_app(), answer

@case
def lone_surrogate_in_the_user_id(ctx: Ctx) -> None:
    """The core takes "\\udcff" in a user id: its session passes, percent-encoded, and nothing fails."""
    answer = ctx.request("modern", "GET", ctx.path("/api/"), cookie(ctx.core.access_token("u\udcff")))
    assert answer.status == 200, answer
    assert answer.echo().values("X-User-Id") == ["u%ED%B3%BF"]
    assert not ctx.service_saw("modern", "Traceback") and not ctx.service_saw("modern", "Logging error")


#: Paths that a backend reads as another route than the proxy does: Tomcat, Jetty and Spring
#: strip ``;`` path parameters (``/public/..;/api/x`` is ``/api/x``), WHATWG URL parsers and IIS
#: read a backslash (raw or ``%5c``) as ``/``. From every route a client could enter without a
#: session (public, optional, the SuperTokens backend), and into the admin route from a
#: protected one.
AMBIGUOUS = tuple(f"/{entry}/{trick}/{target}/x" for entry in ("public", "optional", "auth", "api")
                  for trick in ("..;", "..;a", "..\\", "..%5c", "..%5C", "%2e%2e;", "..%3b", "..%3B")
                  for target in ("api", "admin"))


@case
def ambiguous_paths_never_reach_the_app(ctx: Ctx) -> None:
    """Every shipped config refuses such a path (a 4xx), whatever route it enters by."""
    headers = cookie(ctx.core.access_token("alice"))
    for n, path in enumerate(AMBIGUOUS):
        marker = f"{ctx.marker}-{n}"
        answer = ctx.request("modern", "GET", f"{path}?case={marker}", headers)
        assert 400 <= answer.status < 500, (path, answer)
        assert not ctx.stack.echo.received(marker), f"{path} reached the application through {ctx.kind}"


@case
def other_spellings_of_protected_routes_are_not_public(ctx: Ctx) -> None:
    """Case-insensitive servers (Express by default, ASP.NET, IIS) read /API/ as /api/, IIS also
    /api./: without a session such a spelling is refused or routed to the protected route."""
    for n, path in enumerate(("/API/x", "/Api/x", "/api./x", "/ADMIN/x", "/admin./x", "/admin%20/x", "/Optional/..")):
        marker = f"{ctx.marker}-{n}"
        answer = ctx.request("modern", "GET", f"{path}?case={marker}")  # no route: nginx 403/404, Caddy 200 empty
        assert answer.get("X-Echo") is None and not ctx.stack.echo.received(marker), (path, ctx.kind, answer)


# legacy profile (440, sIdRefreshToken)

@case
def legacy_valid_session(ctx: Ctx) -> None:
    headers = cookie(ctx.core.access_token("erin"), sIdRefreshToken="present")
    answer = ctx.request("legacy", "GET", ctx.path("/api/"), headers)
    assert answer.status == 200, answer
    assert_identity(answer.echo(), "erin")


@case
def legacy_no_session(ctx: Ctx) -> None:
    """No sIdRefreshToken: 440 and every cookie cleared, sIdRefreshToken too."""
    path = ctx.path("/api/")
    answer = ctx.request("legacy", "GET", path, cookie(ctx.core.access_token("erin")))
    assert_denied(ctx, answer, 440, {"message": "unauthorised"}, cleared=CLEARED_LEGACY)
    assert_same_as_service(ctx, answer, ctx.direct("legacy", "GET", path, cookie(ctx.core.access_token("erin"))))


@case
def legacy_expired(ctx: Ctx) -> None:
    headers = cookie(ctx.core.mint(version=5, claims={"exp": 1}), sIdRefreshToken="present")
    answer = ctx.request("legacy", "GET", ctx.path("/api/"), headers)
    assert_denied(ctx, answer, 440, {"message": "try refresh token"})


@case
def legacy_tampered_token(ctx: Ctx) -> None:
    headers = cookie(tampered(ctx.core.access_token("erin")), sIdRefreshToken="present")
    answer = ctx.request("legacy", "GET", ctx.path("/api/"), headers)
    assert_denied(ctx, answer, 440, {"message": "try refresh token"})


@case
def legacy_csrf_failure(ctx: Ctx) -> None:
    headers = cookie(ctx.core.access_token("erin"), sIdRefreshToken="present")
    answer = ctx.request("legacy", "POST", ctx.path("/api/", "x"), headers)
    assert_denied(ctx, answer, 440, {"message": "try refresh token"})


@case
def legacy_revoked_session_clears_cookies(ctx: Ctx) -> None:
    headers = cookie(ctx.core.revoked_token("erin"), sIdRefreshToken="present")
    path = ctx.path("/admin/")
    answer = ctx.request("legacy", "GET", path, headers)
    assert_denied(ctx, answer, 440, {"message": "unauthorised"}, cleared=CLEARED_LEGACY)
    assert_same_as_service(ctx, answer, ctx.direct("legacy", "GET", path, headers))


@case
def legacy_invalid_claim(ctx: Ctx) -> None:
    """Also: a body with non-ASCII text survives nginx's trip through a response header."""
    roles = ["usér", "ユーザー"]
    headers = cookie(ctx.core.access_token("erin", roles), sIdRefreshToken="present")
    answer = ctx.request("legacy", "GET", ctx.path("/admin/"), headers)
    assert_denied(ctx, answer, 403, invalid_claim_body(roles))


def test_example_config_loads_without_warnings(front: Front) -> None:
    """The shipped config, as the proxy itself judges it at start-up."""
    assert front.startup_problems == []


@pytest.mark.parametrize("name", list(CASES))
def test_proxy_case(front: Front, stack: Stack, name: str) -> None:
    CASES[name](Ctx(front, stack, f"{front.kind}-{name}-{uuid.uuid4().hex[:8]}"))


# --- ingress-nginx and Envoy: validated by parsing (not run) ----------------------------------

def test_ingress_nginx_annotations() -> None:
    import yaml

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "ingress-nginx.yaml").read_text()))
    assert docs and all(d["kind"] == "Ingress" and d["apiVersion"] == "networking.k8s.io/v1" for d in docs)
    prefix = "nginx.ingress.kubernetes.io/"
    routes: dict[str, str] = {}
    for doc in docs:
        annotations = doc["metadata"]["annotations"]
        url = annotations[prefix + "auth-url"]
        assert url.startswith("http://") and "/verify?proxy=nginx" in url, url
        assert annotations[prefix + "auth-response-headers"].split(",") == [*IDENTITY, *SESSION_OBJECT]
        assert int(annotations[prefix + "auth-keepalive"]) > 0
        [rule] = doc["spec"]["rules"]
        [path] = rule["http"]["paths"]
        assert path["pathType"] == "Prefix" and path["backend"]["service"]["port"]["number"] > 0
        if doc["metadata"]["name"] not in ("app-protected-full", "app-pages"):
            routes[path["path"]] = url.split("/verify?proxy=nginx", 1)[1].lstrip("&")
    assert routes == {**ROUTE_POLICY, "/public/": "sessionRequired=false"}
    pages = next(d for d in docs if d["metadata"]["name"] == "app-pages")["metadata"]["annotations"]
    assert pages[prefix + "auth-signin"].startswith("https://")
    assert pages[prefix + "auth-signin-redirect-param"] == "redirectToPath"
    full = next(d for d in docs if d["metadata"]["name"] == "app-protected-full")["metadata"]["annotations"]
    location, server = full[prefix + "configuration-snippet"], full[prefix + "server-snippet"]
    for n in (1, 2, 3):
        assert f"$upstream_http_x_forward_auth_set_cookie_{n}" in location
        assert f"add_header Set-Cookie $forward_auth_set_cookie_{n} always;" in server
    assert "error_page 401 = @forward_auth_401;" in location and "error_page 403 = @forward_auth_403;" in location
    assert "return 440 $forward_auth_body;" in server and "return 403 $forward_auth_body;" in server
    assert "$upstream_http_x_forward_auth_location" in location
    assert "return 302 $forward_auth_location;" in server and "return 303 $forward_auth_location;" in server


#: The split-view path pattern (README: Paths): in every shipped nginx config, and Caddy's.
SPLIT_VIEW = r"^[^?]*(/\.\.?(/|\?|$)|//|\x5c|;|#|%(2[5dDeEfF]|3[0-9bB]|4[1-9a-fA-F]|5[0-9aAcCfF]|6[1-9a-fA-F]|7[0-9aAeE]))"


def test_every_shipped_config_refuses_split_view_paths() -> None:
    """One pattern everywhere; Traefik excludes raw ';' and '\\' on every router; every ingress-nginx
    Ingress asks the service (which refuses them), whose snippet variant refuses them in nginx too."""
    import yaml

    for name in ("nginx.conf.example", "deploy/nginx-policy.conf.example", "deploy/kubernetes/sidecar.yaml",
                 "deploy/ingress-nginx.yaml"):
        assert (ROOT / name).read_text().count(f'if ($request_uri ~ "{SPLIT_VIEW}") {{') == 1, name
    assert f"vars_regexp {{http.request.orig_uri}} `{SPLIT_VIEW}`" in (ROOT / "Caddyfile.example").read_text()
    for name, key in (("traefik.dynamic.example.yml", "rule"), ("deploy/kubernetes/traefik-middleware.yaml", "match")):
        rules = re.findall(rf"^\s*{key}: (.*)$", (ROOT / name).read_text(), re.MULTILINE)
        assert len(rules) == 5 and all(r.endswith(" && !PathRegexp(`[;\\x5c]`)") for r in rules), (name, rules)
    ingresses = list(yaml.safe_load_all((ROOT / "deploy" / "ingress-nginx.yaml").read_text()))
    assert all("nginx.ingress.kubernetes.io/auth-url" in d["metadata"]["annotations"] for d in ingresses)
    assert all(re.search(SPLIT_VIEW, path) for path in AMBIGUOUS)


def test_ingress_nginx_snippet_passes_the_service_what_nginx_conf_example_does() -> None:
    """Only what the service reads, so that many client headers never become a 500 there either."""
    import yaml

    docs = yaml.safe_load_all((ROOT / "deploy" / "ingress-nginx.yaml").read_text())
    [full] = [d for d in docs if d["metadata"]["name"] == "app-protected-full"]
    snippet = full["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-snippet"]
    passed = re.findall(r"proxy_set_header (\S+) \$http_\w+;", snippet)
    example = (ROOT / "nginx.conf.example").read_text()
    assert "proxy_pass_request_headers off;" in snippet and passed
    assert passed == [n for n in re.findall(r"proxy_set_header (\S+) \$http_\w+;", example.split("location /_forward_auth/ {")[1])
                      if n not in ("Host", "X-Original-URL")]


def test_envoy_ext_authz_snippet() -> None:
    import yaml

    config = yaml.safe_load((ROOT / "deploy" / "envoy-ext-authz.yaml").read_text())
    [listener] = config["static_resources"]["listeners"]
    [chain] = listener["filter_chains"]
    [hcm] = chain["filters"]
    manager = hcm["typed_config"]
    names = [f["name"] for f in manager["http_filters"]]
    assert names == ["envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    mutation, ext_authz = (f["typed_config"] for f in manager["http_filters"][:2])
    removed = {m["remove"] for m in mutation["mutations"]["request_mutations"]}
    assert {h.lower() for h in (*IDENTITY, *SESSION_OBJECT)} | {"x-forwarded-uri", "x-forwarded-method"} <= removed
    assert ext_authz["failure_mode_allow"] is False
    assert ext_authz["status_on_error"]["code"] == "ServiceUnavailable"
    service = ext_authz["http_service"]
    assert service["path_prefix"] == "/verify" and service["server_uri"]["cluster"] == "forward_auth"
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    assert {"forward_auth", "app"} <= clusters

    def patterns(key: str) -> set[str]:
        return {p["exact"] for p in service["authorization_response"][key]["patterns"]}

    assert patterns("allowed_upstream_headers") == {h.lower() for h in (*IDENTITY, *SESSION_OBJECT)}
    on_success = patterns("allowed_client_headers_on_success")
    assert {"set-cookie", "front-token", "access-control-expose-headers"} <= on_success
    assert {"set-cookie", "front-token", "st-access-token", "st-refresh-token"} <= patterns("allowed_client_headers")
    sent = {p["exact"] for p in ext_authz["allowed_headers"]["patterns"]}
    assert {"cookie", "authorization", "rid", "anti-csrf", "accept", "sec-fetch-mode", "sec-fetch-dest",
            "st-auth-mode", "fdi-version"} <= sent
    assert "location" in patterns("allowed_client_headers")
    routes = {r["match"]["prefix"]: r for r in manager["route_config"]["virtual_hosts"][0]["routes"]}
    public = routes["/public/"]["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
    assert public["disabled"] is True
    assert "typed_per_filter_config" not in routes["/api/"]
    assert manager["upgrade_configs"] == [{"upgrade_type": "websocket"}]
