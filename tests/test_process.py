"""Real processes: ``forward-auth dev-core`` and ``forward-auth serve`` (gunicorn and granian), driven with curl."""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from proxy_harness import HungCore, free_port, wait_http

from forward_auth.metrics import FLUSH_SECONDS
from forward_auth.worker import DEFER_SECONDS, STALE_SECONDS

CLI = [sys.executable, "-m", "forward_auth"]
SERVERS = pytest.mark.parametrize("server", ["builtin", "gunicorn", "granian"])


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


API_KEY = "secret-key"


def post_json(url: str, body: dict) -> dict:
    headers = {"content-type": "application/json", "api-key": API_KEY}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.loads(reply.read())


def curl(*args: str) -> tuple[int, dict[str, str], str]:
    """Run real curl; return status, lower-cased headers (last value wins), body."""
    out = subprocess.run(["curl", "-sS", "-i", *args], capture_output=True, text=True, timeout=30, check=True).stdout
    head, _, body = out.partition("\n\n")  # text mode has turned CRLF into LF
    lines = head.split("\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module")
def core_url() -> Iterator[str]:
    port = free_port()
    with process([*CLI, "dev-core", "--bind", f"127.0.0.1:{port}", "--api-key", API_KEY]):
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/.well-known/jwks.json")
        yield url


