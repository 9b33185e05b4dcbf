"""The browser example's whole stack on 127.0.0.1, for a person (run this file) or the tests.

    dev core  <-  forward-auth serve (the gate)  <-  proxy  ->  app (page, /api/, /admin/)
                  supertokens-python backend (/auth/)  <-/

The proxy runs with the repository's shipped example configuration (nginx.conf.example,
traefik*.example.yml, Caddyfile.example), templated only for ports and writable paths, by
tests/proxy_harness.py, which this file reuses.

    python examples/browser/stack.py --proxy nginx [--expired 440] [--access-token-validity 10]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from proxy_harness import PROXIES, DevCore, Ports, free_port, process, start_proxy, wait_http  # noqa: E402

VENV_BIN = Path(sys.executable).parent
API_KEY = "browser-example-api-key"
#: The gates' session API secret; the application revokes sessions with it (``/admin/revoke-session``).
SESSION_API_KEY = "browser-example-session-api-key"
#: In the logs directory: the 401 gate's URL, written once it is ready (the application starts first).
SESSION_API_URL_FILE = "session-api-url"
ANTI_CSRF = "VIA_CUSTOM_HEADER"
SIGN_IN_PAGE, REFRESH_PAGE = "/public/signin.html", "/public/refresh.html"


@dataclass(frozen=True)
class Services:
    """The parts every site shares: the dev core and the application."""

    core: DevCore
    app_port: int
    logs: Path


@dataclass(frozen=True)
class Site:
    """One proxy in front of one gate and one backend: the origin the browser opens."""

    proxy: str
    expired_status: int
    origin: str
    services: Services

    def page(self, mode: str, frontend_expired: int | None = None) -> str:
        """The example page's URL for a token transfer mode and the frontend's expired status."""
        expired = frontend_expired or self.expired_status
        return f"{self.origin}/public/?mode={mode}&expired={expired}"


@contextmanager
def services(logs: Path, access_token_validity: int) -> Iterator[Services]:
    """The dev core (short-lived access tokens, so expiry is quick to see) and the application."""
    core_port, app_port = free_port(), free_port()
    core = DevCore(core_port, API_KEY)
    app_env = {"SESSION_API_URL_FILE": str(logs / SESSION_API_URL_FILE), "SESSION_API_KEY": SESSION_API_KEY}
    with (
        process([str(VENV_BIN / "forward-auth"), "dev-core", "--bind", f"127.0.0.1:{core_port}",
                 "--api-key", API_KEY, "--access-token-validity", str(access_token_validity)], logs / "core.log"),
        # The page states the lifetime the core was given: one value, so they cannot disagree.
        process([sys.executable, str(HERE / "app.py"), "--port", str(app_port),
                 "--access-token-validity", str(access_token_validity)], logs / "app.log", env=app_env),
    ):
        wait_http(core.url + "/hello")
        wait_http(f"http://127.0.0.1:{app_port}/public/ready")
        yield Services(core, app_port, logs)


@contextmanager
def gate(shared: Services, expired_status: int) -> Iterator[int]:
    """``forward-auth serve`` for one profile; yields its port once it has keys."""
    port = free_port()
    env = {"FORWARD_AUTH_CORE_URL": shared.core.url, "FORWARD_AUTH_CORE_API_KEY": API_KEY,
           "FORWARD_AUTH_SESSION_API": "true", "FORWARD_AUTH_SESSION_API_KEY": SESSION_API_KEY,
           "FORWARD_AUTH_BIND": f"127.0.0.1:{port}", "FORWARD_AUTH_WORKERS": "1",
           "FORWARD_AUTH_ANTI_CSRF": ANTI_CSRF, "FORWARD_AUTH_SESSION_EXPIRED_STATUS": str(expired_status),
           # Pages (app.py's .../page) send browsers to the example's sign-in and refresh pages.
           "FORWARD_AUTH_LOGIN_URL": SIGN_IN_PAGE, "FORWARD_AUTH_REFRESH_URL": REFRESH_PAGE}
    with process([str(VENV_BIN / "forward-auth"), "serve"], shared.logs / f"gate-{expired_status}.log", env=env):
        wait_http(f"http://127.0.0.1:{port}/readyz")
        if expired_status == 401:
            (shared.logs / SESSION_API_URL_FILE).write_text(f"http://127.0.0.1:{port}")
        yield port


@contextmanager
def site(kind: str, shared: Services, gate_port: int, expired_status: int) -> Iterator[Site]:
    """The SuperTokens backend and one proxy (shipped example config) in front of everything."""
    listen, backend_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{listen}"
    workdir = shared.logs / f"{kind}-{expired_status}"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"CORE_URL": shared.core.url, "CORE_API_KEY": API_KEY, "API_DOMAIN": origin,
           "SESSION_EXPIRED_STATUS": str(expired_status), "ANTI_CSRF": ANTI_CSRF}
    backend = [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{backend_port}", "--workers", "1",
               "--threads", "4", "--chdir", str(HERE), "backend:create_app()"]
    with (
        process(backend, workdir / "backend.log", env=env),
        start_proxy(kind, workdir, Ports(listen, gate_port, shared.app_port, backend_port)),
    ):
        _wait_backend(origin)
        yield Site(kind, expired_status, origin, shared)


def _wait_backend(origin: str, timeout: float = 30.0) -> None:
    """Until the SDK answers through the proxy (a refresh without tokens: its 401/440)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(origin + "/auth/session/refresh", method="POST", data=b"")
        try:
            urllib.request.urlopen(request, timeout=2)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 440):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the SuperTokens backend never answered at {origin}/auth/session/refresh")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the browser example on 127.0.0.1.")
    parser.add_argument("--proxy", choices=PROXIES, default="nginx")
    parser.add_argument("--expired", type=int, choices=(401, 440), default=401,
                        help="the status the gate and the backend answer for an expired session")
    parser.add_argument("--access-token-validity", type=int, default=30, help="seconds (default 30)")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="forward-auth-browser-"))
    for signum in (signal.SIGTERM, signal.SIGINT):  # SIGINT too: a background job starts with it ignored
        signal.signal(signum, _stop)
    try:
        with ExitStack() as stack:
            shared = stack.enter_context(services(logs, args.access_token_validity))
            gate_port = stack.enter_context(gate(shared, args.expired))
            running = stack.enter_context(site(args.proxy, shared, gate_port, args.expired))
            print(f"{args.proxy} in front of forward-auth (logs in {logs}); open in a browser:\n"
                  f"  cookie mode: {running.page('cookie')}\n  header mode: {running.page('header')}\n"
                  f"  a page with no SDK on it (sign-in and refresh redirects): {running.origin}/api/page?x=1\n"
                  "Ctrl-C stops everything.", flush=True)
            while True:
                time.sleep(3600)
    except Stopped:
        print("stopped: every process it started has exited", flush=True)


class Stopped(Exception):
    """SIGTERM or SIGINT: every process started is stopped on the way out."""


def _stop(signum: int, frame: object) -> None:
    for other in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the clean-up short
        signal.signal(other, signal.SIG_IGN)
    raise Stopped


if __name__ == "__main__":
    main()
