"""The session object through real nginx, Traefik and Caddy, each with its shipped example config:
``X-Session-Data`` and ``X-Access-Token`` reach the application (cached as set: the dev core's
requests are counted), a client's own copies never do, and no path of any proxy reaches the
session API, which the service serves on the same port the proxies ask ``/verify`` on.

    client -> nginx | Traefik | Caddy -> echo application
                  \\-> forward-auth --policy-file (session API on, main port) -> dev core
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from proxy_harness import (
    PROXIES,
    DevCore,
    EchoUpstream,
    Ports,
    dev_core,
    free_port,
    http_request,
    process,
    start_proxy,
    wait_http,
)
from test_proxies import API_KEY, CLI, cookie

SESSION_API_KEY = "proxy-session-api-secret-0123456789"
BEARER = {"Authorization": f"Bearer {SESSION_API_KEY}"}
POLICY = """\
rules:
  - name: object
    match: {path_prefix: /api/object/}
    session_data: true
    access_token: true
"""
FORGED = {"X-Session-Data": "Zm9yZ2Vk", "X-Access-Token": "forged-token", "X-Forward-Auth-Omitted": "forged"}


@dataclass
class Stack:
    core: DevCore
    echo: EchoUpstream
    service_port: int
    service_log: Path
    proxies: dict[str, int]

    def session_api_calls(self) -> int:
        """Session API calls the service answered (it logs each one)."""
        return self.service_log.read_text(errors="replace").count("session API ")

    def session(self, data: dict[str, Any]) -> tuple[str, str, str]:
        """A new session's user id, handle and access token."""
        user_id = f"u-{uuid.uuid4().hex[:8]}"
        created = self.core.post("/dev/sessions", {"userId": user_id, "userDataInDatabase": data})
        return user_id, created["session"]["handle"], created["accessToken"]["token"]

    def data_reads(self) -> int:
        return self.core.request_counts().get("GET /recipe/session", 0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("session-object")
    (work / "policy.yaml").write_text(POLICY)
    core_port, service_port = free_port(), free_port()
    core_url = f"http://127.0.0.1:{core_port}"
    with ExitStack() as stack:
        echo = stack.enter_context(EchoUpstream())
        core = stack.enter_context(dev_core(core_port, API_KEY, work / "core.log"))
        stack.enter_context(process(
            [*CLI, "serve", "--bind", f"127.0.0.1:{service_port}", "--workers", "2", "--core-url", core_url,
             "--policy-file", str(work / "policy.yaml")], work / "service.log",
            env={"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_SESSION_API": "true",
                 "FORWARD_AUTH_SESSION_API_KEY": SESSION_API_KEY, "FORWARD_AUTH_SESSION_DATA_CACHE_SECONDS": "60"}))
        wait_http(f"http://127.0.0.1:{service_port}/readyz")
        proxies = {kind: free_port() for kind in PROXIES}
        for kind, port in proxies.items():
            stack.enter_context(start_proxy(kind, work / kind, Ports(port, service_port, echo.port, echo.port)))
        yield Stack(core, echo, service_port, work / "service.log", proxies)


def decoded(value: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


@pytest.mark.parametrize("kind", PROXIES)
def test_session_data_and_the_access_token_reach_the_application_cached_as_set(stack: Stack, kind: str) -> None:
    data = {"plan": "pro", "limits": {"seats": 3}, "name": "Zoë"}
    _, _, token = stack.session(data)
    before = stack.data_reads()

    answers = [http_request(stack.proxies[kind], "GET", f"/api/object/{n}", {**cookie(token), **FORGED})
               for n in range(6)]

    for answer in answers:
        assert answer.status == 200 and answer.get("X-Echo") == "1", answer
        echo = answer.echo()
        assert [decoded(v) for v in echo.values("X-Session-Data")] == [data], echo
        assert echo.values("X-Access-Token") == [token], echo
        assert echo.values("X-Forward-Auth-Omitted") == [], echo
    # Per worker, one core round trip per handle per session_data_cache_seconds (two workers).
    assert 1 <= stack.data_reads() - before <= 2
    plain = http_request(stack.proxies[kind], "GET", "/api/plain", {**cookie(token), **FORGED})
    assert plain.status == 200, plain
    for name in FORGED:
        assert plain.echo().values(name) == [], plain
    public = http_request(stack.proxies[kind], "GET", "/public/x", FORGED)
    for name in FORGED:
        assert public.echo().values(name) == [], public


@pytest.mark.parametrize("kind", PROXIES)
def test_no_path_of_the_proxy_reaches_the_session_api(stack: Stack, kind: str) -> None:
    user_id, handle, token = stack.session({"secret": "kept"})
    calls = stack.session_api_calls()
    attempts = [(method, prefix + path) for method, path in (
        ("GET", f"/sessions/{handle}"), ("PUT", f"/sessions/{handle}/data"), ("POST", f"/sessions/{handle}/revoke"),
        ("PATCH", f"/sessions/{handle}/access-token-payload"), ("POST", f"/users/{user_id}/sessions/revoke"))
        for prefix in ("", "/api/..", "/auth/..", "/public/../..", "/api/%2e%2e", "/verify/..", "//")]
    for method, path in attempts:
        answer = http_request(stack.proxies[kind], method, path, {**BEARER, **cookie(token)}, body=b"{}")
        assert b"sessionHandlesRevoked" not in answer.body and b"kept" not in answer.body, (method, path, answer)
        if answer.get("X-Echo") == "1":  # the application's; else the proxy's own answer (404, 405, Caddy's empty 200)
            assert answer.echo().path.startswith(("/api/", "/public/", "/auth/")), (path, answer)
    assert stack.session_api_calls() == calls  # the service answered none of them
    # The session is untouched; the API itself answers on the service's own port (it could fail).
    direct = http_request(stack.service_port, "GET", f"/sessions/{handle}", BEARER)
    assert direct.status == 200 and direct.json["sessionDataInDatabase"] == {"secret": "kept"}, direct
    assert stack.session_api_calls() == calls + 1
