"""HTTP benchmark of ``/verify`` with wrk, everything on 127.0.0.1, printed as one table of ratios.

One run starts, on free loopback ports:
- the development core in this process (the dev core's ``start_in_thread``), wrapped to
  count every request it receives;
- ``forward-auth serve`` (gunicorn, the service's own settings);
- a constant-200 Falcon app and a Flask app verifying with supertokens-python 0.31.4
  (``verify_session()``), both under the same gunicorn options (``bench/http_bench_apps.py``);
- nginx with a templated config: locations that serve the same static file behind
  ``auth_request`` to the service, to the Flask app, to the constant app, or to a location
  answering 200 itself (keep-alive upstreams, one nginx worker);

and measures, interleaving the variants round by round so that drift hits them alike:
1. ``/verify`` direct over HTTP against the constant app: the ratio;
2. behind nginx ``auth_request``: the service, Flask + SDK, the constant app (the ceiling of any
   gunicorn app there), the no-op bound;
3. latency of ``/verify`` paced at about half the peak of (1);
4. a long run of 1,000,000 requests cycling over 100,000 distinct tokens (the dev core creates them
   once, up front, for all servers; nearly every request misses the verified-token memory), with
   the RSS of each worker after every segment;
plus the core requests per ``/verify`` in each phase, and a footer of the performance targets.

Everything runs once per server configuration (``--servers``, by default gunicorn, granian, and
granian with one thread per worker and ``decision_cache_seconds: 1``, each serving all three apps
alike), and the targets are printed side by side.

Run: ``.venv/bin/python bench/http_bench.py`` (about 20 minutes on 2 cores; ``--help`` for the knobs,
e.g. ``--servers gunicorn --gunicorn reuse_port=true --threads 1`` to try gunicorn settings on all apps alike).
Needs wrk (``apt-get install wrk``), nginx, and Flask in the venv (``.venv/bin/pip install flask``).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "http_bench.lua"
APPS = BENCH / "http_bench_apps.py"
API_KEY = "bench-key"
HOST = "127.0.0.1"

WRK_HINT = ("wrk is not installed (or not on PATH). Install it, e.g. `sudo apt-get install -y wrk` on "
            "Debian/Ubuntu or `brew install wrk` on macOS, then run this benchmark again.")
NGINX_HINT = ("nginx is not installed. Install it (`sudo apt-get install -y nginx`, or scripts/install-proxies), "
              "then run this benchmark again.")
FLASK_HINT = ("Flask is not installed in this Python ({python}). Install it with "
              "`{python} -m pip install flask`, then run this benchmark again.")

#: The issue's targets.
TARGET_DIRECT = 0.90          # /verify >= 90% of the constant app
TARGET_VS_SDK = 3.0           # behind nginx >= 3x Flask + SDK
TARGET_VS_NOOP = 0.35         # behind nginx >= 35% of the no-op bound
TARGET_P99_MS = 2.0           # p99 at half peak
TARGET_RSS_MB = 60.0          # per worker
FLAT_MB = 1.0                 # "flat": at most this growth over the second half of the long run


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
def started(name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> Iterator[Proc]:
    """A process in its own session (so its workers go with it), stopped on exit."""
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
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


def workers_of(master_pid: int) -> list[int]:
    """The children of a gunicorn master (its workers), from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == master_pid:
            pids.append(int(entry))
    return sorted(pids)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# ----------------------------------------------------------------------------- core accounting


class CoreCounter:
    """Counts every request the in-process dev core receives, by wrapping ``record_request``."""

    def __init__(self, core: Any) -> None:
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._lock = threading.Lock()
        original = core.record_request

        def counting(method: str, path: str) -> None:
            with self._lock:
                self._counts[(method, path)] += 1
            original(method, path)

        core.record_request = counting

    def snapshot(self) -> collections.Counter[tuple[str, str]]:
        with self._lock:
            return collections.Counter(self._counts)

    @staticmethod
    def split(delta: collections.Counter[tuple[str, str]]) -> tuple[int, int]:
        """(JWKS fetches, every other core request) in a delta."""
        jwks = sum(n for (_, path), n in delta.items() if path.endswith("jwks.json"))
        return jwks, sum(delta.values()) - jwks


# ----------------------------------------------------------------------------- worker CPU

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime of each process, in clock ticks (missing processes are left out)."""
    ticks = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def machine_busy_ticks() -> int:
    """Busy CPU ticks of the whole machine (all CPUs, idle and iowait excluded)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


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


