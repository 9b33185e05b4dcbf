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

Everything runs once per server configuration (``--servers``, by default the built-in server,
gunicorn and granian, each serving all three apps alike), and the targets are printed side by side.

Run: ``.venv/bin/python bench/http_bench.py`` (about 20 minutes on 2 cores; ``--help`` for the knobs,
e.g. ``--servers gunicorn --gunicorn reuse_port=true --threads 1`` to try gunicorn settings on all apps alike).
Needs wrk (``apt-get install wrk``), nginx, and Flask in the venv (``.venv/bin/pip install flask``).

The pieces: ``bench/processes.py`` (tools, processes, /proc readings, wrk), ``bench/servers.py`` (the dev
core, the apps, nginx), ``bench/workloads.py`` (rounds, measures, the phases), ``bench/report.py`` (the
table, the targets); this file parses the arguments and runs each configuration.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from processes import Wrk, preflight
from report import Target, report, side_by_side
from servers import Shared, Variant, shared_core, started_servers
from workloads import PHASES, run_phases


def variant(text: str, args: argparse.Namespace) -> Variant:
    """``SERVER[:threads=N][:cache=S]``, the defaults from ``args``."""
    server, *options = (part.strip() for part in text.strip().split(":"))
    if server not in ("builtin", "gunicorn", "granian"):
        raise ValueError(f"{server!r} is not builtin, gunicorn or granian")
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
    parser.add_argument("--servers", default="builtin,gunicorn,granian",
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
    if args.gunicorn and any(v.server != "gunicorn" for v in args.servers):
        parser.error("--gunicorn settings apply to gunicorn only: add --servers gunicorn")
    if not args.phases <= set(PHASES) or not args.phases:
        parser.error(f"--phases takes a comma-separated subset of {','.join(PHASES)}")
    if "3" in args.phases or "4" in args.phases:
        args.phases.add("1")  # their rates are relative to phase 1's peak
    return args


def main() -> None:
    args = parse_args()
    wrk_binary, nginx_binary = preflight()
    with shared_core(args) as shared:
        results = {v.name: bench(args, v, shared, wrk_binary, nginx_binary) for v in args.servers}
    side_by_side(results)


def bench(args: argparse.Namespace, variant: Variant, shared: Shared, wrk_binary: str,
          nginx_binary: str) -> list[Target]:
    """Every phase with the service and the comparison apps under ``variant``; prints its report
    and returns its targets."""
    started_at = time.monotonic()
    with started_servers(args, variant, shared, nginx_binary) as servers:
        res = run_phases(args, servers, shared, Wrk(wrk_binary))
        nginx_errors = servers.nginx_errors()
    return report(args, variant, shared, servers, res, nginx_errors, time.monotonic() - started_at)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
