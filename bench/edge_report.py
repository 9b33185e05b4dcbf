"""The report of ``bench/edge_bench.py``: one table of min/median/max rates per configuration with
ratios to the bound, supertokens-node and supertokens-python, the slow clients' and the hung core's
figures, the issue's targets (met or not), notes."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from edge_stress import SlowClients, Waiting
from workloads import Measure

#: The issue's targets.
TARGET_VS_SDK = 3.0           # behind plain nginx >= 3x supertokens-node and >= 3x supertokens-python
TARGET_VS_BOUND = 0.20        # behind plain nginx >= 20% of nginx's own bound
TARGET_DIRECT = 0.70          # direct >= 70% of the constant app under the same server settings
TARGET_P99_MS = 2.0           # p99 at half of the peak behind nginx
TARGET_SHARE = 0.5            # least/busiest worker CPU during the direct run
TARGET_CACHE = 0.60           # behind nginx with its cache on, a repeated token: >= 60% of the bound
TARGET_SLOW_S = 0.100         # beside the slow clients, every valid request answered within 100 ms
TARGET_HUNG_P99_MS = 10.0     # local-only p99 with a hung core and checkDatabase requests waiting on it
#: The paced configurations: the service, then the same hop to the constant app and to the second nginx, and the bound.
PACED = ("paced_svc", "paced_const", "paced_noop", "paced_bound")
#: The second nginx paced at half of its own peak: the p99 target's rule applied to the cheapest upstream.
PACED_OWN = "paced_noop_own"


@dataclass
class Stress:
    """What was measured under hostile conditions: slow clients, and requests waiting on a hung core."""

    slow: SlowClients
    waiting: Waiting


@dataclass
class Config:
    """One configuration: its wrk target, its rounds (``measure``) and its server's TCP connections closed
    per request (``port``: the server's TCP port; None for nginx's own answer and the unix socket)."""

    key: str
    label: str
    url: str
    headers: dict[str, str]
    measure: Measure
    nginx: bool                       # behind nginx: reload it before each round
    port: int | None
    closed: list[float] = field(default_factory=list)     # TIME_WAIT sockets of ``port``: a lower bound
    accepted: list[float] = field(default_factory=list)   # the machine's PassiveOpens: an upper bound

    @property
    def rates(self) -> list[float]:
        return sorted(r.wrk.rate for r in self.measure.rounds)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def spread(self) -> float:
        return self.rates[-1] / max(self.rates[0], 1e-9)

    def shares(self) -> list[float]:
        """Least/busiest worker CPU ticks, per round (empty when there is no app or one worker)."""
        out = []
        for r in self.measure.rounds:
            ticks = list(r.worker_ticks.values())
            if len(ticks) > 1 and max(ticks) > 0:
                out.append(min(ticks) / max(ticks))
        return out

    def p99s(self) -> list[float]:
        return sorted(r.wrk.p99_ms for r in self.measure.rounds)


def own_pace(configs: dict[str, Config]) -> float:
    """The rate of :data:`PACED_OWN`: half of the second nginx's median peak (1b)."""
    return configs["noop"].median / 2


def cell_share(config: Config) -> str:
    shares = config.shares()
    return f"{statistics.median(shares):.2f}/{min(shares):.2f}" if shares else "-"


def ratio_cell(key: str, configs: dict[str, Config]) -> str:
    """A table row's ratios: to the constant app (direct), to the service with nothing waiting (the hung
    core), else to the bound, supertokens-node and supertokens-python."""
    c, median = configs, configs[key].median
    if key.startswith(("direct", "const")):
        return f"{median / c['const'].median:.2f} of constant"
    if key.startswith("hung"):
        return f"{median / c['hung_idle'].median:.2f} of nothing waiting"
    node, py = ("close_node", "close_pysdk") if key.startswith("close") else ("node", "pysdk")  # behind the same config
    return f"{median / c['bound'].median:.2f} bound {median / c[node].median:.2f}x node {median / c[py].median:.2f}x py"


def probe_cell(probes: list[tuple[int, float]]) -> str:
    """Each valid request's latency in ms, its status beside it when it was no 200."""
    return ", ".join(f"{took * 1000:.1f}" + ("" if status == 200 else f" ({status or 'no answer'})")
                     for status, took in probes)


def print_stress(stress: Stress, configs: dict[str, Config]) -> None:
    """The slow clients' probes and what the requests waiting on the hung core got."""
    slow, waiting = stress.slow, stress.waiting
    print()
    print(f"9 slow clients: {slow.connections} connections to the service direct sent `GET /verify HTTP/1.1` and "
          "`Host: x`, then a header byte every 0.1 s, never finishing; beside them, valid /verify requests on fresh "
          f"connections answered in {probe_cell(slow.probes)} ms; {slow.still_open} of {slow.connections} slow "
          "connections still open after them (then closed)")
    errors = [r.wrk.errors for r in configs["hung"].measure.rounds if r.wrk.errors]
    answers = ", ".join(f"{status or 'no answer'} x{n}" for status, n in sorted(waiting.statuses.items())) or "none"
    print(f"10 hung core: {waiting.count} `?checkDatabase=true` requests kept waiting on it (each sent again when "
          f"answered), {waiting.held} core calls held when the rounds began; their answers meanwhile: {answers}; "
          f"wrk errors of the local-only rounds: {errors or 'none'}")