@dataclass
class Round:
    wrk: WrkResult
    worker_ticks: dict[int, int]     # CPU ticks of each gunicorn worker of the app under test
    core_jwks: int
    core_other: int
    foreign: float                   # share of the machine's CPU used by processes not ours

    @property
    def idle_worker(self) -> bool:
        """A worker did (almost) nothing: the keep-alive connections all landed on the others."""
        ticks = list(self.worker_ticks.values())
        return len(ticks) > 1 and min(ticks) < 0.25 * max(ticks)

    @property
    def cpu_us_per_request(self) -> float:
        return sum(self.worker_ticks.values()) / CLOCK_TICKS * 1e6 / max(1, self.wrk.requests)


@dataclass
class Measure:
    """One variant over one or more rounds; the round with the median rate is the one shown."""

    name: str
    connections: int
    app: Proc | None                 # the gunicorn master whose workers serve the auth decision
    rounds: list[Round] = field(default_factory=list)

    @property
    def median(self) -> WrkResult:
        ordered = sorted(self.rounds, key=lambda r: r.wrk.rate)
        return ordered[(len(ordered) - 1) // 2].wrk

    @property
    def rate(self) -> float:
        return statistics.median(r.wrk.rate for r in self.rounds)

    @property
    def requests(self) -> int:
        return sum(r.wrk.requests for r in self.rounds)

    @property
    def core_jwks(self) -> int:
        return sum(r.core_jwks for r in self.rounds)

    @property
    def core_other(self) -> int:
        return sum(r.core_other for r in self.rounds)

    @property
    def foreign(self) -> float:
        return max(r.foreign for r in self.rounds)

    @property
    def idle_rounds(self) -> int:
        return sum(r.idle_worker for r in self.rounds)

    @property
    def cpu_us(self) -> float | None:
        if self.app is None:
            return None
        return statistics.median(r.cpu_us_per_request for r in self.rounds)


class Runner:
    """Runs wrk rounds and accounts, per round, the app's worker CPU and the core's requests."""

    def __init__(self, wrk: Wrk, counter: CoreCounter, watched: list[Proc]) -> None:
        self.wrk = wrk
        self.counter = counter
        self.watched = watched

    def round(self, measure: Measure, url: str, seconds: float, **wrk_args: Any) -> Round:
        pids = workers_of(measure.app.popen.pid) if measure.app else []
        ticks, core = cpu_ticks(pids), self.counter.snapshot()
        machine, ours, start = machine_busy_ticks(), own_ticks(self.watched), time.monotonic()
        result = self.wrk.run(url, seconds=seconds, connections=measure.connections, **wrk_args)
        after = cpu_ticks(pids)
        elapsed_ticks = (time.monotonic() - start) * CLOCK_TICKS * (os.cpu_count() or 1)
        foreign = max(0.0, (machine_busy_ticks() - machine) - (own_ticks(self.watched) - ours)) / elapsed_ticks
        jwks, other = CoreCounter.split(self.counter.snapshot() - core)
        for proc in self.watched:
            proc.check_alive()
        done = Round(result, {pid: after[pid] - ticks[pid] for pid in after if pid in ticks}, jwks, other, foreign)
        measure.rounds.append(done)
        return done


# ----------------------------------------------------------------------------- nginx


NGINX_CONF = """\
# Generated by bench/http_bench.py for one run; deleted with its directory.
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;

    upstream forward_auth {{ server {host}:{service}; keepalive 32; }}
    upstream flask_sdk {{ server {host}:{flask}; keepalive 32; }}
    upstream constant {{ server {host}:{constant}; keepalive 32; }}

    server {{
        listen {host}:{listen};
        # The protected content is a static file nginx serves itself, so the three locations
        # differ only in their auth subrequest.
        location /svc/ {{
            auth_request /_auth/svc;
            auth_request_set $auth_user $upstream_http_x_user_id;
            add_header X-Auth-User $auth_user always;
            alias {work}/www/;
        }}
        location /sdk/ {{
            auth_request /_auth/sdk;
            auth_request_set $auth_user $upstream_http_x_user_id;
            add_header X-Auth-User $auth_user always;
            alias {work}/www/;
        }}
        location /const/ {{
            auth_request /_auth/const;
            alias {work}/www/;
        }}
        location /noop/ {{
            auth_request /_auth/noop;
            alias {work}/www/;
        }}
        location /_auth/ {{
            internal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $host;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_buffer_size 32k;
            proxy_buffers 4 32k;
            location = /_auth/svc {{ internal; proxy_pass http://forward_auth/verify?proxy=nginx; }}
            location = /_auth/sdk {{ internal; proxy_pass http://flask_sdk/verify; }}
            location = /_auth/const {{ internal; proxy_pass http://constant/empty; }}
            location = /_auth/noop {{ internal; return 200; }}
        }}
    }}
}}
"""


def reload_nginx(nginx: Proc, probe: str) -> None:
    """SIGHUP: new nginx workers with empty upstream keep-alive pools (the old ones close theirs),
    so each round draws its own spread of upstream connections over the gunicorn workers."""
    os.kill(nginx.popen.pid, signal.SIGHUP)
    time.sleep(0.4)
    nginx.check_alive()
    http_get(probe)


# ----------------------------------------------------------------------------- report


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ms(value: float) -> str:
    return f"{value:.2f}"


def mark(ok: bool) -> str:
    return "met" if ok else "NOT MET"


# ----------------------------------------------------------------------------- main


PHASES = {"1": "direct HTTP", "2": "nginx auth_request", "3": "latency at half peak", "4": "many tokens, RSS"}


@dataclass(frozen=True)
class Variant:
    """One server configuration the whole benchmark runs under."""

    name: str
    server: str
    threads: int
    cache: float


def variant(text: str, args: argparse.Namespace) -> Variant:
    """``SERVER[:threads=N][:cache=S]``, the defaults from ``args``."""
    server, *options = (part.strip() for part in text.strip().split(":"))
    if server not in ("gunicorn", "granian"):
        raise ValueError(f"{server!r} is not gunicorn or granian")
    threads, cache = args.threads, args.decision_cache
    for option in options:
        key, _, value = option.partition("=")
        if key == "threads":
            threads = int(value)
        elif key == "cache":
            cache = float(value)
        else:
            raise ValueError(f"unknown option {key!r} (threads=N or cache=S)")
    return Variant(text.strip(), server, threads, cache)


def parse_args() -> argparse.Namespace:
    from forward_auth.settings import Settings

    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.5, help="length of one wrk round")
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds per variant in phases 1 and 2 (the median round is shown)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for the peak runs")
    parser.add_argument("--latency-connections", type=int, default=8,
                        help="wrk connections for the paced half-peak latency run")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--tokens", type=int, default=100_000, help="distinct tokens of the long run")
    parser.add_argument("--soak-requests", type=int, default=1_000_000,
                        help="the long run goes on, segment by segment, until this many requests")
    parser.add_argument("--soak-segment-seconds", type=float, default=15.0,
                        help="RSS is sampled after each segment of the long run")
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="gunicorn workers (all three apps; the service's default)")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="gthread threads per worker (all three apps; the service's default)")
    parser.add_argument("--gunicorn", action="append", default=[], metavar="KEY=VALUE",
                        help="try a gunicorn setting on all three apps, e.g. reuse_port=true or worker_class=sync "
                             "(the service then runs through bench/http_bench_apps.py instead of `forward-auth "
                             "serve`, with the same worker_app)")
    parser.add_argument("--what-if", choices=["nginx-empty-body"],
                        help="simulate a recommended change to the service (runs it through bench/http_bench_apps.py): "
                             "nginx-empty-body = answer ?proxy=nginx with an empty body")
    parser.add_argument("--phases", default="1,2,3,4", help="which phases to run: " +
                        ", ".join(f"{k} {v}" for k, v in PHASES.items()))
    parser.add_argument("--decision-cache", type=float, default=0.0, metavar="SECONDS",
                        help="the service's decision_cache_seconds (0: off, the default)")
    parser.add_argument("--servers", default="gunicorn,granian,granian:threads=1:cache=1",
                        help="run everything under each of these in turn: SERVER[:threads=N][:cache=S] (forward-auth "
                             "serve --server; threads for all three apps alike, cache = the service's "
                             "decision_cache_seconds; the defaults are --threads and --decision-cache)")
    parser.add_argument("--json", type=Path, help="also write the measurements here (.<server>.json for several)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, nginx.conf)")
    args = parser.parse_args()
    args.phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    try:
        args.servers = [variant(item, args) for item in args.servers.split(",") if item.strip()]
    except ValueError as exc:
        parser.error(f"--servers: {exc}")
    if not args.servers:
        parser.error("--servers names no server")
    if args.gunicorn and any(v.server == "granian" for v in args.servers):
        parser.error("--gunicorn settings apply to gunicorn only: add --servers gunicorn")
    if not args.phases <= set(PHASES) or not args.phases:
        parser.error(f"--phases takes a comma-separated subset of {','.join(PHASES)}")
    if "3" in args.phases or "4" in args.phases:
        args.phases.add("1")  # their rates are relative to phase 1's peak
    return args


