"""Serving-edge benchmark: the service behind a plain nginx ``auth_request`` config and direct, side by
side with nginx's own bound, supertokens-node and supertokens-python, in one run.

Run (about 11 minutes on 2 cores with the defaults; ``--help`` for the knobs)::

    .venv/bin/python bench/edge_bench.py | tee /tmp/edge_bench.txt
    .venv/bin/python bench/edge_bench.py --service-args '--server gunicorn'   # any `serve` flags

Needs, besides the venv (``.venv/bin/pip install -e '.[test]'``): wrk and nginx (``apt-get install -y
wrk nginx``), Node.js with npm and ``npm ci --prefix bench/node`` (supertokens-node 24.0.3 and express
from ``bench/node/package-lock.json``), and uvicorn with httptools beside the venv::

    .venv/bin/pip install --no-deps --require-hashes --target bench/python/site -r bench/python/requirements.txt

One dev core runs in this process (``forward_auth.devcore.server.start_in_thread``, its requests
counted) with one session whose token every request sends as the ``sAccessToken`` cookie. Then
(``bench/edge_servers.py``), on free loopback ports, each with 2 worker processes:

- ``forward-auth serve --workers 2`` with its defaults (``--service-args`` adds flags), six times: on TCP
  and on a unix socket; on TCP under ``--server granian``; on TCP with its decision cache off (``decision_cache_seconds: 0``: every request
  decided, as when no two requests are the same); on TCP with ``proxy_cache_seconds`` (its allowed answers carry ``X-Accel-Expires``);
  on TCP with its core URL at a hung core (``bench/edge_stress.py``: it serves the dev core's JWKS, which
  each worker loads before measuring, and holds every other request unanswered);
- the constant-200 Falcon app served exactly as ``serve`` serves the service (``bench/edge_constant.py``);
- supertokens-node 24.0.3 ``verifySession()`` under express, a node cluster (``bench/node/verify.js``);
- supertokens-python 0.31.4 ``verify_session`` under FastAPI and uvicorn (``bench/edge_fastapi_sdk.py``);
- a second nginx (2 workers) answering ``return 200``: the cheapest upstream there is, no Python;
- one nginx (``worker_processes auto``, as nginx.conf.example: one worker per CPU; ``--nginx-workers``), plain
  ``auth_request`` to each of them (to the service with ``proxy_cache_seconds`` with a
  ``proxy_cache`` keyed as nginx.conf.example's optional block), and to a location that nginx answers itself.

Configurations, each measured ``--rounds`` times for ``--seconds``, interleaved round by round:
1. bound: nginx ``auth_request`` to ``return 200;``; 1b. to the second nginx (what any upstream's hop
costs); 2. the service behind plain nginx (TCP), and 2b. with
its decision cache off, and 2c. under ``--server granian`` (the default before the built-in server);
3. supertokens-node; 4. supertokens-python; 5. the service direct (5b. with its decision cache off) and the constant app direct;
7. the service behind nginx over a unix socket; 8. the service behind nginx with the nginx cache on (the
one repeated token); 11. the service, the second nginx and both SDKs behind nginx's own documented
``auth_request`` example, which has no upstream block: a new connection per auth request, as with
ingress-nginx without ``auth-keepalive`` (ratios to the SDKs behind the same). Then 6.: latency behind nginx paced at half the median peak of 2 (wrk's Lua
``delay()`` pacing from ``bench/http_bench.lua``), beside the constant app (its empty 200, the same
hop with no decision), the second nginx (the same hop with no Python) and the bound paced alike, with the host's steal time of each round;
6b.: the second nginx paced at half of its own peak (1b), the target's rule applied to the cheapest upstream. Then 9.: slow clients,
``--slow-connections`` to the service direct that send ``GET /verify HTTP/1.1`` and a Host header and
drip a header byte every 0.1 s, never finishing; beside them 4 valid ``/verify`` requests on fresh
connections, each one's latency. Then 10.: the service of the hung core direct (``--hung-connections``),
one round with nothing waiting, then ``--rounds`` rounds while ``--waiting`` ``?checkDatabase=true``
requests wait on the core (each sent again when answered: the core call times out after the default
``core_timeout_seconds``).
Prints min/median/max req/s per configuration (flagging max/min > ``--bimodal``), ratios, the issue's
targets met or NOT MET, and notes.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from edge_report import PACED, PACED_OWN, Config, Stress, own_pace, report
from edge_servers import PROXY_CACHE_SECONDS, Edge, decisions, started_edge
from edge_stress import Waiting, kept_waiting, slow_clients
from processes import CLOCK_TICKS, NGINX_HINT, WRK_HINT, Wrk, find_binary
from servers import reload_nginx, shared_core
from workloads import Measure, Round, Runner


def closed_since(port: int, seconds: float) -> int:
    """TCP connections to or from ``port`` closed in the last ``seconds``: their TIME_WAIT sockets (kept
    60 s by Linux, on the side that closed first) whose timer has at least 60 - ``seconds`` left."""
    least = (60 - seconds) * CLOCK_TICKS  # /proc/net/tcp shows a TIME_WAIT's time left in clock ticks
    count = 0
    with open("/proc/net/tcp") as handle:
        next(handle)
        for line in handle:
            fields = line.split()
            if fields[3] == "06" and int(fields[5].split(":")[1], 16) >= least and port in (
                    int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)):
                count += 1
    return count


def passive_opens() -> int:
    """TCP connections the machine has accepted so far (``Tcp: PassiveOpens`` of /proc/net/snmp)."""
    with open("/proc/net/snmp") as handle:
        rows = [line.split() for line in handle if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("PassiveOpens")])


def code_state() -> str:
    """The commit measured, and the service's files changed in the work tree (measured as they were)."""
    root = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "forward_auth", "pyproject.toml"],
                           capture_output=True, text=True).stdout.split("\n")
    changed = [line[3:] for line in dirty if line.strip()]
    return f"measured HEAD {head or '?'}" + (f" plus uncommitted changes to {', '.join(changed)}" if changed else "")