def stress_targets(configs: dict[str, Config], stress: Stress) -> list[tuple[str, bool, str]]:
    """The targets of the nginx cache, the slow clients and the hung core: (name, met, figure)."""
    c = configs
    cache = c["svc_cache"].median / c["bound"].median
    slow = stress.slow
    within = slow.answered_within(TARGET_SLOW_S)
    hung = c["hung"]
    p99s, timeouts = hung.p99s(), sum(sum(r.wrk.errors.values()) for r in hung.measure.rounds)
    p99 = statistics.median(p99s)
    return [
        ("behind nginx with its cache on, repeated token >= 60% of the bound", cache >= TARGET_CACHE, f"{cache:.0%}"),
        (f"{slow.connections} slow connections: 4 of 4 valid answered within 100 ms",
         within == len(slow.probes) == 4, f"{within} of {len(slow.probes)} ({probe_cell(slow.probes)} ms)"),
        (f"hung core, {stress.waiting.count} checkDatabase waiting: local p99 <= 10 ms",
         p99 <= TARGET_HUNG_P99_MS and timeouts == 0,
         f"{p99:.2f} ms (p50 {hung.measure.median.p50_ms:.2f}, worst round {p99s[-1]:.2f}, nothing waiting "
         f"{statistics.median(c['hung_idle'].p99s()):.2f}" + (f"; {timeouts} wrk errors" if timeouts else "") + ")"),
    ]