@dataclass
class Shared:
    """What every server's run uses: one dev core (counted), a session's token, the long run's tokens."""

    core_url: str
    counter: CoreCounter
    token: str
    tokens_file: Path | None
    token_seconds: float


@contextmanager
def shared_core(args: argparse.Namespace) -> Iterator[Shared]:
    """The dev core in this process, and the tokens (created once: RSA signing takes ~1 ms each)."""
    from forward_auth.devcore.server import start_in_thread

    core, core_url, stop_core = start_in_thread(api_key=API_KEY)
    work = Path(tempfile.mkdtemp(prefix="http-bench-tokens-"))
    try:
        counter = CoreCounter(core)
        token = core.create_session("public", "bench-user", {}, {})["accessToken"]["token"]
        tokens_file, started_at = None, time.monotonic()
        if "4" in args.phases:
            tokens_file = work / "tokens.txt"
            with open(tokens_file, "w") as handle:
                for i in range(args.tokens):
                    created = core.create_session("public", f"user-{i}", {}, {})
                    handle.write(created["accessToken"]["token"] + "\n")
        yield Shared(core_url, counter, token, tokens_file, time.monotonic() - started_at)
    finally:
        stop_core()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    args = parse_args()
    wrk_binary, nginx_binary = preflight()
    with shared_core(args) as shared:
        results = {v.name: bench(args, v, shared, wrk_binary, nginx_binary) for v in args.servers}
    if len(results) > 1:
        print("\ntargets side by side (same run, same machine)")
        names = list(results)
        print(f"  {'target':62s} " + " ".join(f"{name:>30s}" for name in names))
        for i, (text, _, _) in enumerate(results[names[0]]):
            cells = [f"[{mark(results[name][i][1])}] {results[name][i][2]}" for name in names]
            print(f"  {text:62s} " + " ".join(f"{cell[:30]:>30s}" for cell in cells))