def is_helper(pid: int) -> bool:
    """A process that is no worker: multiprocessing's resource tracker (a child of uvicorn's supervisor)."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def measured(runner: Runner, cfg: Config, seconds: float, **wrk_args: object) -> Round:
    """One wrk round of ``cfg``, with the TCP connections closed (its server's port) and accepted (the whole
    machine) per request; helpers' ticks dropped."""
    start, opens = time.monotonic(), passive_opens()
    done = runner.round(cfg.measure, cfg.url, seconds, headers=cfg.headers, **wrk_args)
    requests = max(1, done.wrk.requests)
    cfg.accepted.append((passive_opens() - opens) / requests)
    if cfg.port is not None:
        cfg.closed.append(closed_since(cfg.port, time.monotonic() - start + 0.1) / requests)
    for pid in [pid for pid in done.worker_ticks if is_helper(pid)]:
        del done.worker_ticks[pid]
    return done


def configurations(args: argparse.Namespace, edge: Edge) -> dict[str, Config]:
    """The configurations in report order."""
    p, u, ck = edge.procs, {**edge.urls, "hung_idle": edge.urls["hung"]}, edge.cookie
    c, d = args.connections, args.direct_connections
    port = edge.ports
    rows = [("bound", "1 bound: nginx auth_request -> return 200", None, c, True, None),
            ("noop", "1b nginx auth_request -> a second nginx", "nginx-noop", c, True, port["noop"]),
            ("svc", "2 service behind plain nginx (TCP)", "service", c, True, port["svc"]),
            ("svc_decided", "2b the same, decision cache off", "service-decided", c, True, port["svc_decided"]),
            ("svc_granian", "2c the same, --server granian", "service-granian", c, True, port["svc_granian"]),
            ("svc_unix", "7 service behind plain nginx (unix socket)", "service-unix", c, True, None),
            ("svc_cache", "8 service behind nginx with proxy_cache", "service-cache", c, True, port["svc_cache"]),
            ("close_svc", "11 service, nginx's example: no keepalive", "service", c, True, port["svc"]),
            ("close_noop", "11 the second nginx, the same", "nginx-noop", c, True, port["noop"]),
            ("close_node", "11 supertokens-node, the same", "node", c, True, port["node"]),
            ("close_pysdk", "11 supertokens-python, the same", "pysdk", c, True, port["pysdk"]),
            ("node", "3 supertokens-node 24.0.3 verifySession", "node", c, True, port["node"]),
            ("pysdk", "4 supertokens-python 0.31.4 verify_session", "pysdk", c, True, port["pysdk"]),
            ("direct", "5 service direct", "service", d, False, port["svc"]),
            ("direct_decided", "5b service direct, decision cache off", "service-decided", d, False,
             port["svc_decided"]),
            ("const", "5 constant-200 Falcon app direct", "constant", d, False, port["const"]),
            ("hung_idle", "10 hung-core service direct, nothing waiting", "service-hung", args.hung_connections,
             False, port["svc_hung"]),
            ("hung", f"10 the same, {args.waiting} checkDatabase waiting", "service-hung", args.hung_connections,
             False, port["svc_hung"])]
    configs = {key: Config(key, label, u[key], {} if key == "const" else ck,
                           Measure(label, conns, p[proc] if proc else None), nginx, tcp)
               for key, label, proc, conns, nginx, tcp in rows}
    lc = args.latency_connections
    configs["paced_svc"] = Config("paced_svc", "6 service behind plain nginx, paced", u["svc"], ck,
                                  Measure("paced service", lc, p["service"]), True, port["svc"])
    configs["paced_const"] = Config("paced_const", "6 constant app behind nginx, paced alike", u["const_empty"], {},
                                    Measure("paced constant", lc, p["constant"]), True, port["const"])
    configs["paced_noop"] = Config("paced_noop", "6 a second nginx as the upstream, paced alike", u["noop"], {},
                                   Measure("paced second nginx", lc, p["nginx-noop"]), True, port["noop"])
    configs["paced_bound"] = Config("paced_bound", "6 bound, paced at the same rate", u["bound"], ck,
                                    Measure("paced bound", lc, None), True, None)
    configs[PACED_OWN] = Config(PACED_OWN, "6b the second nginx, paced at half its own peak", u["noop"], {},
                                Measure("paced second nginx, its own half", lc, p["nginx-noop"]), True, port["noop"])
    for key, what in (("const_body", "a JSON body"), ("const_empty", "no body")):
        configs[key] = Config(key, f"constant app, 200 with {what}", u[key], {},
                              Measure(key, c, p["constant"]), True, port["const"])
    return configs