def report(args: argparse.Namespace, configs: dict[str, Config], stress: Stress, settings: str, notes: list[str],
           pace: float, minutes: float) -> None:
    """The table, the targets and the notes, printed."""
    c = configs
    bound, node, py = c["bound"].median, c["node"].median, c["pysdk"].median
    print()
    print(f"forward-auth edge benchmark: wrk -t1, {os.cpu_count()} CPUs, all on 127.0.0.1, {args.rounds} interleaved "
          f"rounds of {args.seconds:g} s per configuration (order rotated each round), {minutes:.1f} min")
    command = " ".join(["forward-auth serve --workers 2", *args.service_args])
    print(f"service: `{command}` -> {settings}; the constant app served the same way (bench/edge_constant.py)")
    print(f"nginx: worker_processes {args.nginx_workers}, plain auth_request (upstream keepalive 32, HTTP/1.1, no body, "
          "X-Original-URI/-Method, no query), reloaded before each round; protected content `return 200 \"ok\"` "
          "after the auth (via try_files -> @ok)")
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
    groups = autogroup.read_text().strip() == "1" if autogroup.exists() else False
    print("processes: " + ("all in the bench's session (--one-session)" if args.one_session else
                           "each server in a session of its own, as daemons run") +
          ("; Linux autogroups on: the CPU is shared between sessions, then threads" if groups else ""))
    print("rates in req/s; p50/p99 ms of the median round; closed/req = the server's TCP connections closed per "
          "request (TIME_WAIT sockets of its port made during the round: a lower bound); wkr = least/busiest worker CPU, median/worst round; "
          "core = dev-core requests per request; other = worst share of the machine's CPU used by others")
    print()
    head = (f"{'configuration':46s} {'conns':>5s} {'min':>7s} {'median':>7s} {'max':>7s} {'spread':>13s} "
            f"{'p50':>6s} {'p99':>6s} {'ratios (median)':>30s} {'closed/req':>10s} {'wkr':>9s} {'core':>6s} {'other':>5s}")
    print(head)
    print("-" * len(head))
    for key, cfg in c.items():
        if key.startswith(("paced", "const_")):
            continue
        m = cfg.measure
        ratio = ratio_cell(key, c)
        spread = cfg.spread()
        flag = f"{spread:.2f}" + (" BIMODAL" if spread > args.bimodal else "")
        print(f"{cfg.label:46s} {m.connections:5d} {cfg.rates[0]:7,.0f} {cfg.median:7,.0f} {cfg.rates[-1]:7,.0f} "
              f"{flag:>13s} {m.median.p50_ms:6.2f} {m.median.p99_ms:6.2f} {ratio:>30s} "
              f"{f'{statistics.median(cfg.closed):.3f}' if cfg.closed else '-':>10s} {cell_share(cfg):>9s} "
              f"{m.core_other / max(1, m.requests):6.4f} {m.foreign:5.0%}")
    print()
    print(f"latency paced at ~50% of the median peak behind nginx ({pace:,.0f} req/s; wrk + bench/http_bench.lua's "
          "delay() pacing, latency from each request's write, with wrk's coordinated-omission correction; steal = the "
          "share of the machine's CPU its host took, median/worst round):")
    own = own_pace(c)
    for key, rate in [*((key, pace) for key in PACED), (PACED_OWN, own)]:
        cfg = c[key]
        p50 = statistics.median(r.wrk.p50_ms for r in cfg.measure.rounds)
        p99 = cfg.p99s()
        steal = sorted(r.steal for r in cfg.measure.rounds)
        behind = f" (FELL BEHIND: {cfg.median / rate:.0%} of the pace)" if cfg.median < 0.95 * rate else ""
        print(f"  {cfg.label:48s} {cfg.measure.connections:3d} conns  achieved {cfg.median:7,.0f} req/s  "
              f"p50 {p50:.2f} ms  p99 median {statistics.median(p99):.2f} ms (min {p99[0]:.2f}, max {p99[-1]:.2f})  "
              f"steal {statistics.median(steal):.0%}/{steal[-1]:.0%}{behind}")
    print()
    print("keep-alive probe: nginx auth_request -> the constant app (its 200 with a body or without); upstream "
          "connections per request, closed (TIME_WAIT of its port; a close with unread data sends RST and "
          "leaves none) and accepted (the whole machine's, others' too):")
    for key in ("const_body", "const_empty"):
        cfg = c[key]
        print(f"  {cfg.label:44s} {cfg.measure.connections:3d} conns  {cfg.median:7,.0f} req/s  "
              f"closed {statistics.median(cfg.closed):.3f}  accepted {statistics.median(cfg.accepted):.3f}")
    print_stress(stress, c)
    svc, direct = c["svc"].median, c["direct"].median
    p99 = statistics.median(c["paced_svc"].p99s())
    shares = c["direct"].shares()
    share = statistics.median(shares) if shares else float("nan")
    targets = [
        ("behind plain nginx >= 3x supertokens-node", svc / node >= TARGET_VS_SDK, f"{svc / node:.2f}x"),
        ("behind plain nginx >= 3x supertokens-python", svc / py >= TARGET_VS_SDK, f"{svc / py:.2f}x"),
        ("behind plain nginx >= 20% of the bound", svc / bound >= TARGET_VS_BOUND, f"{svc / bound:.0%}"),
        ("direct >= 70% of the constant app", direct / c["const"].median >= TARGET_DIRECT,
         f"{direct / c['const'].median:.0%}"),
        ("p99 <= 2 ms at half peak behind nginx", p99 <= TARGET_P99_MS,
         f"{p99:.2f} ms (the constant app alike {statistics.median(c['paced_const'].p99s()):.2f}, the second "
         f"nginx {statistics.median(c['paced_noop'].p99s()):.2f}, the bound {statistics.median(c['paced_bound'].p99s()):.2f}; "
         f"the second nginx at half its own peak, {own:,.0f} req/s: {statistics.median(c[PACED_OWN].p99s()):.2f})"),
        ("direct: least/busiest worker CPU >= 0.5 (median round)", share >= TARGET_SHARE,
         f"{share:.2f} (worst round {min(shares, default=float('nan')):.2f})"),
        *stress_targets(c, stress),
    ]
    print()
    print("targets (medians of the rounds):")
    for name, ok, value in targets:
        print(f"  {'met    ' if ok else 'NOT MET'}  {name:68s} {value}")
    unix = c["svc_unix"].median
    notes = [f"unix socket vs TCP between nginx and the service: {unix / svc:.2f}x ({unix:,.0f} vs {svc:,.0f} req/s)",
             *notes]
    bimodal = [cfg.label for cfg in c.values() if cfg.spread() > args.bimodal]
    if bimodal:
        notes.append(f"max/min > {args.bimodal:g} (bimodal or noisy, rerun before trusting): {', '.join(bimodal)}")
    print()
    for note in notes:
        print(f"note: {note}")
    if args.json:
        write_json(args.json, configs, stress, targets)


def write_json(path: Path, configs: dict[str, Config], stress: Stress, targets: list[tuple[str, bool, str]]) -> None:
    data = {"configurations": {k: {"label": cfg.label, "connections": cfg.measure.connections,
                                   "rates": [r.wrk.rate for r in cfg.measure.rounds],
                                   "p50_ms": [r.wrk.p50_ms for r in cfg.measure.rounds],
                                   "p99_ms": [r.wrk.p99_ms for r in cfg.measure.rounds],
                                   "wrk_errors": [r.wrk.errors for r in cfg.measure.rounds],
                                   "closed_per_request": cfg.closed,
                                   "accepted_per_request_machine": cfg.accepted, "worker_shares": cfg.shares()}
                               for k, cfg in configs.items()},
            "slow_clients": stress.slow.as_json(), "hung_core": stress.waiting.as_json(),
            "targets": [{"target": t, "met": ok, "value": v} for t, ok, v in targets]}
    path.write_text(json.dumps(data, indent=2) + "\n")