def bench(args: argparse.Namespace, variant: Variant, shared: Shared,  # noqa: C901 (one linear script)
          wrk_binary: str, nginx_binary: str) -> list[tuple[str, bool, str]]:
    """Every phase with the service and the comparison apps under ``server``; prints its table
    and returns its targets as (text, met, value)."""
    started_at = time.monotonic()

    from forward_auth.server import gunicorn_options
    from forward_auth.settings import load

    server, threads = variant.server, variant.threads
    shown = gunicorn_options(load({"workers": args.workers, "threads": threads}, environ={}))
    overrides = [item.strip() for item in args.gunicorn]
    for item in overrides:
        key, _, value = item.partition("=")
        shown[key.strip().replace("-", "_")] = value.strip()
    settings_line = (f"gunicorn {shown['worker_class']}, workers={shown['workers']}, threads={shown['threads']}, "
                     f"keepalive={shown['keepalive']} s, reuse_port={shown.get('reuse_port', False)} "
                     f"(forward_auth.server.gunicorn_options{' + ' + ', '.join(overrides) if overrides else ''}; "
                     f"same for all three apps)")
    if server == "granian":
        settings_line = (f"granian WSGI, workers={args.workers}, blocking threads={threads} "
                         "(forward_auth.server.granian_server; same for all three apps)")
    phases = args.phases
    m_svc = m_const = m_ng_svc = m_ng_sdk = m_ng_const = m_ng_noop = m_lat = m_lat_const = m_one = m_soak = None
    rss_series: list[tuple[str, dict[int, float]]] = []
    restarted = False
    nginx_errors: list[str] = []
    target = 0.0

    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="http-bench-"))
        if not args.keep:
            stack.callback(shutil.rmtree, work, True)
        work.chmod(0o755)  # nginx workers (nobody, when started as root) read the static file
        (work / "www").mkdir(mode=0o755)
        (work / "www" / "ok.txt").write_text("ok\n")
        (work / "www" / "ok.txt").chmod(0o644)

        core_url, counter = shared.core_url, shared.counter
        cookie = {"Cookie": f"sAccessToken={shared.token}"}

        env = {k: v for k, v in os.environ.items()
               if not k.startswith("FORWARD_AUTH_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        env["FORWARD_AUTH_THREADS"] = str(threads)  # not a flag of `serve`
        python = sys.executable
        ports = {name: free_port() for name in ("service", "constant", "flask", "nginx")}
        common = ["--server", server, "--workers", str(args.workers), "--threads", str(threads)]
        for item in overrides:
            common += ["--set", item]
        launcher = bool(overrides or args.what_if)
        if launcher:
            service_args = [python, str(APPS), "service", "--bind", f"{HOST}:{ports['service']}", *common,
                            "--core-url", core_url, "--api-key", API_KEY]
            if args.what_if:
                service_args += ["--what-if", args.what_if]
        else:
            service_args = [python, "-m", "forward_auth", "serve", "--server", server,
                            "--bind", f"{HOST}:{ports['service']}", "--workers", str(args.workers),
                            "--core-url", core_url, "--core-api-key", API_KEY]
        service_env = dict(env)
        service_env["FORWARD_AUTH_DECISION_CACHE_SECONDS"] = str(variant.cache)
        if launcher:  # `forward-auth serve` makes (and removes) its own metrics directory
            (work / "metrics").mkdir()
            service_env["PROMETHEUS_MULTIPROC_DIR"] = str(work / "metrics")
        service = stack.enter_context(started("service", service_args, work, service_env))
        constant = stack.enter_context(started("constant", [
            python, str(APPS), "constant", "--bind", f"{HOST}:{ports['constant']}", *common], work, env))
        flask = stack.enter_context(started("flask-sdk", [
            python, str(APPS), "flask-sdk", "--bind", f"{HOST}:{ports['flask']}", *common,
            "--core-url", core_url, "--api-key", API_KEY], work, env))

        svc_url = f"http://{HOST}:{ports['service']}/verify"
        const_url = f"http://{HOST}:{ports['constant']}/verify"
        flask_url = f"http://{HOST}:{ports['flask']}/verify"
        wait_http(service, svc_url, cookie)
        wait_http(constant, const_url)
        wait_http(flask, flask_url, cookie)

        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=work, host=HOST, service=ports["service"], flask=ports["flask"],
                                          constant=ports["constant"], listen=ports["nginx"]))
        nginx = stack.enter_context(started("nginx", [
            nginx_binary, "-p", str(work), "-c", str(conf), "-e", str(work / "nginx-error.log"),
            "-g", "daemon off;"], work))
        base = f"http://{HOST}:{ports['nginx']}"
        nginx_urls = {name: f"{base}/{name}/ok.txt" for name in ("svc", "sdk", "const", "noop")}
        wait_http(nginx, nginx_urls["noop"])

        # Sanity: each path really verifies (a 200 with the user, a 401 without a token).
        for name in ("svc", "sdk"):
            got = expect_status(nginx_urls[name], cookie, 200, f"nginx -> {name} with a session")
            if got.get("X-Auth-User") != "bench-user":
                raise SystemExit(f"http_bench: nginx -> {name} did not pass the user on: {got}")
            expect_status(nginx_urls[name], {}, 401, f"nginx -> {name} without a session")
        expect_status(nginx_urls["const"], {}, 200, "nginx -> constant app")
        expect_status(svc_url, {}, 401, "service without a session")
        expect_status(flask_url, {}, 401, "Flask + SDK without a session")

        runner = Runner(Wrk(wrk_binary), counter, [service, constant, flask, nginx])
        rss_start = {pid: rss_mb(pid) for pid in workers_of(service.popen.pid)}
        c = args.connections

        def interleaved(variants: list[tuple[Measure, str, dict[str, str]]], before_round: Any = None) -> None:
            for measure, url, headers in variants:  # warm-up: connections, JWKS, caches, lazy imports
                runner.wrk.run(url, seconds=1, connections=measure.connections, headers=headers)
            for _ in range(args.rounds):
                for measure, url, headers in variants:
                    if before_round:
                        before_round()
                    runner.round(measure, url, args.seconds, headers=headers)

        if "1" in phases:
            m_svc = Measure("service /verify (direct)", c, service)
            m_const = Measure("constant-200 Falcon app (direct)", c, constant)
            interleaved([(m_svc, svc_url, cookie), (m_const, const_url, {})])
        if "2" in phases:
            m_ng_svc = Measure("nginx auth_request -> service", c, service)
            m_ng_sdk = Measure("nginx auth_request -> Flask + SDK", c, flask)
            m_ng_const = Measure("nginx auth_request -> constant (empty body)", c, constant)
            m_ng_noop = Measure("nginx auth_request -> no-op (200)", c, None)
            interleaved([(m_ng_svc, nginx_urls["svc"], cookie), (m_ng_sdk, nginx_urls["sdk"], cookie),
                         (m_ng_const, nginx_urls["const"], cookie), (m_ng_noop, nginx_urls["noop"], cookie)],
                        before_round=lambda: reload_nginx(nginx, nginx_urls["noop"]))
        if "3" in phases and m_svc is not None:
            # Plain wrk has no -R (wrk2): request starts are scheduled at half the peak of phase 1 by
            # the Lua delay() hook instead (see http_bench.lua).
            target = m_svc.rate / 2
            m_lat = Measure("service /verify paced at ~50% of peak", args.latency_connections, service)
            runner.round(m_lat, svc_url, args.latency_seconds, headers=cookie, rate=target)
            # the same pace on the constant app: the latency floor of these gunicorn settings
            m_lat_const = Measure("constant app paced at the same rate", args.latency_connections, constant)
            runner.round(m_lat_const, const_url, args.latency_seconds, rate=target)
            m_one = Measure("service /verify, 1 connection, closed loop", 1, service)
            runner.round(m_one, svc_url, 2, headers=cookie)
        if "4" in phases and shared.tokens_file is not None:
            pids = workers_of(service.popen.pid)
            rss_series = [("at start", rss_start), ("before long run", {pid: rss_mb(pid) for pid in pids})]
            m_soak = Measure(f"service /verify over {args.tokens:,} tokens", c, service)
            offset = 0
            while offset < args.soak_requests:
                done = runner.round(m_soak, svc_url, args.soak_segment_seconds, tokens=shared.tokens_file,
                                    offset=offset)
                offset += done.wrk.requests
                rss_series.append((f"after {offset:,} req",
                                   {pid: rss_mb(pid) for pid in workers_of(service.popen.pid)}))
            restarted = set(workers_of(service.popen.pid)) != set(pids)
        nginx_errors = [ln for ln in tail(work / "nginx-error.log", 200).splitlines()
                        if any(f"[{lvl}]" in ln for lvl in ("error", "crit", "alert", "emerg"))]
        service_how = "forward-auth serve"
        if launcher:
            service_how = "bench/http_bench_apps.py service" + (f" --what-if {args.what_if}" if args.what_if else "")
    total_seconds = time.monotonic() - started_at

    # ------------------------------------------------------------------ report
    measures = [m for m in (m_svc, m_const, m_ng_svc, m_ng_sdk, m_ng_const, m_ng_noop, m_lat, m_lat_const, m_one,
                            m_soak) if m is not None]
    peak = m_svc.rate if m_svc else float("nan")
    print()
    print(f"== {variant.name} ==")
    print(f"forward-auth HTTP benchmark: wrk -t1 (one client thread), {os.cpu_count()} CPUs, all on 127.0.0.1; "
          f"phases 1-2: {args.rounds} interleaved rounds of {args.seconds:g} s per variant, median round shown")
    print(settings_line + f"; service run as `{service_how}`, decision_cache_seconds={variant.cache:g}")
    print("nginx: 1 worker, keep-alive upstreams (keepalive 32, reloaded before each round), static file "
          "behind auth_request")
    print()
    header = (f"{'#':1s} {'measurement':44s} {'conns':>5s} {'req/s':>7s} {'p50 ms':>7s} {'p99 ms':>7s} "
              f"{'ratio':>13s} {'CPU us/req':>10s} {'idle wkr':>8s} {'core/req':>8s} {'other':>5s}")
    print(header)
    print("-" * len(header))

    def row(section: str, m: Measure, ratio: str, rate: float | None = None, p50: float | None = None,
            p99: float | None = None) -> None:
        r = m.median
        cpu = f"{m.cpu_us:.0f}" if m.cpu_us is not None else "-"
        core = f"{m.core_other / max(1, m.requests):.4f}" if m.app is not None and m.app.name != "constant" else "-"
        idle = f"{m.idle_rounds}/{len(m.rounds)}" if m.app is not None and m.connections > 1 else "-"
        print(f"{section:1s} {m.name:44s} {m.connections:5d} {fmt_rate(rate or m.rate):>7s} "
              f"{fmt_ms(p50 if p50 is not None else r.p50_ms):>7s} {fmt_ms(p99 if p99 is not None else r.p99_ms):>7s} "
              f"{ratio:>13s} {cpu:>10s} {idle:>8s} {core:>8s} {m.foreign:5.0%}")

    targets: list[tuple[str, bool, str]] = []
    if m_svc and m_const:
        r_direct = m_svc.rate / m_const.rate
        row("1", m_svc, "1.00 (base)")
        row("1", m_const, f"svc/c {r_direct:.2f}")
        targets.append(("HTTP /verify >= 90% of the constant app", r_direct >= TARGET_DIRECT, f"{r_direct:.0%}"))
    if m_ng_svc and m_ng_sdk and m_ng_const and m_ng_noop:
        r_sdk = m_ng_svc.rate / m_ng_sdk.rate
        r_noop = m_ng_svc.rate / m_ng_noop.rate
        row("2", m_ng_svc, "1.00 (base)")
        row("2", m_ng_sdk, f"svc/sdk {r_sdk:.2f}x")
        row("2", m_ng_const, f"svc/c {m_ng_svc.rate / m_ng_const.rate:.2f}")
        row("2", m_ng_noop, f"svc/noop {r_noop:.2f}")
        targets.append(("behind nginx >= 3x Flask + supertokens-python", r_sdk >= TARGET_VS_SDK, f"{r_sdk:.2f}x"))
        targets.append(("behind nginx >= 35% of the no-op auth bound", r_noop >= TARGET_VS_NOOP, f"{r_noop:.0%}"))
    if m_lat and m_lat_const and m_one:
        lat = m_lat.median
        row("3", m_lat, f"{m_lat.rate / peak:.0%} of peak")
        row("3", m_lat_const, f"p99 svc/c {lat.p99_ms / m_lat_const.median.p99_ms:.1f}x")
        row("3", m_one, f"{m_one.rate / peak:.0%} of peak")
        targets.append(("p99 <= 2 ms at half peak", lat.p99_ms <= TARGET_P99_MS,
                        f"p99 {lat.p99_ms:.2f} ms at {fmt_rate(m_lat.rate)} req/s ({m_lat.rate / peak:.0%} of peak)"))
    if m_soak:
        soak_rate = m_soak.requests / sum(r.wrk.seconds for r in m_soak.rounds)
        row("4", m_soak, f"{soak_rate / peak:.2f}x 1-token", rate=soak_rate,
            p50=statistics.median(r.wrk.p50_ms for r in m_soak.rounds),
            p99=max(r.wrk.p99_ms for r in m_soak.rounds))
    print()
    print("ratio: of median rates. CPU us/req: CPU time of the app's gunicorn workers per request (what the app "
          "costs, whatever the balance). idle wkr: rounds in which a gunicorn worker did < 25% of the busiest one's "
          "work (all keep-alive connections on the other). core/req: core requests (JWKS excluded) per /verify. "
          "other: the most CPU that processes outside this benchmark took from the machine during a round.")
    busiest = max((m.foreign for m in measures), default=0.0)
    if busiest > 0.05:
        print(f"WARNING: other processes used up to {busiest:.0%} of the machine's CPU during a round: "
              "absolute numbers and ratios are disturbed; run again on an idle machine.")
    if m_svc and m_const and m_svc.cpu_us and m_const.cpu_us:
        print(f"1: by CPU per request, /verify costs {m_svc.cpu_us / m_const.cpu_us:.2f}x the constant app "
              f"(CPU-bound on balanced workers it would reach {m_const.cpu_us / m_svc.cpu_us:.0%} of it)")
    if m_ng_svc and m_ng_sdk and m_ng_const and m_ng_noop and m_ng_svc.cpu_us and m_ng_sdk.cpu_us:
        print(f"2: by CPU per request, Flask + SDK costs {m_ng_sdk.cpu_us / m_ng_svc.cpu_us:.2f}x the service; the "
              f"constant app (a free verification on the same gunicorn) reaches {m_ng_const.rate / m_ng_noop.rate:.0%} "
              f"of the no-op bound")
    if m_lat:
        lat = m_lat.median
        print(f"3: plain wrk has no -R: request starts paced by wrk's Lua delay() hook at {fmt_rate(target)} req/s "
              f"= 50% of the {fmt_rate(peak)} req/s peak of row 1, over {m_lat.connections} connections (no "
              f"coordinated-omission correction); got {fmt_rate(m_lat.rate)} req/s; p50 {fmt_ms(lat.p50_ms)} / "
              f"p90 {fmt_ms(lat.p90_ms)} / p99 {fmt_ms(lat.p99_ms)} / p99.9 {fmt_ms(lat.p999_ms)} / "
              f"max {fmt_ms(lat.max_ms)} ms")
    if m_soak:
        print(f"4: scale: {args.tokens:,} distinct tokens created on the dev core up front ({shared.token_seconds:.0f} s), "
              f"{m_soak.requests:,} requests cycling over them in {len(m_soak.rounds)} segments of "
              f"{args.soak_segment_seconds:g} s (the issue asks for 100,000 tokens and 1,000,000 requests)")
        pids_sorted = sorted({pid for _, sample in rss_series for pid in sample})
        print()
        print("RSS per service worker (MB):   " + "  ".join(f"{'pid ' + str(pid):>9s}" for pid in pids_sorted))
        for label, sample in rss_series:
            print(f"  {label:28s} " + "  ".join(f"{sample.get(pid, float('nan')):9.1f}" for pid in pids_sorted))
        if restarted:
            print("  (a worker was restarted during the long run: its RSS series is not comparable)")
        last = rss_series[-1][1]
        half = rss_series[1 + math.ceil(len(m_soak.rounds) / 2)][1]
        before_soak = rss_series[1][1]
        worst_rss = max(max(sample.values()) for _, sample in rss_series)
        growth_total = max(last[p] - before_soak.get(p, last[p]) for p in last)
        growth_half = max(last[p] - half.get(p, last[p]) for p in last)
        targets.append(("RSS <= 60 MB per worker", worst_rss <= TARGET_RSS_MB, f"max {worst_rss:.1f} MB"))
        targets.append((f"RSS flat (<= {FLAT_MB:g} MB growth over the long run's second half)",
                        growth_half <= FLAT_MB and not restarted,
                        f"+{growth_half:.1f} MB (whole long run +{growth_total:.1f} MB)"))

    print()
    print("core requests per phase (the service's must be zero with revocation off, JWKS independent of load):")
    for m in measures:
        if m.app is None or m.app.name == "constant":
            continue
        print(f"  {m.name:44s} {m.requests:>9,} /verify: {m.core_other} core requests, {m.core_jwks} JWKS fetches")
    service_phases = [m for m in measures if m.app is not None and m.app.name == "service"]
    svc_other = sum(m.core_other for m in service_phases)
    svc_jwks = sum(m.core_jwks for m in service_phases)
    svc_requests = sum(m.requests for m in service_phases)
    targets.append(("zero core requests per /verify (revocation off)", svc_other == 0 and svc_jwks <= args.workers,
                    f"{svc_other} core requests, {svc_jwks} JWKS fetches in {svc_requests:,} /verify"))
    if nginx_errors:
        print("\nnginx reported errors:\n  " + "\n  ".join(nginx_errors[-5:]))
    errors = {m.name: [r.wrk.errors for r in m.rounds if r.wrk.errors] for m in measures}
    errors = {k: v for k, v in errors.items() if v}
    if errors:
        print("\nwrk socket errors (not 4xx/5xx): " + "; ".join(f"{k}: {v}" for k, v in errors.items()))

    print()
    print("targets (from the issue)")
    for text, ok, value in targets:
        print(f"  [{mark(ok):7s}] {text:62s} {value}")
    print(f"\n(total {total_seconds:.0f} s)")

    if args.json:
        payload = {
            "settings": settings_line,
            "measures": {m.name: {"rate": m.rate, "cpu_us": m.cpu_us, "idle_rounds": m.idle_rounds,
                                  "core_other": m.core_other, "core_jwks": m.core_jwks,
                                  "rounds": [{**r.wrk.__dict__, "worker_ticks": r.worker_ticks} for r in m.rounds]}
                         for m in measures},
            "rss": rss_series,
            "targets": [{"target": t, "met": ok, "value": v} for t, ok, v in targets],
        }
        slug = variant.name.replace(":", "-").replace("=", "")
        path = args.json if len(args.servers) == 1 else args.json.with_suffix(f".{slug}.json")
        path.write_text(json.dumps(payload, indent=2, default=str))
    if args.keep:
        print(f"work directory kept: {work}")
    return targets


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