def interleaved(args: argparse.Namespace, runner: Runner, edge: Edge, configs: list[Config], rounds: int,
                **wrk_args: object) -> None:
    """A warm-up second each, then ``rounds`` rounds of every configuration, the order rotated each round."""
    for cfg in configs:
        runner.wrk.run(cfg.url, seconds=1, connections=cfg.measure.connections, headers=cfg.headers, **wrk_args)
    for n in range(rounds):
        for cfg in configs[n % len(configs):] + configs[:n % len(configs)]:
            if cfg.nginx:
                reload_nginx(edge.procs["nginx"], edge.urls["bound"])
            measured(runner, cfg, args.seconds, **wrk_args)


def hung_core_rounds(args: argparse.Namespace, runner: Runner, edge: Edge, configs: dict[str, Config]) -> Waiting:
    """The service of the hung core direct: a warm-up second and one round with nothing waiting, then
    ``--rounds`` rounds while ``--waiting`` checkDatabase requests wait on the core, measured once the core
    holds as many as the service calls it at once (or after 10 s)."""
    idle, hung = configs["hung_idle"], configs["hung"]
    runner.wrk.run(idle.url, seconds=1, connections=idle.measure.connections, headers=idle.headers)
    measured(runner, idle, args.seconds)
    with kept_waiting(f"{hung.url}?checkDatabase=true", edge.cookie, args.waiting) as waiting:
        waiting.held = edge.hung.wait_held(min(args.waiting, edge.core_calls))
        for _ in range(args.rounds):
            measured(runner, hung, args.seconds)
    edge.hung.close()  # what still waits is answered now (503), and the service stops without waiting for it
    return waiting


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per configuration")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one wrk round")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections through nginx")
    parser.add_argument("--direct-connections", type=int, default=16, help="wrk connections to the services direct")
    parser.add_argument("--latency-connections", type=int, default=32, help="wrk connections of the paced runs")
    parser.add_argument("--slow-connections", type=int, default=200, help="slow clients beside the 4 valid requests")
    parser.add_argument("--waiting", type=int, default=32, help="checkDatabase requests kept waiting on the hung core")
    parser.add_argument("--hung-connections", type=int, default=4,
                        help="wrk connections of the local-only requests beside them")
    parser.add_argument("--service-args", default="", type=shlex.split,
                        help="more `forward-auth serve` flags for every service and the constant app, "
                             "e.g. '--server gunicorn'")
    parser.add_argument("--nginx-workers", default="auto",
                        help="nginx's worker_processes: nginx.conf.example's `auto` (one per CPU), or a number")
    parser.add_argument("--one-session", action="store_true",
                        help="start every server in this session, not each in its own as daemons run: with "
                             "Linux's autogroups the CPU is then shared between threads, not between servers")
    parser.add_argument("--bimodal", type=float, default=1.5, help="flag a configuration whose max/min exceeds this")
    parser.add_argument("--json", type=Path, help="also write the rounds and targets here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, nginx.conf)")
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    if args.nginx_workers != "auto" and not args.nginx_workers.isdigit():
        parser.error("--nginx-workers must be `auto` or a number")
    return args


