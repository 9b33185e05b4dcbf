"""Side-by-side benchmark of session verification, in one run, printed as ratios.

Measures, against one in-memory development core over real HTTP on 127.0.0.1:
- the service's /verify (falcon.testing, in-process) with a locally verifiable token;
- supertokens-python 0.31.4's verify_session on a FastAPI route (its TestClient, in-process);
- both again with checkDatabase (one core round trip per request), and the service with its
  revocation cache on;
- the gate alone (no HTTP framework), with its verified-signature cache and without, and
  /healthz, to show where the time goes.

Run: ``.venv/bin/python bench/verify_bench.py [--seconds 1.0]`` (needs the test extras).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import falcon.testing
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sdk_oracle import init_sdk, oracle_app  # noqa: E402

from forward_auth import credentials, verifier  # noqa: E402
from forward_auth.app import build_gate, create_app  # noqa: E402
from forward_auth.devcore_server import start_in_thread  # noqa: E402
from forward_auth.settings import load  # noqa: E402

API_KEY = "bench-key"


def measure(name: str, call: Callable[[], object], seconds: float) -> tuple[str, float]:
    """Median microseconds per call over five rounds of about ``seconds / 5`` each."""
    call()  # warm caches (JWKS, connections)
    rounds = []
    for _ in range(5):
        count, start = 0, time.perf_counter()
        deadline = start + seconds / 5
        while time.perf_counter() < deadline:
            call()
            count += 1
        rounds.append((time.perf_counter() - start) / count * 1e6)
    return name, statistics.median(rounds)


def expect(status: int, check: Callable[[], int]) -> Callable[[], object]:
    def run() -> object:
        got = check()
        if got != status:
            raise SystemExit(f"benchmark request answered {got}, expected {status}")
        return got
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    os.environ["SUPERTOKENS_ENV"] = "testing"

    core, url, stop = start_in_thread(api_key=API_KEY)
    try:
        token = core.create_session("public", "bench-user", {"st-role": {"v": ["admin"], "t": 1}}, {})["accessToken"][
            "token"]
        cookie = {"Cookie": f"sAccessToken={token}"}
        settings = load({"core_url": url, "core_api_key": API_KEY}, environ={})
        cached = load({"core_url": url, "core_api_key": API_KEY, "revocation_cache_seconds": "5"}, environ={})
        service = falcon.testing.TestClient(create_app(settings))
        service_cached = falcon.testing.TestClient(create_app(cached))
        gate = build_gate(settings)
        gate_uncached = build_gate(load({"core_url": url, "verified_cache_size": "0"}, environ={}))
        creds = credentials.from_headers({"Cookie": cookie["Cookie"]}.get, method="GET", uri="/", trusted=True)
        init_sdk(url, API_KEY, anti_csrf="NONE")
        sdk = TestClient(oracle_app())

        results = [
            measure("gate.verify, signature remembered", lambda: gate.verify(creds, verifier.Policy()), args.seconds),
            measure("gate.verify, signature checked (cache off)",
                    lambda: gate_uncached.verify(creds, verifier.Policy()), args.seconds),
            measure("service /healthz", expect(200, lambda: service.simulate_get("/healthz").status_code),
                    args.seconds),
            measure("service /verify", expect(200, lambda: service.simulate_get("/verify", headers=cookie).status_code),
                    args.seconds),
            measure("SDK verify_session", expect(200, lambda: sdk.get("/required", headers=cookie).status_code),
                    args.seconds),
            measure("service /verify?checkDatabase=true", expect(200, lambda: service.simulate_get(
                "/verify", params={"checkDatabase": "true"}, headers=cookie).status_code), args.seconds),
            measure("SDK verify_session(check_database=True)",
                    expect(200, lambda: sdk.get("/checkdb", headers=cookie).status_code), args.seconds),
            measure("service checkDatabase, revocation cache 5 s", expect(200, lambda: service_cached.simulate_get(
                "/verify", params={"checkDatabase": "true"}, headers=cookie).status_code), args.seconds),
        ]
    finally:
        stop()

    base = dict(results)["service /verify"]
    print(f"{'measurement':46s} {'us/request':>11s} {'vs service /verify':>19s}")
    for name, micros in results:
        print(f"{name:46s} {micros:11.1f} {micros / base:18.2f}x")
    timings = dict(results)
    print()
    print(f"SDK / service, local verification:  {timings['SDK verify_session'] / base:.2f}x")
    print(f"SDK / service, checkDatabase:       "
          f"{timings['SDK verify_session(check_database=True)'] / timings['service /verify?checkDatabase=true']:.2f}x")
    print(f"verified-signature cache speed-up:  "
          f"{timings['gate.verify, signature checked (cache off)'] / timings['gate.verify, signature remembered']:.2f}x")
    print(f"revocation cache speed-up:          "
          f"{timings['service /verify?checkDatabase=true'] / timings['service checkDatabase, revocation cache 5 s']:.2f}x")


if __name__ == "__main__":
    main()
