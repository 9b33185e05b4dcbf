"""The official frontend SDK (supertokens-web-js) in headless Chromium, through each proxy.

Everything is real: Debian's Chromium driven by Playwright, the SDK's npm bundle, the example
page and application (examples/browser/), supertokens-python serving ``/auth``, the gate, the
dev core, and nginx / Traefik / Caddy running the shipped example configurations. Each scenario
runs in cookie and header mode; on failure a screenshot and the browser console are saved
under ``test-artifacts/browser/`` (the path is printed with the failure).
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "browser"))

from proxy_harness import PROXIES  # noqa: E402
from stack import Services, Site, gate, services, site  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
#: Flags for a sandbox without a network or a display (see the machine notes in the README).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ACCESS_TOKEN_VALIDITY = 3  # seconds: long enough for a scenario's calls, short enough to wait out
ARTIFACTS = ROOT / "test-artifacts" / "browser"
MODES = ("cookie", "header")
REFRESH = ("POST", "/auth/session/refresh")
PARENT = "parentRefreshTokenHash1"  # in the access token until the gate has it promoted


# --- the stack ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with services(tmp_path_factory.mktemp("browser"), ACCESS_TOKEN_VALIDITY) as running:
        yield running


@pytest.fixture(scope="module")
def gates(shared: Services) -> Iterator[dict[int, int]]:
    """A gate answering 401 for expired sessions (today's SDKs) and one answering 440 (legacy)."""
    with gate(shared, 401) as modern, gate(shared, 440) as legacy:
        yield {401: modern, 440: legacy}


@pytest.fixture(scope="module", params=PROXIES)
def sites(request: pytest.FixtureRequest, shared: Services, gates: dict[int, int]) -> Iterator[dict[int, Site]]:
    kind = request.param
    with site(kind, shared, gates[401], 401) as modern, site(kind, shared, gates[440], 440) as legacy:
        yield {401: modern, 440: legacy}


# --- the browser ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Module-scoped: Playwright's sync API runs an event loop in this thread until it stops,
    and later tests (the SDK's asyncio.run) need none running."""
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: run scripts/install-browser (as root)"
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@dataclass
class Tab:
    """The example page in a fresh browser context, with every request it made after load."""

    site: Site
    mode: str
    context: BrowserContext
    page: Page
    console: list[str] = field(default_factory=list)
    sent: list[tuple[str, str, int | None]] = field(default_factory=list)

    def run(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def login(self, user_id: str, roles: list[str] | None = None) -> dict[str, Any]:
        answer = self.run(f"fa.login({json.dumps(user_id)}, {json.dumps(roles or [])})")
        assert answer["status"] == 200, answer
        return dict(answer["body"])

    def call(self, method: str, path: str) -> dict[str, Any]:
        """A call through the SDK's interception (it refreshes and retries when told to)."""
        return dict(self.run(f"fa.call({json.dumps(method)}, {json.dumps(path)})"))

    def plain_call(self, method: str, path: str) -> dict[str, Any]:
        """The same call with the browser's own fetch: no SDK headers, no refresh."""
        return dict(self.run(f"fa.plainCall({json.dumps(method)}, {json.dumps(path)})"))

    def state(self) -> dict[str, Any]:
        return dict(self.run("fa.state()"))

    def mark(self) -> int:
        return len(self.sent)

    def since(self, mark: int) -> list[tuple[str, str, int | None]]:
        return self.sent[mark:]

    def access_token_payload(self) -> dict[str, Any] | None:
        """The access token the browser would send next: the cookie, or the SDK's stored header token."""
        if self.mode == "cookie":
            token = next((c["value"] for c in self.context.cookies() if c["name"] == "sAccessToken"), None)
        else:
            token = self.run("supertokensSession.getAccessToken()")
        if not token:
            return None
        body = token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def _record(tab: Tab) -> None:
    origin = tab.site.origin

    def on_response(response: Any) -> None:
        if response.url.startswith(origin):
            path = response.url[len(origin):].split("?", 1)[0]
            tab.sent.append((response.request.method, path, response.status))

    def on_failed(request: Any) -> None:
        if request.url.startswith(origin):
            tab.sent.append((request.method, request.url[len(origin):].split("?", 1)[0], None))

    tab.page.on("response", on_response)
    tab.page.on("requestfailed", on_failed)
    tab.page.on("console", lambda message: tab.console.append(f"{message.type}: {message.text}"))
    tab.page.on("pageerror", lambda error: tab.console.append(f"pageerror: {error}"))


def new_tab(browser: Browser, site_: Site, mode: str, frontend_expired: int | None = None) -> Tab:
    """The example page, loaded and settled (the SDK's start-up refresh attempt has finished)."""
    context = browser.new_context()
    tab = Tab(site_, mode, context, context.new_page())
    _record(tab)
    tab.page.goto(site_.page(mode, frontend_expired))
    tab.page.wait_for_load_state("networkidle")
    assert tab.run("typeof fa") == "object", tab.console
    return tab


class Watch:
    """The tabs of one test: saved (screenshot, console, requests) if it fails; its own closed."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.tabs: list[Tab] = []
        self.owned: list[Tab] = []

    def open(self, site_: Site, mode: str, frontend_expired: int | None = None) -> Tab:
        """The example page in a fresh browser context, closed after the test."""
        tab = new_tab(self.browser, site_, mode, frontend_expired)
        self.owned.append(tab)
        return self.adopt(tab)

    def adopt(self, tab: Tab) -> Tab:
        """A tab prepared by a module fixture (closed by that fixture)."""
        self.tabs.append(tab)
        return tab


@pytest.fixture
def watch(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Watch]:
    watching = Watch(browser)
    yield watching
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for number, tab in enumerate(watching.tabs):
            _save_artifacts(request.node.name, number, tab)
    for tab in watching.owned:
        tab.context.close()


@pytest.fixture(scope="module")
def expired_tabs(sites: dict[int, Site], browser: Browser) -> Iterator[dict[tuple[str, int, int], Tab]]:
    """Signed-in tabs whose access tokens have expired, keyed by (mode, gate status, frontend
    status); made together so that the tests of a proxy wait out the validity once."""
    tabs: dict[tuple[str, int, int], Tab] = {}
    for mode in MODES:
        for gate_status, frontend in ((401, 401), (440, 440), (440, 401)):
            tab = new_tab(browser, sites[gate_status], mode, frontend)
            tab.login("alice")
            tabs[(mode, gate_status, frontend)] = tab
    _wait_for_expiry()
    yield tabs
    for tab in tabs.values():
        tab.context.close()


@dataclass
class Revoked:
    """A tab whose session was revoked, then watched for 10 s after one call."""

    tab: Tab
    before: dict[str, Any]
    after: dict[str, Any]
    mark: int
    events: int  # SDK events before the second call (the page's load fires some of its own)
    revoke: dict[str, Any] | None = None  # the application's answer, when it revoked through the session API


@pytest.fixture(scope="module")
def revoked_tabs(sites: dict[int, Site], browser: Browser) -> Iterator[dict[str, Revoked]]:
    """Per mode, and per way of revoking (at the core: ``<mode>``; by the application's admin
    route through the gate's session API: ``<mode>-api``): sign in as an admin, call the
    check_database route, revoke, call again, and watch the pages for 10 s (all in the same 10 s)."""
    found: dict[str, Revoked] = {}
    for mode in MODES:
        for key in (mode, f"{mode}-api"):
            tab = new_tab(browser, sites[401], mode)
            login = tab.login("root", ["admin"])
            before = tab.call("GET", "/admin/whoami")
            revoke = None
            if key == mode:
                tab.site.services.core.post("/recipe/session/remove", {"sessionHandles": [login["handle"]]})
            else:
                revoke = tab.call("POST", "/admin/revoke-session")
            mark, events = tab.mark(), tab.run("fa.events.length")
            found[key] = Revoked(tab, before, tab.call("GET", "/admin/whoami"), mark, events, revoke)
    # Playwright delivers page events only while one of its calls runs: wait inside one.
    next(iter(found.values())).tab.page.wait_for_timeout(10_000)
    yield found
    for revoked in found.values():
        revoked.tab.context.close()


def _save_artifacts(test_name: str, number: int, tab: Tab) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', test_name)}-{number}"
    tab.page.screenshot(path=f"{stem}.png", full_page=True)
    Path(f"{stem}.console.log").write_text("\n".join(tab.console) + "\n")
    Path(f"{stem}.requests.log").write_text("\n".join(map(str, tab.sent)) + "\n")
    print(f"browser artifacts: {stem}.png, {stem}.console.log, {stem}.requests.log")
    print("browser console:\n  " + "\n  ".join(tab.console))


def _wait_for_expiry() -> None:
    time.sleep(ACCESS_TOKEN_VALIDITY + 1.5)


def _verify_calls(services_: Services) -> int:
    return sum(n for request, n in services_.core.request_counts().items() if request.endswith("/recipe/session/verify"))


def _parent(tab: Tab) -> str | None:
    """The refreshed-but-not-promoted mark of the browser's access token (null once promoted)."""
    return (tab.access_token_payload() or {}).get(PARENT)


def _identity(answer: dict[str, Any]) -> dict[str, str]:
    assert answer["status"] == 200, answer
    return dict(answer["body"]["headers"])


# --- the scenarios ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_signed_in_call_reaches_the_upstream_with_identity(sites: dict[int, Site], watch: Watch,
                                                           mode: str) -> None:
    tab = watch.open(sites[401], mode)
    login = tab.login("alice")

    seen = _identity(tab.call("GET", "/api/whoami"))

    assert seen["X-User-Id"] == "alice"
    assert seen["X-Session-Handle"] == login["handle"]
    assert seen["X-Tenant-Id"] == "public"
    assert tab.state()["exists"] is True


@pytest.mark.parametrize("mode", MODES)
def test_expired_token_is_refreshed_once_and_the_call_retried(expired_tabs: dict[tuple[str, int, int], Tab],
                                                               watch: Watch, mode: str) -> None:
    tab = watch.adopt(expired_tabs[(mode, 401, 401)])
    mark = tab.mark()

    seen = _identity(tab.call("GET", "/api/whoami"))

    assert seen["X-User-Id"] == "alice"
    assert tab.since(mark) == [("GET", "/api/whoami", 401), (*REFRESH, 200), ("GET", "/api/whoami", 200)]


@pytest.mark.parametrize("mode", MODES)
def test_legacy_440_with_the_frontend_at_440_refreshes_once(expired_tabs: dict[tuple[str, int, int], Tab],
                                                            watch: Watch, mode: str) -> None:
    tab = watch.adopt(expired_tabs[(mode, 440, 440)])
    mark = tab.mark()

    seen = _identity(tab.call("GET", "/api/whoami"))

    assert seen["X-User-Id"] == "alice"
    assert tab.since(mark) == [("GET", "/api/whoami", 440), (*REFRESH, 200), ("GET", "/api/whoami", 200)]


@pytest.mark.parametrize("mode", MODES)
def test_legacy_440_with_the_frontend_left_at_401_reaches_the_page(expired_tabs: dict[tuple[str, int, int], Tab],
                                                                   watch: Watch, mode: str) -> None:
    """Documented outcome: the SDK does not know 440, so it neither refreshes nor signs out;
    the page gets the 440 and the session still looks alive to it."""
    tab = watch.adopt(expired_tabs[(mode, 440, 401)])
    mark = tab.mark()

    answer = tab.call("GET", "/api/whoami")

    assert answer == {"status": 440, "body": {"message": "try refresh token"}}
    assert tab.since(mark) == [("GET", "/api/whoami", 440)]
    assert tab.state()["exists"] is True


@pytest.mark.parametrize("mode", MODES)
def test_refreshed_token_is_promoted_once_then_no_core_calls(sites: dict[int, Site], watch: Watch,
                                                             mode: str) -> None:
    tab = watch.open(sites[401], mode)
    tab.login("alice")
    assert tab.run("fa.refresh()") == {"refreshed": True}
    assert _parent(tab), "a refreshed token names its parent refresh token"
    before = _verify_calls(tab.site.services)

    _identity(tab.call("GET", "/api/whoami"))
    after_first = _verify_calls(tab.site.services)
    for _ in range(3):
        _identity(tab.call("GET", "/api/whoami"))
    after_more = _verify_calls(tab.site.services)

    assert after_first - before == 1, "the first gated call asks the core to promote the token"
    if tab.site.proxy == "traefik" and mode == "header":
        # Traefik passes only cookies from a 2xx auth answer: the promoted st-access-token and
        # front-token never reach the browser, so every call promotes again (README: limits).
        assert PARENT in (tab.access_token_payload() or {})
        assert after_more - after_first == 3
    else:
        assert tab.access_token_payload() is not None and not _parent(tab), "the browser holds the promoted token"
        assert after_more == after_first, "a promoted token is verified locally"
    assert not any(sent[:2] == REFRESH for sent in tab.sent[-4:])


@pytest.mark.parametrize("mode", MODES)
def test_revoked_session_is_signed_out_without_a_refresh_loop(revoked_tabs: dict[str, Revoked],
                                                              watch: Watch, mode: str) -> None:
    revoked = revoked_tabs[mode]
    tab = watch.adopt(revoked.tab)
    tab.run("0")  # one more round trip: every event of the 10 s is delivered

    assert _identity(revoked.before)["X-User-Id"] == "root"
    assert revoked.after == {"status": 401, "body": {"message": "unauthorised"}}
    assert tab.since(revoked.mark) == [("GET", "/admin/whoami", 401)], "no refresh call, no retry, nothing for 10 s"
    state = tab.state()
    assert state["exists"] is False
    assert "UNAUTHORISED" in state["events"][revoked.events:]
    assert tab.access_token_payload() is None, "the access token was cleared"


@pytest.mark.parametrize("mode", MODES)
def test_an_admin_route_revokes_through_the_session_api_and_the_page_is_signed_out_after_one_call(
        revoked_tabs: dict[str, Revoked], watch: Watch, mode: str) -> None:
    revoked = revoked_tabs[f"{mode}-api"]
    tab = watch.adopt(revoked.tab)
    tab.run("0")  # one more round trip: every event of the 10 s is delivered

    handle = _identity(revoked.before)["X-Session-Handle"]
    assert revoked.revoke == {"status": 200, "body": {"status": "OK", "sessionHandlesRevoked": [handle]}}
    assert revoked.after == {"status": 401, "body": {"message": "unauthorised"}}
    assert tab.since(revoked.mark) == [("GET", "/admin/whoami", 401)], "no refresh call, no retry, nothing for 10 s"
    state = tab.state()
    assert state["exists"] is False and "UNAUTHORISED" in state["events"]
    assert tab.access_token_payload() is None, "the access token was cleared"


@pytest.mark.parametrize("mode", MODES)
def test_missing_role_gives_the_page_the_claim_error(sites: dict[int, Site], watch: Watch,
                                                     mode: str) -> None:
    tab = watch.open(sites[401], mode)
    tab.login("alice", ["viewer"])

    answer = tab.call("GET", "/admin/whoami")
    invalid = tab.run("fa.invalidClaims('/admin/whoami')")

    error = {"id": "st-role", "reason": {"message": "wrong value", "expectedToInclude": "admin",
                                         "actualValue": ["viewer"]}}
    assert answer == {"status": 403, "body": {"message": "invalid claim", "claimValidationErrors": [error]}}
    assert invalid == {"status": 403, "errors": [error]}
    assert "API_INVALID_CLAIM" in tab.state()["events"]


@pytest.mark.parametrize("mode", MODES)
def test_custom_header_anti_csrf(sites: dict[int, Site], watch: Watch, mode: str) -> None:
    tab = watch.open(sites[401], mode)
    tab.login("alice")

    with_sdk = tab.call("POST", "/api/whoami")
    without_sdk = tab.plain_call("POST", "/api/whoami")

    assert _identity(with_sdk)["X-User-Id"] == "alice"
    if mode == "cookie":
        # The cookie goes along by itself, the SDK's `rid` header does not: a cross-site form could do this.
        assert without_sdk == {"status": 401, "body": {"message": "try refresh token"}}
    else:
        # Header mode: without the SDK there is no Authorization header, so no session at all.
        assert without_sdk == {"status": 401, "body": {"message": "unauthorised"}}


# --- what the example page tells a person -------------------------------------------------------

def test_the_page_says_which_buttons_to_try_first(sites: dict[int, Site], watch: Watch) -> None:
    tab = watch.open(sites[401], "cookie")

    named = tab.page.locator("#try i").all_text_contents()

    assert named[:2] == ["sign in as alice", "GET /api/whoami"]
    assert set(named) <= set(tab.page.locator("button").all_text_contents()), "the line names real buttons"


def _click(tab: Tab, button: str) -> None:
    tab.page.get_by_role("button", name=button, exact=True).click()


def _seconds_left(tab: Tab) -> int:
    left = tab.page.text_content("#expires") or ""
    assert left.endswith(" s"), left
    return int(left.removesuffix(" s"))


@pytest.mark.parametrize("mode", MODES)
def test_the_session_state_shows_the_user_and_counts_the_token_down(sites: dict[int, Site], watch: Watch,
                                                                    mode: str) -> None:
    tab = watch.open(sites[401], mode)
    expect(tab.page.locator("#signed-in")).to_have_text("no")
    expect(tab.page.locator("#user")).to_have_text("none")
    expect(tab.page.locator("#expires")).to_have_text("no token")

    _click(tab, "sign in as alice")
    expect(tab.page.locator("#signed-in")).to_have_text("yes")
    expect(tab.page.locator("#user")).to_have_text("alice")
    first = _seconds_left(tab)
    assert 0 < first <= ACCESS_TOKEN_VALIDITY
    # The page ticks once a second; a loaded machine may delay a tick: look for the next second
    # within the token's lifetime rather than at a fixed moment.
    counted = [first]
    for _ in range(int(ACCESS_TOKEN_VALIDITY * 10)):
        tab.page.wait_for_timeout(100)
        text = tab.page.text_content("#expires") or ""
        if text.endswith(" s") and int(text.removesuffix(" s")) < first:
            counted.append(int(text.removesuffix(" s")))
            break
    assert len(counted) == 2 and 0 < counted[1] < first, (counted, tab.page.text_content("#expires"))

    _click(tab, "sign out")
    expect(tab.page.locator("#signed-in")).to_have_text("no")
    expect(tab.page.locator("#expires")).to_have_text("no token")


@pytest.mark.parametrize(("mode", "reason"), [("cookie", "csrf-rid-missing"), ("header", "no-token")])
def test_the_last_gate_answer_follows_each_call(sites: dict[int, Site], watch: Watch, mode: str,
                                                reason: str) -> None:
    tab = watch.open(sites[401], mode)
    tab.login("alice")
    answer = tab.page.locator("#answer")
    expect(answer).to_have_text("none yet")

    _click(tab, "POST without the SDK")
    expect(answer).to_have_text(f"POST /api/whoami: 401, X-Forward-Auth-Reason: {reason}")
    _click(tab, "GET /admin/whoami")
    expect(answer).to_have_text("GET /admin/whoami: 403, X-Forward-Auth-Reason: invalid-claims")
    _click(tab, "GET /api/whoami")
    expect(answer).to_have_text("GET /api/whoami: 200")


def _stated_and_issued_lifetime(tab: Tab) -> tuple[str | None, int]:
    """The lifetime the page states, and the one of the access token a sign-in gets (seconds)."""
    tab.login("alice")
    payload = tab.run("supertokensSession.getAccessTokenPayloadSecurely()")
    return tab.page.text_content("#lifetime"), payload["exp"] - payload["iat"]


def test_the_stated_token_lifetime_is_the_one_tokens_get(sites: dict[int, Site], watch: Watch) -> None:
    tab = watch.open(sites[401], "cookie")

    assert _stated_and_issued_lifetime(tab) == (str(ACCESS_TOKEN_VALIDITY), ACCESS_TOKEN_VALIDITY)


def test_the_stated_token_lifetime_follows_the_configured_one(tmp_path: Path, watch: Watch) -> None:
    validity = ACCESS_TOKEN_VALIDITY + 4
    with services(tmp_path, validity) as other, gate(other, 401) as port, site("nginx", other, port, 401) as nginx:
        tab = watch.open(nginx, "cookie")

        assert _stated_and_issued_lifetime(tab) == (str(validity), validity)


# --- pages: server-rendered, no SDK on them (README "Protecting pages") ----------------------

def _blank(watch: Watch, site_: Site) -> Tab:
    """A fresh browser context with no page loaded yet (cookie mode: navigations carry cookies)."""
    context = watch.browser.new_context()
    tab = Tab(site_, "cookie", context, context.new_page())
    _record(tab)
    watch.owned.append(tab)
    return watch.adopt(tab)


def _sign_in_through(tab: Tab, path: str, user_id: str, roles: str = "") -> None:
    """Open a protected page signed out, land on the sign-in page, sign in, come back to it."""
    origin = tab.site.origin
    tab.page.goto(origin + path)
    tab.page.wait_for_url(re.compile(r"/public/signin\.html\?"))
    assert urlsplit(tab.page.url).query == f"redirectToPath={quote(path, safe='')}", tab.page.url
    tab.page.wait_for_load_state("networkidle")  # the SDK's start-up check has finished
    tab.page.fill("#user", user_id)
    tab.page.fill("#roles", roles)
    tab.page.click("button[type=submit]")
    tab.page.wait_for_url(origin + path)
    assert tab.page.text_content("#user") == user_id
    assert tab.page.text_content("#url") == path


#: What supertokens-web-js does when a page with it loads and no session exists: one refresh
#: attempt, which the backend answers 401 (no refresh token).
STARTUP_CHECK = (*REFRESH, 401)


def _navigations(sent: list[tuple[str, str, int | None]]) -> list[tuple[str, str, int | None]]:
    """Page loads and API calls with their statuses (scripts, and the fetch a navigation away
    cut short, left out)."""
    return [s for s in sent if not s[1].endswith(".js") and s[2] is not None]


def test_a_page_opened_signed_out_goes_through_sign_in_and_back_with_its_query(
        sites: dict[int, Site], watch: Watch) -> None:
    tab = _blank(watch, sites[401])

    _sign_in_through(tab, "/api/page?report=q1&year=2024", "alice")

    assert _navigations(tab.sent) == [
        ("GET", "/api/page", 302), ("GET", "/public/signin.html", 200), STARTUP_CHECK,
        ("POST", "/auth/dev-login", 200), ("GET", "/api/page", 200)]


def test_an_expired_page_passes_once_through_the_refresh_page(sites: dict[int, Site], watch: Watch) -> None:
    tab = _blank(watch, sites[401])
    _sign_in_through(tab, "/api/page?before=expiry", "alice")
    _wait_for_expiry()
    mark = tab.mark()

    tab.page.goto(tab.site.origin + "/api/page?after=expiry")
    tab.page.wait_for_url(tab.site.origin + "/api/page?after=expiry")

    assert tab.page.text_content("#user") == "alice"
    assert _navigations(tab.since(mark)) == [
        ("GET", "/api/page", 302), ("GET", "/public/refresh.html", 200), (*REFRESH, 200), ("GET", "/api/page", 200)]


def test_a_revoked_session_on_a_check_database_page_lands_on_sign_in_without_a_loop(
        sites: dict[int, Site], watch: Watch) -> None:
    tab = _blank(watch, sites[401])
    _sign_in_through(tab, "/admin/page?before=revoke", "root", "admin")
    handle = tab.page.text_content("#handle")
    tab.site.services.core.post("/recipe/session/remove", {"sessionHandles": [handle]})
    mark = tab.mark()

    tab.page.goto(tab.site.origin + "/admin/page?after=revoke")
    tab.page.wait_for_url(re.compile(r"/public/signin\.html\?"))
    tab.page.wait_for_timeout(3000)  # anything a loop would do, it does in 3 s

    assert urlsplit(tab.page.url).query == "redirectToPath=" + quote("/admin/page?after=revoke", safe="")
    assert _navigations(tab.since(mark)) == [("GET", "/admin/page", 302), ("GET", "/public/signin.html", 200)]
    assert not [c for c in tab.context.cookies() if c["name"] in ("sAccessToken", "sRefreshToken")]


@pytest.mark.parametrize("value", ["//evil.example/x", "/\\evil.example/x", "/\t/evil.example/x", "/\n/evil.example/x",
                                   "\t//evil.example/x", "https://evil.example/x", "/%09/evil.example/x"])
def test_the_sign_in_and_refresh_pages_never_go_back_off_site(sites: dict[int, Site], watch: Watch, value: str) -> None:
    """The pages' own redirectToPath check, as Chromium parses it (a tab or newline inside "/\\t/"
    is dropped by URL parsing, which a prefix check on "/" misses)."""
    tab = _blank(watch, sites[401])
    tab.page.goto(tab.site.origin + "/public/signin.html?redirectToPath=" + quote(value, safe=""))
    back = tab.page.evaluate("forwardAuthPages.back()")
    assert back in ("/", "/%09/evil.example/x"), back  # "/%09/..." stays a path on this site
    assert urlsplit(tab.site.origin + back).netloc == urlsplit(tab.site.origin).netloc
    ok = "/api/page?a=1#top"
    tab.page.goto(tab.site.origin + "/public/signin.html?redirectToPath=" + quote(ok, safe=""))
    assert tab.page.evaluate("forwardAuthPages.back()") == ok
