"""The report of ``bench/http_bench.py``: one configuration's table of rates, ratios, CPU and core
requests, its notes and RSS series, the issue's targets (met or not), the JSON of the measurements,
and the targets of all configurations side by side."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics

from servers import Servers, Shared, Variant
from workloads import Measure, Results

#: The issue's targets.
TARGET_DIRECT = 0.90          # /verify >= 90% of the constant app
TARGET_VS_SDK = 3.0           # behind nginx >= 3x Flask + SDK
TARGET_VS_NOOP = 0.35         # behind nginx >= 35% of the no-op bound
TARGET_P99_MS = 2.0           # p99 at half peak
TARGET_RSS_MB = 60.0          # per worker
FLAT_MB = 1.0                 # "flat": at most this growth over the second half of the long run

Target = tuple[str, bool, str]  # (target, met, measured value)


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ms(value: float) -> str:
    return f"{value:.2f}"


def mark(ok: bool) -> str:
    return "met" if ok else "NOT MET"



def row(section: str, m: Measure, ratio: str, rate: float | None = None, p50: float | None = None,
        p99: float | None = None) -> None:
    """One line of the table: the median round of ``m`` unless rate, p50 or p99 are given."""
    r = m.median
    cpu = f"{m.cpu_us:.0f}" if m.cpu_us is not None else "-"
    core = f"{m.core_other / max(1, m.requests):.4f}" if m.app is not None and m.app.name != "constant" else "-"
    idle = f"{m.idle_rounds}/{len(m.rounds)}" if m.app is not None and m.connections > 1 else "-"
    print(f"{section:1s} {m.name:44s} {m.connections:5d} {fmt_rate(rate or m.rate):>7s} "
          f"{fmt_ms(p50 if p50 is not None else r.p50_ms):>7s} {fmt_ms(p99 if p99 is not None else r.p99_ms):>7s} "
          f"{ratio:>13s} {cpu:>10s} {idle:>8s} {core:>8s} {m.foreign:5.0%}")


def table(args: argparse.Namespace, variant: Variant, servers: Servers, res: Results, targets: list[Target]) -> None:
    """The heading and a row per measure; adds the targets of phases 1 to 3."""
    peak = res.peak
    print()
    print(f"== {variant.name} ==")
    print(f"forward-auth HTTP benchmark: wrk -t1 (one client thread), {os.cpu_count()} CPUs, all on 127.0.0.1; "
          f"phases 1-2: {args.rounds} interleaved rounds of {args.seconds:g} s per variant, median round shown")
    print(servers.settings + f"; service run as `{servers.how}`, decision_cache_seconds={variant.cache:g}")
    print("nginx: 1 worker, keep-alive upstreams (keepalive 32, reloaded before each round), static file "
          "behind auth_request")
    print()
    header = (f"{'#':1s} {'measurement':44s} {'conns':>5s} {'req/s':>7s} {'p50 ms':>7s} {'p99 ms':>7s} "
              f"{'ratio':>13s} {'CPU us/req':>10s} {'idle wkr':>8s} {'core/req':>8s} {'other':>5s}")
    print(header)
    print("-" * len(header))
    if res.svc and res.const:
        r_direct = res.svc.rate / res.const.rate
        row("1", res.svc, "1.00 (base)")
        row("1", res.const, f"svc/c {r_direct:.2f}")
        targets.append(("HTTP /verify >= 90% of the constant app", r_direct >= TARGET_DIRECT, f"{r_direct:.0%}"))
    if res.ng_svc and res.ng_sdk and res.ng_const and res.ng_noop:
        r_sdk = res.ng_svc.rate / res.ng_sdk.rate
        r_noop = res.ng_svc.rate / res.ng_noop.rate
        row("2", res.ng_svc, "1.00 (base)")
        row("2", res.ng_sdk, f"svc/sdk {r_sdk:.2f}x")
        row("2", res.ng_const, f"svc/c {res.ng_svc.rate / res.ng_const.rate:.2f}")
        row("2", res.ng_noop, f"svc/noop {r_noop:.2f}")
        targets.append(("behind nginx >= 3x Flask + supertokens-python", r_sdk >= TARGET_VS_SDK, f"{r_sdk:.2f}x"))
        targets.append(("behind nginx >= 35% of the no-op auth bound", r_noop >= TARGET_VS_NOOP, f"{r_noop:.0%}"))
    if res.lat and res.lat_const and res.one:
        lat = res.lat.median
        row("3", res.lat, f"{res.lat.rate / peak:.0%} of peak")
        row("3", res.lat_const, f"p99 svc/c {lat.p99_ms / res.lat_const.median.p99_ms:.1f}x")
        row("3", res.one, f"{res.one.rate / peak:.0%} of peak")
        targets.append(("p99 <= 2 ms at half peak", lat.p99_ms <= TARGET_P99_MS,
                        f"p99 {lat.p99_ms:.2f} ms at {fmt_rate(res.lat.rate)} req/s "
                        f"({res.lat.rate / peak:.0%} of peak)"))
    if res.soak:
        soak_rate = res.soak.requests / sum(r.wrk.seconds for r in res.soak.rounds)
        row("4", res.soak, f"{soak_rate / peak:.2f}x 1-token", rate=soak_rate,
            p50=statistics.median(r.wrk.p50_ms for r in res.soak.rounds),
            p99=max(r.wrk.p99_ms for r in res.soak.rounds))


def notes(args: argparse.Namespace, shared: Shared, res: Results) -> None:
    """What the columns mean, a warning when other processes took CPU, and a line per phase."""
    peak = res.peak
    print()
    print("ratio: of median rates. CPU us/req: CPU time of the app's gunicorn workers per request (what the app "
          "costs, whatever the balance). idle wkr: rounds in which a gunicorn worker did < 25% of the busiest one's "
          "work (all keep-alive connections on the other). core/req: core requests (JWKS excluded) per /verify. "
          "other: the most CPU that processes outside this benchmark took from the machine during a round.")
    busiest = max((m.foreign for m in res.measures), default=0.0)
    if busiest > 0.05:
        print(f"WARNING: other processes used up to {busiest:.0%} of the machine's CPU during a round: "
              "absolute numbers and ratios are disturbed; run again on an idle machine.")
    if res.svc and res.const and res.svc.cpu_us and res.const.cpu_us:
        print(f"1: by CPU per request, /verify costs {res.svc.cpu_us / res.const.cpu_us:.2f}x the constant app "
              f"(CPU-bound on balanced workers it would reach {res.const.cpu_us / res.svc.cpu_us:.0%} of it)")
    if res.ng_svc and res.ng_sdk and res.ng_const and res.ng_noop and res.ng_svc.cpu_us and res.ng_sdk.cpu_us:
        print(f"2: by CPU per request, Flask + SDK costs {res.ng_sdk.cpu_us / res.ng_svc.cpu_us:.2f}x the service; "
              f"the constant app (a free verification on the same gunicorn) reaches "
              f"{res.ng_const.rate / res.ng_noop.rate:.0%} of the no-op bound")
    if res.lat:
        lat = res.lat.median
        print(f"3: plain wrk has no -R: request starts paced by wrk's Lua delay() hook at {fmt_rate(res.pace)} req/s "
              f"= 50% of the {fmt_rate(peak)} req/s peak of row 1, over {res.lat.connections} connections (wrk's "
              f"coordinated-omission correction); got {fmt_rate(res.lat.rate)} req/s; p50 {fmt_ms(lat.p50_ms)} / "
              f"p90 {fmt_ms(lat.p90_ms)} / p99 {fmt_ms(lat.p99_ms)} / p99.9 {fmt_ms(lat.p999_ms)} / "
              f"max {fmt_ms(lat.max_ms)} ms")
    if res.soak:
        print(f"4: scale: {args.tokens:,} distinct tokens created on the dev core up front "
              f"({shared.token_seconds:.0f} s), {res.soak.requests:,} requests cycling over them in "
              f"{len(res.soak.rounds)} segments of {args.soak_segment_seconds:g} s (the issue asks for "
              "100,000 tokens and 1,000,000 requests)")


def rss(soak: Measure, res: Results, targets: list[Target]) -> None:
    """The RSS of each service worker over the long run; adds the RSS targets."""
    rss_series = res.rss_series
    pids_sorted = sorted({pid for _, sample in rss_series for pid in sample})
    print()
    print("RSS per service worker (MB):   " + "  ".join(f"{'pid ' + str(pid):>9s}" for pid in pids_sorted))
    for label, sample in rss_series:
        print(f"  {label:28s} " + "  ".join(f"{sample.get(pid, float('nan')):9.1f}" for pid in pids_sorted))
    if res.restarted:
        print("  (a worker was restarted during the long run: its RSS series is not comparable)")
    last = rss_series[-1][1]
    half = rss_series[1 + math.ceil(len(soak.rounds) / 2)][1]
    before_soak = rss_series[1][1]
    worst_rss = max(max(sample.values()) for _, sample in rss_series)
    growth_total = max(last[p] - before_soak.get(p, last[p]) for p in last)
    growth_half = max(last[p] - half.get(p, last[p]) for p in last)
    targets.append(("RSS <= 60 MB per worker", worst_rss <= TARGET_RSS_MB, f"max {worst_rss:.1f} MB"))
    targets.append((f"RSS flat (<= {FLAT_MB:g} MB growth over the long run's second half)",
                    growth_half <= FLAT_MB and not res.restarted,
                    f"+{growth_half:.1f} MB (whole long run +{growth_total:.1f} MB)"))


def core_requests(args: argparse.Namespace, res: Results, targets: list[Target]) -> None:
    """The core requests of each phase of the service and of Flask + SDK; adds the zero-core target."""
    print()
    print("core requests per phase (the service's must be zero with revocation off, JWKS independent of load):")
    for m in res.measures:
        if m.app is None or m.app.name == "constant":
            continue
        print(f"  {m.name:44s} {m.requests:>9,} /verify: {m.core_other} core requests, {m.core_jwks} JWKS fetches")
    service_phases = [m for m in res.measures if m.app is not None and m.app.name == "service"]
    svc_other = sum(m.core_other for m in service_phases)
    svc_jwks = sum(m.core_jwks for m in service_phases)
    svc_requests = sum(m.requests for m in service_phases)
    targets.append(("zero core requests per /verify (revocation off)", svc_other == 0 and svc_jwks <= args.workers,
                    f"{svc_other} core requests, {svc_jwks} JWKS fetches in {svc_requests:,} /verify"))


def report(args: argparse.Namespace, variant: Variant, shared: Shared, servers: Servers, res: Results,
           nginx_errors: list[str], total_seconds: float) -> list[Target]:
    """Prints one configuration's report (and writes its JSON with ``--json``); returns its targets."""
    targets: list[Target] = []
    table(args, variant, servers, res, targets)
    notes(args, shared, res)
    if res.soak:
        rss(res.soak, res, targets)
    core_requests(args, res, targets)
    if nginx_errors:
        print("\nnginx reported errors:\n  " + "\n  ".join(nginx_errors[-5:]))
    errors = {m.name: [r.wrk.errors for r in m.rounds if r.wrk.errors] for m in res.measures}
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
            "settings": servers.settings,
            "measures": {m.name: {"rate": m.rate, "cpu_us": m.cpu_us, "idle_rounds": m.idle_rounds,
                                  "core_other": m.core_other, "core_jwks": m.core_jwks,
                                  "rounds": [{**r.wrk.__dict__, "worker_ticks": r.worker_ticks} for r in m.rounds]}
                         for m in res.measures},
            "rss": res.rss_series,
            "targets": [{"target": t, "met": ok, "value": v} for t, ok, v in targets],
        }
        slug = variant.name.replace(":", "-").replace("=", "")
        path = args.json if len(args.servers) == 1 else args.json.with_suffix(f".{slug}.json")
        path.write_text(json.dumps(payload, indent=2, default=str))
    if args.keep:
        print(f"work directory kept: {servers.work}")
    return targets


def side_by_side(results: dict[str, list[Target]]) -> None:
    """The targets of every configuration, a column each (when there are several)."""
    if len(results) > 1:
        print("\ntargets side by side (same run, same machine)")
        names = list(results)
        print(f"  {'target':62s} " + " ".join(f"{name:>30s}" for name in names))
        for i, (text, _, _) in enumerate(results[names[0]]):
            cells = [f"[{mark(results[name][i][1])}] {results[name][i][2]}" for name in names]
            print(f"  {text:62s} " + " ".join(f"{cell[:30]:>30s}" for cell in cells))