def main() -> None:
    args = parse_args()
    wrk_binary = find_binary("wrk")
    nginx_binary = find_binary("nginx", ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"))
    if wrk_binary is None or nginx_binary is None:
        raise SystemExit(f"edge_bench: {WRK_HINT if wrk_binary is None else NGINX_HINT}")
    started_at = time.monotonic()
    with shared_core(argparse.Namespace(phases=set(), tokens=0)) as shared, \
            started_edge(args, shared, nginx_binary) as edge:
        runner = Runner(Wrk(wrk_binary), shared.counter, list(edge.procs.values()))
        configs = configurations(args, edge)
        peak = [cfg for key, cfg in configs.items() if not key.startswith(("paced", "const_", "hung"))]
        interleaved(args, runner, edge, peak, args.rounds)
        pace = configs["svc"].median / 2
        interleaved(args, runner, edge, [configs[key] for key in PACED],
                    args.rounds, rate=pace)
        # the cheapest upstream held to the same rule: paced at half of its own peak
        interleaved(args, runner, edge, [configs[PACED_OWN]], args.rounds, rate=own_pace(configs))
        # what an auth answer's body costs behind nginx (it closes the upstream connection after one)
        interleaved(args, runner, edge, [configs["const_body"], configs["const_empty"]], min(args.rounds, 2))
        slow = slow_clients(edge.ports["svc"], edge.urls["direct"], edge.cookie, args.slow_connections)
        waiting = hung_core_rounds(args, runner, edge, configs)
        counts = shared.counter.snapshot()
        notes = [code_state(), *edge.notes, "dev core requests of the whole run (start-up and checks included): " +
                 ", ".join(f"{method} {path} x{n}" for (method, path), n in sorted(counts.items()))]
        cached = configs["svc_cache"].measure
        notes.append(f"nginx cache ({PROXY_CACHE_SECONDS} s): the service behind it decided "
                     f"{decisions(edge.ports['svc_cache']):,.0f} requests over the whole run (start-up and checks "
                     f"included), its rounds made {cached.requests:,}")
        errors = edge.nginx_errors()
        if errors:
            notes.append(f"nginx logged {len(errors)} errors, the last: {errors[-1]}")
        if args.keep:
            notes.append(f"work directory kept: {edge.work}")
        settings = edge.settings
    report(args, configs, Stress(slow, waiting), settings, notes, pace, (time.monotonic() - started_at) / 60)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
