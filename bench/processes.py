"""The processes of ``bench/http_bench.py`` and what it reads of them: the tools it needs, free ports,
servers started in their own session and stopped with it, HTTP probes, workers, RSS and CPU ticks from
/proc, and wrk (one run, one result)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "http_bench.lua"
HOST = "127.0.0.1"

WRK_HINT = ("wrk is not installed (or not on PATH). Install it, e.g. `sudo apt-get install -y wrk` on "
            "Debian/Ubuntu or `brew install wrk` on macOS, then run this benchmark again.")
NGINX_HINT = ("nginx is not installed. Install it (`sudo apt-get install -y nginx`, or scripts/install-proxies), "
              "then run this benchmark again.")
FLASK_HINT = ("Flask is not installed in this Python ({python}). Install it with "
              "`{python} -m pip install flask`, then run this benchmark again.")


# ----------------------------------------------------------------------------- preflight


def find_binary(name: str, extra: tuple[str, ...] = ()) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in extra:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def preflight() -> tuple[str, str]:
    """wrk and nginx paths; exits with an install hint when something is missing (never installs)."""
    wrk = find_binary("wrk")
    if wrk is None:
        raise SystemExit(f"http_bench: {WRK_HINT}")
    nginx = find_binary("nginx", ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"))
    if nginx is None:
        raise SystemExit(f"http_bench: {NGINX_HINT}")
    try:
        import flask  # noqa: F401
        import supertokens_python  # noqa: F401
    except ImportError as exc:
        if "supertokens" in str(exc):
            raise SystemExit("http_bench: supertokens-python is missing: install the test extras "
                             "(`.venv/bin/pip install -e '.[test]'`).") from None
        raise SystemExit("http_bench: " + FLASK_HINT.format(python=sys.executable)) from None
    return wrk, nginx


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise SystemExit(f"http_bench: {self.name} exited with {self.popen.returncode}:\n{tail(self.log)}")


@contextmanager
def started(name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None, *,
            own_session: bool = True) -> Iterator[Proc]:
    """A process in its own session, as a daemon or a systemd service runs (with Linux's autogroups, the
    scheduler then shares the CPU between sessions, not threads), or else in a process group of its
    own in this session; either way its workers go with it. Stopped on exit."""
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                 **({"start_new_session": True} if own_session else {"process_group": 0}))
    proc = Proc(name, popen, log)
    try:
        yield proc
    finally:
        stop_group(popen)


def stop_group(popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gunicorn and nginx shut down gracefully on it), then SIGKILL, to the group we made."""
    if popen.poll() is not None:
        return
    try:
        os.killpg(popen.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        popen.wait(timeout=15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        popen.wait(timeout=5)


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            reply.read()
            return reply.status, dict(reply.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items())


def timed_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, float]:
    """One GET on a new connection: (status, seconds); status 0 when no answer came (closed, timed out)."""
    start = time.monotonic()
    try:
        status, _ = http_get(url, headers, timeout)
    except (OSError, http.client.HTTPException):
        status = 0
    return status, time.monotonic() - start


def wait_http(proc: Proc, url: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            status, _ = http_get(url, headers, timeout=2.0)
            if status == 200:
                return
            last = status
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise SystemExit(f"http_bench: {proc.name} did not answer 200 at {url} within {timeout:.0f} s "
                     f"(last: {last}):\n{tail(proc.log)}")


def expect_status(url: str, headers: dict[str, str], status: int, what: str) -> dict[str, str]:
    got, reply_headers = http_get(url, headers)
    if got != status:
        raise SystemExit(f"http_bench: sanity check failed: {what}: {url} answered {got}, expected {status}")
    return reply_headers


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (the state first); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    return stat[stat.rfind(")") + 2:].split()


def workers_of(master_pid: int) -> list[int]:
    """The children of a gunicorn master (its workers), from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = proc_stat(int(entry))
        if fields is not None and int(fields[1]) == master_pid:
            pids.append(int(entry))
    return sorted(pids)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# ----------------------------------------------------------------------------- worker CPU

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime of each process, in clock ticks (missing processes are left out)."""
    ticks = {}
    for pid in pids:
        fields = proc_stat(pid)
        if fields is not None:
            ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def machine_ticks() -> tuple[int, int]:
    """CPU ticks of the whole machine (all CPUs): busy (idle and iowait excluded), and of those
    stolen (a virtual CPU that wanted to run while its host ran something else)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal, steal


def own_ticks(procs: list[Proc]) -> int:
    """CPU ticks of this process (dev core included), our servers and their workers, and reaped
    children (wrk)."""
    pids = [os.getpid()]
    for proc in procs:
        pids += [proc.popen.pid, *workers_of(proc.popen.pid)]
    times = os.times()
    return sum(cpu_ticks(pids).values()) + round((times.children_user + times.children_system) * CLOCK_TICKS)


# ----------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: dict[str, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


class Wrk:
    def __init__(self, binary: str) -> None:
        self.binary = binary

    def run(self, url: str, *, seconds: float, connections: int, headers: dict[str, str] | None = None,
            tokens: Path | None = None, offset: int = 0, rate: float | None = None) -> WrkResult:
        args = [self.binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
                "-s", str(LUA)]
        for name, value in (headers or {}).items():
            args += ["-H", f"{name}: {value}"]
        args.append(url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
        if tokens is not None:
            env["BENCH_TOKENS"] = str(tokens)
            env["BENCH_OFFSET"] = str(offset)
        if rate is not None:
            env["BENCH_RATE"] = f"{rate:.3f}"
            env["BENCH_CONNECTIONS"] = str(connections)
        out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=seconds + 60)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
        if out.returncode != 0 or line is None:
            raise SystemExit(f"http_bench: wrk failed ({out.returncode}) on {url}:\n{out.stdout}\n{out.stderr}")
        data = json.loads(line[len("BENCH_JSON "):])
        errors = {k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout") if data[k]}
        if errors.get("status"):
            raise SystemExit(f"http_bench: {errors['status']} of {data['requests']} answers to {url} were "
                             f"4xx/5xx: the benchmark would measure denials, not verifications")
        return WrkResult(
            requests=int(data["requests"]), seconds=data["duration_us"] / 1e6,
            p50_ms=data["p50"] / 1000, p90_ms=data["p90"] / 1000, p99_ms=data["p99"] / 1000,
            p999_ms=data["p999"] / 1000, max_ms=data["max"] / 1000, errors=errors,
        )
