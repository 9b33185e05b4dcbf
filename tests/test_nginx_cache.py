"""nginx.conf.example's optional cache of allowed answers, through real nginx: a repeat of the
same request is answered by nginx, anything that could change the decision is decided again."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import proxy_harness
import pytest
from proxy_harness import (
    ROOT,
    DevCore,
    EchoUpstream,
    Ports,
    free_port,
    http_request,
    start_proxy,
    wait_http,
)
from test_process import CLI, process

API_KEY = "cache-key"


def with_cache(text: str, directory: Path) -> str:
    """The example with its optional cache lines uncommented (each must be there), caching in
    ``directory`` (nginx's workers run as nobody: pytest's own directories are closed to them)."""
    lines = ["proxy_cache_path ", "proxy_cache forward_auth;", "proxy_cache_key ", "open_file_cache ",
             "open_file_cache_valid "]
    for line in lines:
        assert f"#{line}" in text, f"nginx.conf.example lost its optional #{line}"
        text = text.replace(f"#{line}", line)
    return text.replace("/var/lib/nginx/forward-auth-cache", str(directory))


@dataclass
class Site:
    port: int
    service: int
    core: DevCore
    echo: EchoUpstream

    def decisions(self) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.service}/metrics", timeout=5).read().decode()
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line.startswith("forward_auth_decisions_total{"))

    def decided(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bool]:
        """(status through nginx, whether the service decided it: False when nginx's cache answered)."""
        before = self.decisions()
        answer = http_request(self.port, method, path, headers)
        return answer.status, self.decisions() > before


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("cache")
    shim = work / "root"  # start_proxy renders ROOT/nginx.conf.example: this one has the cache on
    shim.mkdir()
    cache = Path(tempfile.mkdtemp(prefix="forward-auth-cache-"))
    cache.chmod(0o777)
    (shim / "nginx.conf.example").write_text(with_cache((ROOT / "nginx.conf.example").read_text(), cache))
    core_port, service_port, listen = free_port(), free_port(), free_port()
    core_url = f"http://127.0.0.1:{core_port}"
    with ExitStack() as stack:
        echo = stack.enter_context(EchoUpstream())
        stack.enter_context(process([*CLI, "dev-core", "--bind", f"127.0.0.1:{core_port}", "--api-key", API_KEY]))
        wait_http(core_url + "/hello")
        stack.enter_context(process(
            [*CLI, "serve", "--bind", f"127.0.0.1:{service_port}", "--workers", "1", "--core-url", core_url,
             "--anti-csrf", "VIA_CUSTOM_HEADER"],
            env={"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_PROXY_CACHE_SECONDS": "30"}))
        wait_http(f"http://127.0.0.1:{service_port}/readyz")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(proxy_harness, "ROOT", shim)
            stack.enter_context(start_proxy("nginx", work / "nginx", Ports(listen, service_port, echo.port)))
        stack.callback(shutil.rmtree, cache, ignore_errors=True)
        yield Site(listen, service_port, DevCore(core_port, API_KEY), echo)


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"sAccessToken={token}"}


def test_a_repeat_is_answered_by_nginx_with_the_same_identity(site: Site) -> None:
    token = site.core.access_token("alice")
    assert site.decided("GET", "/api/repeat?case=c1", cookie(token)) == (200, True)
    assert site.decided("GET", "/api/repeat?case=c1", cookie(token)) == (200, False)
    identities = [r.values("X-User-Id") for r in site.echo.received("case=c1")]
    assert identities == [["alice"], ["alice"]]


@pytest.mark.parametrize("change", ["method", "rid", "anti-csrf", "path", "host", "token", "cookie", "bearer"])
def test_whatever_the_decision_reads_is_decided_again(site: Site, change: str) -> None:
    token, other = site.core.access_token("carol"), site.core.access_token("dave")
    path = f"/api/changed-{change}?case=c2"
    assert site.decided("GET", path, cookie(token)) == (200, True)
    variants = {
        "method": ("POST", path, cookie(token), 401),  # no rid: the anti-CSRF check (VIA_CUSTOM_HEADER) fails
        "rid": ("GET", path, {**cookie(token), "rid": "session"}, 200),
        "anti-csrf": ("GET", path, {**cookie(token), "anti-csrf": "x"}, 200),
        "path": ("GET", path.replace("changed", "other"), cookie(token), 200),
        "host": ("GET", path, {**cookie(token), "Host": "elsewhere.example"}, 200),
        "token": ("GET", path, cookie(other), 200),
        "cookie": ("GET", path, {"Cookie": f"sAccessToken={token}; sAccessToken={other}"}, 401),  # a duplicate
        "bearer": ("GET", path, {"Authorization": f"Bearer {other}"}, 200),
    }
    method, changed_path, headers, status = variants[change]
    assert site.decided(method, changed_path, headers) == (status, True)


def test_text_moved_from_one_part_of_the_key_to_another_is_decided_again(site: Site) -> None:
    """The URI ending with the start of a cached request's cookie, and a cookie that is the rest of
    it, once joined to that request's key (with `|` between the parts): an allow without a session."""
    token = site.core.access_token("frank")
    assert site.decided("GET", "/api/moved?case=c5", {"Cookie": f"sAccessToken={token};z=|x"}) == (200, True)
    assert site.decided("GET", f"/api/moved?case=c5|sAccessToken={token};z=", {"Cookie": "x"}) == (401, True)


def test_denials_and_revocation_checks_are_never_cached(site: Site) -> None:
    for _ in range(2):
        assert site.decided("GET", "/api/none?case=c3", {}) == (401, True)
    token = site.core.access_token("erin", ["admin"])  # /admin/ asks checkDatabase=true
    for _ in range(2):
        assert site.decided("GET", "/admin/x?case=c3", cookie(token)) == (200, True)
    revoked = site.core.revoked_token("erin")
    for _ in range(2):
        assert site.decided("GET", "/admin/x?case=c3", cookie(revoked))[1]


def test_requests_at_once_on_a_new_key_are_not_held_back_by_a_cache_lock(site: Site) -> None:
    """16 at once of a request nginx has not cached yet (a page's first load, tabs polling): each is
    decided by the service. With `proxy_cache_lock on` one was, and nginx's waiters looked again
    only every 500 ms: 15 answers came half a second late."""
    token = site.core.access_token("grace")
    start = threading.Barrier(16)
    took: list[float] = []

    def ask() -> None:
        start.wait()
        began = time.monotonic()
        status = http_request(site.port, "GET", "/api/at-once?case=c6", cookie(token)).status
        took.append(time.monotonic() - began if status == 200 else float("inf"))

    askers = [threading.Thread(target=ask) for _ in range(16)]
    for each in askers:
        each.start()
    for each in askers:
        each.join()
    assert len(took) == 16 and max(took) < 0.25, sorted(took)


def test_the_cache_is_off_in_the_shipped_config() -> None:
    text = (Path(ROOT) / "nginx.conf.example").read_text()
    assert "\n    proxy_cache_path" not in text and "\n            proxy_cache forward_auth;" not in text
