"""What ``bench/http_bench.py`` measures: wrk rounds, each accounted for the app's worker CPU, the
core's requests and the machine's other load, gathered into one measure per variant; and the four
phases run against one configuration's servers, their variants interleaved round by round."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from processes import CLOCK_TICKS, Proc, Wrk, WrkResult, cpu_ticks, machine_ticks, own_ticks, rss_mb, workers_of
from servers import CoreCounter, Servers, Shared, reload_nginx

PHASES = {"1": "direct HTTP", "2": "nginx auth_request", "3": "latency at half peak", "4": "many tokens, RSS"}


@dataclass
class Round:
    wrk: WrkResult
    worker_ticks: dict[int, int]     # CPU ticks of each gunicorn worker of the app under test
    core_jwks: int
    core_other: int
    foreign: float                   # share of the machine's CPU used by processes not ours
    steal: float                     # share of the machine's CPU its host stole (steal time)

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
        (machine, stolen), ours, start = machine_ticks(), own_ticks(self.watched), time.monotonic()
        result = self.wrk.run(url, seconds=seconds, connections=measure.connections, **wrk_args)
        after = cpu_ticks(pids)
        elapsed_ticks = (time.monotonic() - start) * CLOCK_TICKS * (os.cpu_count() or 1)
        busy, steal = machine_ticks()
        foreign = max(0.0, (busy - machine) - (own_ticks(self.watched) - ours)) / elapsed_ticks
        jwks, other = CoreCounter.split(self.counter.snapshot() - core)
        for proc in self.watched:
            proc.check_alive()
        done = Round(result, {pid: after[pid] - ticks[pid] for pid in after if pid in ticks}, jwks, other, foreign,
                     (steal - stolen) / elapsed_ticks)
        measure.rounds.append(done)
        return done


@dataclass
class Results:
    """The measures of the phases that ran (None for the others) and the long run's RSS series."""

    svc: Measure | None = None
    const: Measure | None = None
    ng_svc: Measure | None = None
    ng_sdk: Measure | None = None
    ng_const: Measure | None = None
    ng_noop: Measure | None = None
    lat: Measure | None = None
    lat_const: Measure | None = None
    one: Measure | None = None
    soak: Measure | None = None
    rss_series: list[tuple[str, dict[int, float]]] = field(default_factory=list)  # (label, MB per worker pid)
    restarted: bool = False          # a service worker was replaced during the long run
    pace: float = 0.0                # phase 3's request rate: half the peak of phase 1

    @property
    def measures(self) -> list[Measure]:
        return [m for m in (self.svc, self.const, self.ng_svc, self.ng_sdk, self.ng_const, self.ng_noop, self.lat,
                            self.lat_const, self.one, self.soak) if m is not None]

    @property
    def peak(self) -> float:
        """The rate of ``/verify`` direct (phase 1), the base of phases 3 and 4."""
        return self.svc.rate if self.svc else float("nan")


def run_phases(args: argparse.Namespace, servers: Servers, shared: Shared, wrk: Wrk) -> Results:
    """The phases in ``args.phases`` against ``servers``."""
    runner = Runner(wrk, shared.counter, servers.procs)
    service, cookie, c = servers.service, servers.cookie, args.connections
    rss_start = {pid: rss_mb(pid) for pid in workers_of(service.popen.pid)}
    res = Results()

    def interleaved(variants: list[tuple[Measure, str, dict[str, str]]], before_round: Any = None) -> None:
        for measure, url, headers in variants:  # warm-up: connections, JWKS, caches, lazy imports
            runner.wrk.run(url, seconds=1, connections=measure.connections, headers=headers)
        for _ in range(args.rounds):
            for measure, url, headers in variants:
                if before_round:
                    before_round()
                runner.round(measure, url, args.seconds, headers=headers)

    if "1" in args.phases:
        res.svc = Measure("service /verify (direct)", c, service)
        res.const = Measure("constant-200 Falcon app (direct)", c, servers.constant)
        interleaved([(res.svc, servers.svc_url, cookie), (res.const, servers.const_url, {})])
    if "2" in args.phases:
        urls = servers.nginx_urls
        res.ng_svc = Measure("nginx auth_request -> service", c, service)
        res.ng_sdk = Measure("nginx auth_request -> Flask + SDK", c, servers.flask)
        res.ng_const = Measure("nginx auth_request -> constant (empty body)", c, servers.constant)
        res.ng_noop = Measure("nginx auth_request -> no-op (200)", c, None)
        interleaved([(res.ng_svc, urls["svc"], cookie), (res.ng_sdk, urls["sdk"], cookie),
                     (res.ng_const, urls["const"], cookie), (res.ng_noop, urls["noop"], cookie)],
                    before_round=lambda: reload_nginx(servers.nginx, urls["noop"]))
    if "3" in args.phases and res.svc is not None:
        # Plain wrk has no -R (wrk2): request starts are scheduled at half the peak of phase 1 by
        # the Lua delay() hook instead (see http_bench.lua).
        res.pace = res.svc.rate / 2
        res.lat = Measure("service /verify paced at ~50% of peak", args.latency_connections, service)
        runner.round(res.lat, servers.svc_url, args.latency_seconds, headers=cookie, rate=res.pace)
        # the same pace on the constant app: the latency floor of these gunicorn settings
        res.lat_const = Measure("constant app paced at the same rate", args.latency_connections, servers.constant)
        runner.round(res.lat_const, servers.const_url, args.latency_seconds, rate=res.pace)
        res.one = Measure("service /verify, 1 connection, closed loop", 1, service)
        runner.round(res.one, servers.svc_url, 2, headers=cookie)
    if "4" in args.phases and shared.tokens_file is not None:
        pids = workers_of(service.popen.pid)
        res.rss_series = [("at start", rss_start), ("before long run", {pid: rss_mb(pid) for pid in pids})]
        res.soak = Measure(f"service /verify over {args.tokens:,} tokens", c, service)
        offset = 0
        while offset < args.soak_requests:
            done = runner.round(res.soak, servers.svc_url, args.soak_segment_seconds, tokens=shared.tokens_file,
                                offset=offset)
            offset += done.wrk.requests
            res.rss_series.append((f"after {offset:,} req",
                                   {pid: rss_mb(pid) for pid in workers_of(service.popen.pid)}))
        res.restarted = set(workers_of(service.popen.pid)) != set(pids)
    return res