@SERVERS
def test_serve_as_a_process_answers_curl(core_url: str, server: str) -> None:
    port = free_port()
    env = {"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_CHECK_DATABASE": "true", "FORWARD_AUTH_SERVER": server}
    with process([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--core-url", core_url],
                 env) as proc:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        created = post_json(core_url + "/dev/sessions", {"userId": "curl-user"})
        token = created["accessToken"]["token"]
        status, headers, body = curl(f"http://127.0.0.1:{port}/verify", "-H", f"Cookie: sAccessToken={token}")
        assert status == 200 and headers["x-user-id"] == "curl-user"
        status, head, nothing = curl("-I", f"http://127.0.0.1:{port}/verify", "-H", f"Cookie: sAccessToken={token}")
        assert (status, head["content-length"], nothing) == (200, str(len(body)), "")  # HEAD: GET's length, no body
        status, headers, body = curl(f"http://127.0.0.1:{port}/verify")
        assert (status, json.loads(body)) == (401, {"message": "unauthorised"})
        # a 16 KB cookie passes gunicorn's header limits and gets a session answer, not a 400
        status, _, body = curl(f"http://127.0.0.1:{port}/verify", "-H", "Cookie: sAccessToken=" + "a" * 16384)
        assert (status, json.loads(body)) == (401, {"message": "unauthorised"})
    assert proc.stdout is not None
    assert "Control socket" not in proc.stdout.read()  # gunicorn 27's, one per user: never opened


def test_core_going_down_gives_503_not_401(core_url: str) -> None:
    port, dead = free_port(), free_port()
    with process([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                  "--core-url", f"http://127.0.0.1:{dead}"]):
        wait_http(f"http://127.0.0.1:{port}/healthz")
        token = post_json(core_url + "/dev/sessions", {"userId": "u"})["accessToken"]["token"]
        status, headers, _ = curl(f"http://127.0.0.1:{port}/verify", "-H", f"Cookie: sAccessToken={token}")
        assert status == 503 and headers["x-forward-auth-reason"] == "keys-unavailable"
        assert curl(f"http://127.0.0.1:{port}/readyz")[0] == 503


def test_invalid_setting_stops_start_up_with_exit_2() -> None:
    result = subprocess.run([*CLI, "serve", "--anti-csrf", "SOMETIMES"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "forward-auth: invalid setting anti_csrf='SOMETIMES': must be one of NONE, VIA_CUSTOM_HEADER, VIA_TOKEN")


def test_dev_core_refuses_remote_bind() -> None:
    result = subprocess.run([*CLI, "dev-core", "--bind", "0.0.0.0:0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--allow-remote" in result.stderr


def test_demo_prints_curls_that_show_each_outcome() -> None:
    with process([*CLI, "demo"]) as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len([x for x in lines if x.strip().startswith("curl")]) < 5:
            lines.append(proc.stdout.readline())
        commands = [shlex.split(x.strip())[1:] for x in lines if x.strip().startswith("curl")]
        verify_url = next(a for a in commands[0] if a.startswith("http"))
        wait_http(verify_url.replace("/verify", "/readyz"))
        outcomes = [curl(*[a for a in args if a != "-i"]) for args in commands]
    assert [o[0] for o in outcomes] == [200, 401, 401, 200, 200]
    assert outcomes[0][1]["x-user-id"] == "demo-user"
    assert json.loads(outcomes[1][2]) == {"message": "try refresh token"}
    assert json.loads(outcomes[2][2]) == {"message": "unauthorised"}
    assert re.search(r"no session", outcomes[4][2])


def test_gunicorn_directly_with_the_shipped_config(core_url: str) -> None:
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    env = {"FORWARD_AUTH_BIND": f"127.0.0.1:{port}", "FORWARD_AUTH_CORE_URL": core_url, "FORWARD_AUTH_WORKERS": "1",
           "FORWARD_AUTH_CORE_API_KEY": API_KEY}
    with process([sys.executable, "-m", "gunicorn", "-c", str(root / "gunicorn.conf.py")], env):
        wait_http(f"http://127.0.0.1:{port}/readyz")
        token = post_json(core_url + "/dev/sessions", {"userId": "direct"})["accessToken"]["token"]
        status, headers, _ = curl(f"http://127.0.0.1:{port}/verify", "-H", f"Cookie: sAccessToken={token}")
        assert status == 200 and headers["x-user-id"] == "direct"


class Hammer:
    """Threads sending /verify with a session until stopped, recording (status, rule) or the failure."""

    def __init__(self, port: int, token: str, threads: int = 4) -> None:
        self.seen: list[tuple[int, str]] = []
        self.failures: list[str] = []
        self._url, self._token, self._stop = f"http://127.0.0.1:{port}/verify", token, threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(self._url, headers={"Cookie": f"sAccessToken={self._token}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    self.seen.append((reply.status, reply.headers["X-Forward-Auth-Rule"]))
            except Exception as exc:  # noqa: BLE001 - any failed request fails the test
                self.failures.append(repr(exc))

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


BEFORE = "rules: [{name: before, match: {path_prefix: /}, session: required}]\n"
AFTER = "rules: [{name: after, match: {path_prefix: /}, session: public}]\n"
BROKEN = "rules: [{name: broken, session: sometimes}]\n"


def serve(server: str, port: int, core_url: str, *extra: str) -> list[str]:
    """``forward-auth serve`` with two workers of ``server`` on ``port``."""
    return [*CLI, "serve", "--server", server, "--bind", f"127.0.0.1:{port}", "--workers", "2", "--core-url", core_url,
            *extra]


def replace(policy: Path, text: str) -> None:
    """A policy edit by rename, as the README asks (a half-written file could parse)."""
    staged = policy.with_name("staged.yaml")
    staged.write_text(text)
    staged.rename(policy)


def _policy_switched_without_loss(hammer: Hammer) -> None:
    assert hammer.failures == []
    assert {status for status, _ in hammer.seen} == {200} and len(hammer.seen) > 50
    rules = [rule for _, rule in hammer.seen]
    assert rules[0] == "before" and rules[-1] == "after"  # the broken edit kept the last good policy
    assert "broken" not in rules


@SERVERS
def test_policy_reload_under_load_with_sighup_loses_no_request(core_url: str, tmp_path: Path, server: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(BEFORE)
    port = free_port()
    env = {"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_POLICY_RELOAD_SECONDS": "0"}
    args = serve(server, port, core_url, "--policy-file", str(policy))
    token = post_json(core_url + "/dev/sessions", {"userId": "loaded"})["accessToken"]["token"]
    with process(args, env) as proc:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        with Hammer(port, token) as hammer:
            time.sleep(1.0)
            for text in (AFTER, BROKEN):
                policy.write_text(text)
                os.kill(proc.pid, signal.SIGHUP)
                time.sleep(2.0)
    _policy_switched_without_loss(hammer)


@SERVERS
def test_policy_file_edits_under_load_lose_no_request(core_url: str, tmp_path: Path, server: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(BEFORE)
    port = free_port()
    env = {"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_POLICY_RELOAD_SECONDS": "0.3"}
    args = serve(server, port, core_url, "--policy-file", str(policy))
    token = post_json(core_url + "/dev/sessions", {"userId": "loaded"})["accessToken"]["token"]
    with process(args, env):
        wait_http(f"http://127.0.0.1:{port}/readyz")
        with Hammer(port, token) as hammer:
            time.sleep(1.0)
            for text in (AFTER, BROKEN):
                replace(policy, text)
                time.sleep(1.5)
    _policy_switched_without_loss(hammer)


@pytest.mark.parametrize("server", ["builtin", "granian"])
def test_sighup_rereads_the_policy_in_the_same_workers(core_url: str, tmp_path: Path, server: str) -> None:
    """SIGHUP replaces no worker of the built-in server or granian (a stopping one would close
    its keep-alive connections, or reset those in its accept queue): each worker re-reads the
    file and keeps its last good policy when the file is broken."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(BEFORE)
    port = free_port()
    env = {"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_POLICY_RELOAD_SECONDS": "0"}
    args = serve(server, port, core_url, "--policy-file", str(policy))

    def rules() -> set[str]:
        return {curl(f"http://127.0.0.1:{port}/verify")[1]["x-forward-auth-rule"] for _ in range(10)}

    with process(args, env) as proc:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        both_accepting(port, proc.pid)
        before = set(workers_of(proc.pid))
        assert rules() == {"before"}
        for text, expected in ((AFTER, {"after"}), (BROKEN, {"after"})):
            replace(policy, text)
            os.kill(proc.pid, signal.SIGHUP)
            time.sleep(0.5)
            assert rules() == expected
        assert set(workers_of(proc.pid)) == before and len(before) == 2


THREE_RULES = ("rules: [{name: a, match: {path_prefix: /a/}, session: public},"
               " {name: b, match: {path_prefix: /b/}, session: public}, {name: all, match: {path_prefix: /}}]\n")


@SERVERS
def test_sighup_after_a_bad_edit_keeps_the_last_good_policy_not_the_first(core_url: str, tmp_path: Path,
                                                                            server: str) -> None:
    """3 rules at start, a 0-rule file renamed in (watched), a broken one renamed in, SIGHUP: the
    workers then started or told to re-read serve the 0-rule policy, the last good one."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(THREE_RULES)
    port = free_port()
    env = {"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_POLICY_RELOAD_SECONDS": "0.3"}
    args = serve(server, port, core_url, "--policy-file", str(policy))

    def rules() -> set[str]:
        return {curl(f"http://127.0.0.1:{port}/verify")[1]["x-forward-auth-rule"] for _ in range(10)}

    def rename_in(text: str) -> None:
        replace(policy, text)
        time.sleep(1.5)

    with process(args, env) as proc:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        assert rules() == {"all"}
        rename_in("default: {session: required}\n")  # 0 rules: the default answers
        assert rules() == {"default"}
        rename_in(BROKEN)
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(3.0)  # gunicorn replaces its workers
        assert rules() == {"default"}


def test_invalid_policy_file_stops_start_up(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: [{session: maybe}]\n")
    result = subprocess.run([*CLI, "serve", "--policy-file", str(policy)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "rules[0]: session must be one of" in result.stderr


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus exposition ``text``."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] == name and ",".join(sorted(sample[len(name) + 1:-1].split(","))) == wanted:
            return float(value)
    raise AssertionError(f"no sample {name}{{{wanted}}}")


def settled_metrics(url: str, decisions: int) -> tuple[int, dict[str, str], str]:
    """``/metrics`` once it counts ``decisions``: each worker writes its counts every
    ``FLUSH_SECONDS`` (and the one serving the scrape before it), so this waits at most about that."""
    deadline = time.monotonic() + FLUSH_SECONDS + 4
    while True:
        status, headers, text = curl(url)
        try:
            seen = metric(text, "forward_auth_decision_seconds_count")
        except AssertionError:  # not a single one written yet
            seen = None
        if seen == decisions or time.monotonic() > deadline:
            return status, headers, text
        time.sleep(0.1)


@SERVERS
def test_metrics_add_up_every_worker_and_json_logs_hold_no_token(core_url: str, server: str) -> None:
    port = free_port()
    env = {"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_LOG_FORMAT": "json", "FORWARD_AUTH_LOG_LEVEL": "debug",
           "FORWARD_AUTH_SERVER": server}
    token = post_json(core_url + "/dev/sessions", {"userId": "counted"})["accessToken"]["token"]
    with process([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--core-url", core_url], env) as proc:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        for _ in range(12):
            assert curl(f"http://127.0.0.1:{port}/verify", "-H", f"Cookie: sAccessToken={token}")[0] == 200
        for _ in range(5):
            assert curl(f"http://127.0.0.1:{port}/verify", "-H", "X-Request-Id: probe-1")[0] == 401
        for _ in range(3):
            assert curl(f"http://127.0.0.1:{port}/verify", "-H", f"Cookie: sAccessToken={token}x")[0] == 401
        status, headers, text = settled_metrics(f"http://127.0.0.1:{port}/metrics", 20)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert metric(text, "forward_auth_decisions_total", outcome="allow", reason="ok") == 12
    assert metric(text, "forward_auth_decisions_total", outcome="deny", reason="no-token") == 5
    assert metric(text, "forward_auth_decisions_total", outcome="deny", reason="invalid-token") == 3
    assert metric(text, "forward_auth_decision_seconds_count") == 20
    assert metric(text, "forward_auth_jwks_fetches_total", result="ok") == 2  # one per worker, at start
    assert proc.stdout is not None
    lines = [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
    decisions = [line for line in lines if line["logger"] == "forward_auth.decisions"]
    assert len(decisions) == 20
    assert {d["outcome"] for d in decisions} == {"allow", "deny"}
    assert sum(d["request_id"] == "probe-1" for d in decisions) == 5
    assert all(d["user_id"] == "counted" for d in decisions if d["outcome"] == "allow")
    everything = json.dumps(lines)
    assert all(segment not in everything for segment in token.split("."))


@SERVERS
def test_metrics_bind_serves_every_workers_metrics_from_the_master_only_there(core_url: str, server: str) -> None:
    port, metrics_port = free_port(), free_port()
    token = post_json(core_url + "/dev/sessions", {"userId": "counted"})["accessToken"]["token"]
    args = serve(server, port, core_url, "--metrics-bind", f"127.0.0.1:{metrics_port}")
    with process(args, {"FORWARD_AUTH_CORE_API_KEY": API_KEY}):
        wait_http(f"http://127.0.0.1:{port}/readyz")
        wait_http(f"http://127.0.0.1:{metrics_port}/metrics")
        for _ in range(12):
            assert curl(f"http://127.0.0.1:{port}/verify", "-H", f"Cookie: sAccessToken={token}")[0] == 200
        for _ in range(5):
            assert curl(f"http://127.0.0.1:{port}/verify")[0] == 401
        assert curl(f"http://127.0.0.1:{port}/metrics")[0] == 404
        assert curl(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert [curl(f"http://127.0.0.1:{metrics_port}{path}")[0] for path in ("/", "/verify", "/metrics/x")] == [
            404, 404, 404]
        status, headers, text = settled_metrics(f"http://127.0.0.1:{metrics_port}/metrics", 17)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert metric(text, "forward_auth_decisions_total", outcome="allow", reason="ok") == 12
    assert metric(text, "forward_auth_decisions_total", outcome="deny", reason="no-token") == 5
    assert metric(text, "forward_auth_decision_seconds_count") == 17
    assert metric(text, "forward_auth_jwks_fetches_total", result="ok") == 2  # one per worker: both added up


@SERVERS
def test_session_api_bind_is_served_by_the_master_only_there(core_url: str, server: str) -> None:
    port, api_port, key = free_port(), free_port(), "process-session-api-secret"
    created = post_json(core_url + "/dev/sessions", {"userId": "revoked-here"})
    handle, token = created["session"]["handle"], created["accessToken"]["token"]
    bearer = ("-H", f"Authorization: Bearer {key}")
    env = {"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_SESSION_API": "true",
           "FORWARD_AUTH_SESSION_API_KEY": key, "FORWARD_AUTH_SESSION_API_BIND": f"127.0.0.1:{api_port}"}
    with process(serve(server, port, core_url), env):
        wait_http(f"http://127.0.0.1:{port}/readyz")
        assert curl(f"http://127.0.0.1:{port}/sessions/{handle}", *bearer)[0] == 404  # not on the main port
        assert curl(f"http://127.0.0.1:{api_port}/verify")[0] == 404  # nothing else there
        assert curl(f"http://127.0.0.1:{api_port}/sessions/{handle}")[0] == 401
        status, _, text = curl(f"http://127.0.0.1:{api_port}/sessions/{handle}/revoke", "-X", "POST", *bearer)
        assert (status, json.loads(text)) == (200, {"status": "OK", "sessionHandlesRevoked": [handle]})
        checked = curl(f"http://127.0.0.1:{port}/verify?checkDatabase=true", "-H", f"Cookie: sAccessToken={token}")
        assert checked[0] == 401


@SERVERS
def test_a_taken_metrics_address_stops_start_up_naming_the_setting(server: str) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "127.0.0.1:%d" % taken.getsockname()[1]
        result = subprocess.run([*CLI, "serve", "--server", server, "--bind", f"127.0.0.1:{port}", "--workers", "1",
                                 "--metrics-bind", address], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"forward-auth: invalid setting metrics_bind='{address}': cannot be listened on (Address already in use)")


def test_tracing_under_gunicorn_continues_the_callers_trace(core_url: str) -> None:
    port, trace_id = free_port(), "4bf92f3577b34da6a3ce929d0e0e4736"
    env = {"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_TRACING": "true", "OTEL_TRACES_EXPORTER": "console"}
    token = post_json(core_url + "/dev/sessions", {"userId": "traced"})["accessToken"]["token"]
    with process([*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--core-url", core_url], env) as proc:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        status, _, _ = curl(f"http://127.0.0.1:{port}/verify?checkDatabase=true", "-H", f"Cookie: sAccessToken={token}",
                            "-H", f"traceparent: 00-{trace_id}-00f067aa0ba902b7-01")
        assert status == 200
    assert proc.stdout is not None
    output = proc.stdout.read()  # the console exporter's spans, flushed when the worker exits
    assert f'"trace_id": "0x{trace_id}"' in output and '"parent_id": "0x00f067aa0ba902b7"' in output
    assert '"name": "POST /recipe/session/verify"' in output and '"user.id": "traced"' in output
    assert all(segment not in output for segment in token.split("."))


@SERVERS
def test_underscore_spelling_of_a_forwarded_header(tmp_path: Path, server: str) -> None:
    """`X_Forwarded_Uri` never stands in for `X-Forwarded-Uri`: gunicorn drops header names with
    underscores, and so does the ASGI layer under granian (whose own WSGI environ merges the two)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: [{name: public, match: {path_prefix: /public/}, session: public}]\n")
    port = free_port()
    args = [*CLI, "serve", "--server", server, "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--core-url", "http://127.0.0.1:9", "--policy-file", str(policy)]
    with process(args):
        wait_http(f"http://127.0.0.1:{port}/healthz")
        status, _, _ = curl(f"http://127.0.0.1:{port}/verify", "-H", "X-Forwarded-Uri: /admin/x",
                            "-H", "X_Forwarded_Uri: /public/x")
    assert status == 401


@SERVERS
def test_unix_socket_replaces_a_stale_one_and_is_open_to_local_users(tmp_path: Path, server: str) -> None:
    path = tmp_path / "fa.sock"
    with socket.socket(socket.AF_UNIX) as stale:  # what a killed server leaves behind
        stale.bind(str(path))
    args = [*CLI, "serve", "--server", server, "--bind", f"unix:{path}", "--workers", "1",
            "--core-url", "http://127.0.0.1:9"]
    with process(args):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            result = subprocess.run(["curl", "-s", "--unix-socket", str(path), "http://forward-auth/healthz"],
                                    capture_output=True, text=True)
            if result.stdout:
                break
            time.sleep(0.2)
        mode = path.stat().st_mode & 0o777
    assert json.loads(result.stdout) == {"status": "ok"}
    assert mode == 0o777


@contextmanager
def default_service(core: str, *extra: str, env: dict[str, str] | None = None) -> Iterator[tuple[int, int]]:
    """``forward-auth serve`` with its default server and 2 workers, both accepting: (port, master pid)."""
    port = free_port()
    args = [*CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--core-url", core, *extra]
    with process(args, {"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_LOG_LEVEL": "warning", **(env or {})}
                 ) as proc:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        both_accepting(port, proc.pid)
        yield port, proc.pid


def workers_of(master: int) -> list[int]:
    return [int(pid) for pid in subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                                               text=True).stdout.split()]


def both_accepting(port: int, master: int) -> None:
    """Idle connections until each worker holds one: /readyz answered by one worker says nothing
    of its sibling, still booting (gunicorn forks them one after the other)."""
    opened = []
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            opened.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.1)
            workers = workers_of(master)
            if len(workers) == 2 and all(held_by(pid, port) for pid in workers):
                return
        raise AssertionError("the second worker never accepted a connection")
    finally:
        for conn in opened:
            conn.close()


def timed_verify(port: int, token: str, query: str = "", timeout: float = 10.0) -> tuple[int, float]:
    """One /verify on a new connection: (status, seconds)."""
    started = time.monotonic()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/verify{query}",
                                     headers={"Cookie": f"sAccessToken={token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status = reply.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:  # no answer: the connection closed or timed out
        status = 0
    return status, time.monotonic() - started


def test_slow_clients_do_not_delay_other_requests(core_url: str) -> None:
    """200 connections that never finish their headers hold no worker: requests beside them
    are answered at once (the gthread workers of gunicorn were all held by them)."""
    token = post_json(core_url + "/dev/sessions", {"userId": "patient"})["accessToken"]["token"]
    with default_service(core_url) as (port, _):
        drips = []
        for _ in range(200):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"GET /verify HTTP/1.1\r\nHost: x\r\n")
            drips.append(conn)
        try:
            time.sleep(0.3)
            for conn in drips[:50]:
                conn.sendall(b"X-Drip: 1\r\n")
            answers = [timed_verify(port, token) for _ in range(4)]
        finally:
            for conn in drips:
                conn.close()
    assert [status for status, _ in answers] == [200] * 4
    assert max(seconds for _, seconds in answers) < 1.0, answers  # the bench measures the latency itself


def test_a_hung_core_does_not_hold_up_requests_that_need_no_core(core_url: str) -> None:
    token = post_json(core_url + "/dev/sessions", {"userId": "local"})["accessToken"]["token"]
    core = HungCore(core_url)
    try:
        with default_service(core.url, env={"FORWARD_AUTH_CORE_TIMEOUT_SECONDS": "5"}) as (port, _):
            results: list[tuple[int, float]] = []
            waiting = [threading.Thread(target=lambda: results.append(timed_verify(port, token, "?checkDatabase=true")),
                                        daemon=True) for _ in range(32)]
            for thread in waiting:
                thread.start()
            assert core.wait_held(8, timeout=5) == 8  # 2 workers x 4 core threads hung
            local = [timed_verify(port, token) for _ in range(50)]
            assert results == []  # every checkDatabase request still waits for the core
    finally:
        core.close()
    assert {status for status, _ in local} == {200}
    assert max(seconds for _, seconds in local) < 0.5, sorted(seconds for _, seconds in local)[-5:]


def test_keep_alive_load_is_shared_by_both_workers(core_url: str) -> None:
    """16 keep-alive connections (wrk): the least busy worker does at least half the work of the busiest."""
    token = post_json(core_url + "/dev/sessions", {"userId": "even"})["accessToken"]["token"]
    with default_service(core_url) as (port, master):
        workers = workers_of(master)

        def ticks() -> list[int]:
            return [sum(int(field) for field in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
                    for pid in workers]

        before = ticks()
        subprocess.run(["wrk", "-t2", "-c16", "-d3s", f"http://127.0.0.1:{port}/verify",
                        "-H", f"Cookie: sAccessToken={token}"], capture_output=True, check=True, timeout=30)
        used = [after - was for after, was in zip(ticks(), before, strict=True)]
    assert len(workers) == 2
    assert min(used) >= max(used) / 2, used


def held_by(pid: int, port: int) -> int:
    """Established TCP connections to ``port`` that process ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


def keep_asking(clients: list[http.client.HTTPConnection], seconds: float) -> int:
    """/healthz on each client every 50 ms for ``seconds`` (http.client connects again after a
    ``connection: close``): how many answers said ``connection: close``."""
    closes = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for client in clients:
            client.request("GET", "/healthz")
            answer = client.getresponse()
            answer.read()
            closes += answer.getheader("connection") == "close"
        time.sleep(0.05)
    return closes


def test_a_worker_that_comes_late_gets_its_share_of_kept_alive_connections(core_url: str) -> None:
    """8 keep-alive connections opened while one worker is stopped all go to the other; once
    both run, the busy one hands some back (``connection: close`` on their next answer) and the
    clients' new connections go to the other. Both idle first for longer than a count stays
    fresh unrenewed: the idle sibling is still one (each tick renews its count)."""
    with default_service(core_url) as (port, master):
        workers = workers_of(master)
        time.sleep(STALE_SECONDS + 1)
        clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(8)]
        os.kill(workers[1], signal.SIGSTOP)
        try:
            for client in clients:
                client.request("GET", "/healthz")
                client.getresponse().read()
            alone = [held_by(pid, port) for pid in workers]
        finally:
            os.kill(workers[1], signal.SIGCONT)
        keep_asking(clients, 3.5)
        shared = [held_by(pid, port) for pid in workers]
        for client in clients:
            client.close()
    assert alone == [8, 0]
    assert sum(shared) == 8 and min(shared) >= 3, shared


def burst(port: int, count: int) -> tuple[list[socket.socket], float]:
    """``count`` connections opened at once, each sent a request: the connections, each answered,
    and the seconds until the last answer."""
    started = time.monotonic()
    conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    for conn in conns:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    for conn in conns:
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
    return conns, time.monotonic() - started


def test_a_burst_of_new_connections_is_spread_over_both_workers(core_url: str) -> None:
    """16 connections opened at once (as wrk and nginx's upstream pool open them), three times:
    each worker holds its share before the once-a-second hand-back could move any (one awake
    worker took nearly all of them when none was left to the other)."""
    splits = []
    with default_service(core_url) as (port, master):
        workers = workers_of(master)
        for _ in range(3):
            conns, _ = burst(port, 16)
            splits.append([held_by(pid, port) for pid in workers])
            for conn in conns:
                conn.close()
            deadline = time.monotonic() + 5
            while any(held_by(pid, port) for pid in workers) and time.monotonic() < deadline:
                time.sleep(0.02)
    assert all(sum(split) == 16 and min(split) >= 6 for split in splits), splits


def test_a_burst_is_not_kept_waiting_by_a_stopped_sibling_that_holds_fewer(core_url: str) -> None:
    """With a sibling stopped (or busy, or hung until the master kills it) that holds fewer, a
    burst of 16 new connections waits two turns at most, not turns for each connection (33 ms for
    the last)."""
    with default_service(core_url) as (port, master):
        workers = workers_of(master)
        os.kill(workers[1], signal.SIGSTOP)
        try:
            first, _ = burst(port, 1)  # the live worker holds more from here on
            conns, took = burst(port, 16)
        finally:
            os.kill(workers[1], signal.SIGCONT)
        for conn in first + conns:
            conn.close()
    assert took < 0.015, took


def test_no_new_connection_waits_long_for_a_sibling_that_holds_fewer(core_url: str) -> None:
    """A worker holding more than a sibling that is stopped (or busy, or hung until the master
    kills it) leaves each new connection to it for two turns of about a millisecond, then takes
    it: it used to wait up to 50 ms, and nginx's request on that connection waited as long."""
    with default_service(core_url) as (port, master):
        workers = workers_of(master)
        os.kill(workers[1], signal.SIGSTOP)
        kept: list[socket.socket] = []
        took = []
        try:
            for _ in range(20):  # each kept open: the live worker holds more and more
                conns, seconds = burst(port, 1)
                kept += conns
                took.append(seconds)
        finally:
            os.kill(workers[1], signal.SIGCONT)
            for conn in kept:
                conn.close()
    assert max(took) < 0.04, sorted(took)[-3:]


def test_a_sibling_that_stops_ticking_is_left_out(core_url: str) -> None:
    """A worker whose sibling stopped (SIGSTOP: as a hung one until the master kills it) leaves it
    out once it has missed three ticks: it hands none of its keep-alive connections back for the
    sibling to take. It used to retire half its surplus every second, and its clients reconnected
    to it, for as long as the sibling was stopped."""
    with default_service(core_url) as (port, master):
        workers = workers_of(master)
        os.kill(workers[1], signal.SIGSTOP)
        try:
            time.sleep(STALE_SECONDS + 1)
            clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(10)]
            closes = keep_asking(clients, 3.5)  # three ticks of the hand-back
            for client in clients:
                client.close()
        finally:
            os.kill(workers[1], signal.SIGCONT)
    assert closes == 0


def test_a_connection_per_request_is_not_kept_waiting_by_turns(core_url: str) -> None:
    """Four clients that each open a connection per request (as nginx does with no upstream
    ``keepalive``): a worker holding one connection more than its sibling for a moment leaves the
    next to it, but takes it once its own has closed. It used to sit out the whole turn, so both
    workers ended up taking one connection per turn each: 2.3 ms a request, 1.9k requests a second."""
    took: list[float] = []

    def client() -> None:
        for _ in range(100):
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
                answer = b""
                while chunk := conn.recv(4096):
                    answer += chunk
            took.append(time.monotonic() - started if answer.startswith(b"HTTP/1.1 200") else float("inf"))

    with default_service(core_url) as (port, _):
        clients = [threading.Thread(target=client) for _ in range(4)]
        for each in clients:
            each.start()
        for each in clients:
            each.join()
    took.sort()
    assert len(took) == 400 and took[-1] < float("inf"), "a request was not answered 200"
    assert took[len(took) // 2] < DEFER_SECONDS, took[len(took) // 2]


@SERVERS
def test_a_broken_policy_file_is_logged_once_per_change(core_url: str, tmp_path: Path, server: str) -> None:
    """Two workers and the main process watch the file; one line says it is broken, one that it is back."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(THREE_RULES)
    port = free_port()
    env = {"FORWARD_AUTH_CORE_API_KEY": API_KEY, "FORWARD_AUTH_POLICY_RELOAD_SECONDS": "0.2"}
    args = serve(server, port, core_url, "--policy-file", str(policy))
    with process(args, env) as proc:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        for text in (BROKEN, THREE_RULES):
            replace(policy, text)
            deadline = time.monotonic() + 2.0  # ten reload periods, every worker asked
            while time.monotonic() < deadline:
                curl(f"http://127.0.0.1:{port}/verify")
                time.sleep(0.02)  # unpaced, a fast machine's log lines filled the unread pipe: the server blocked
    assert proc.stdout is not None
    log = proc.stdout.read()
    assert log.count("policy not reloaded") == 1, log
    assert log.count("policy reloaded from") == 1, log


@SERVERS
def test_the_envoy_path_is_judged_as_the_client_sent_it(core_url: str, server: str) -> None:
    """Both servers decode the request path before routing; ``/verify/<path>`` is judged on the
    request target as sent, so an encoded ``/`` or an overlong ``.`` is refused as it is in a
    forwarded URI, and ``//verify`` is still ``/verify``."""
    port = free_port()
    with process(serve(server, port, core_url), {"FORWARD_AUTH_CORE_API_KEY": API_KEY}):
        wait_http(f"http://127.0.0.1:{port}/readyz")
        for path in ("/verify/a%2Fb/x", "/verify/%C0%AE%C0%AE/admin"):
            status, headers, _ = curl("--path-as-is", f"http://127.0.0.1:{port}{path}")
            assert (status, headers["x-forward-auth-reason"]) == (400, "ambiguous-path"), path
        for path in ("/verify/api/x", "/verify/caf%C3%A9", "//verify"):
            status, headers, _ = curl("--path-as-is", f"http://127.0.0.1:{port}{path}")
            assert (status, headers["x-forward-auth-reason"]) == (401, "no-token"), path
