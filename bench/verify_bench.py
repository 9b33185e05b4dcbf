"""The decision alone, side by side in one run: the gate vs one RSA verify vs supertokens-python.

Measures, against one in-memory development core over real HTTP on 127.0.0.1, for one real
access token (v5, RS256, 2048-bit key from the core's JWKS):
- one raw RSA-2048 PKCS#1 v1.5 verify of that token's signature with ``cryptography`` (the unit);
- the gate's decision (:meth:`forward_auth.gate.Gate.verify`, no HTTP framework) on a cache miss
  (signature checked) and on a cache hit (a token verified before);
- supertokens-python 0.31.4's ``get_session_without_request_response`` on the same token;
- both with ``checkDatabase`` (one core round trip each), and the gate with its revocation cache;
- the whole service answering ``/verify`` as one WSGI call (Falcon, policy, headers, metrics, log),
  its endpoint alone as granian's ASGI path calls it (no Falcon), the same answered by its
  decision cache (``decision_cache_seconds``), and a constant-200 Falcon app: what the HTTP
  server adds is the same for all of them.

Candidates run in interleaved rounds (A B C ... A B C ...), so a noisy neighbour slows all of
them alike; each figure is the median of the rounds. Ratios, not absolute microseconds, carry
over between machines.

Run: ``.venv/bin/python bench/verify_bench.py [--seconds 10]`` (needs the test extras).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sdk_oracle import init_sdk  # noqa: E402
from supertokens_python.recipe.session.syncio import get_session_without_request_response  # noqa: E402

from forward_auth import credentials, verifier  # noqa: E402
from forward_auth import token as tokens  # noqa: E402
from forward_auth.app import build_gate, create_service  # noqa: E402
from forward_auth.devcore.server import start_in_thread  # noqa: E402
from forward_auth.endpoint import Answer, Incoming, Verify  # noqa: E402
from forward_auth.settings import load  # noqa: E402

API_KEY = "bench-key"
ROUNDS = 15


def interleaved(candidates: dict[str, Callable[[], object]], seconds: float) -> dict[str, float]:
    """Median microseconds per call of each candidate, measured in interleaved rounds."""
    per_round = seconds / ROUNDS / len(candidates)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for call in candidates.values():
        call()  # warm caches (JWKS, connections, the verified token)
    for _ in range(ROUNDS):
        for name, call in candidates.items():
            count, start = 0, time.perf_counter()
            deadline = start + per_round
            while True:
                for _ in range(10):
                    call()
                count += 10
                now = time.perf_counter()
                if now >= deadline:
                    break
            samples[name].append((now - start) / count * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def answering(status: str, app: Any, environ: dict[str, Any]) -> Callable[[], object]:
    """One WSGI call of ``app`` with a copy of ``environ``; exits if the status is not ``status``."""
    def call() -> object:
        seen: list[str] = []
        body = app(dict(environ, **{"wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr}), lambda got, _headers, *_: seen.append(got))
        b"".join(body)
        if not seen or not seen[0].startswith(status):
            raise SystemExit(f"benchmark request answered {seen}, expected {status}")
        return seen
    return call


def endpoint_call(verify: Verify, incoming: Incoming) -> Callable[[], Answer]:
    """One call of the ``/verify`` endpoint as granian's ASGI path makes it; exits unless 200."""
    def call() -> Answer:
        answer = verify(incoming)
        if answer.status != 200:
            raise SystemExit(f"benchmark request answered {answer.status}, expected 200")
        return answer
    return call


class Constant:
    """The constant-200 app of bench/http_bench_apps.py."""

    def on_get(self, _req: falcon.Request, resp: falcon.Response) -> None:
        resp.set_header("Cache-Control", "no-store")
        resp.media = {"message": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time per group of measurements")
    args = parser.parse_args()
    os.environ["SUPERTOKENS_ENV"] = "testing"
    logging.disable(logging.CRITICAL)  # one record per decision would measure the log handler

    core, url, stop = start_in_thread(api_key=API_KEY)
    try:
        created = core.create_session("public", "bench-user", {"st-role": {"v": ["admin"], "t": 1}}, {})
        raw = created["accessToken"]["token"]
        parsed = tokens.parse(raw)
        base = {"core_url": url, "core_api_key": API_KEY}
        hit_gate = build_gate(load(base, environ={}))
        miss_gate = build_gate(load({**base, "verified_cache_size": "0"}, environ={}))
        cached_gate = build_gate(load({**base, "revocation_cache_seconds": "5"}, environ={}))
        key = hit_gate.keys.key_for(parsed.kid or "")
        assert key is not None and parsed.jws is not None
        signature, signed = parsed.jws.signature, parsed.jws.signing_input
        creds = credentials.from_headers({"cookie": f"sAccessToken={raw}"}.get, method="GET", uri="/",
                                         trusted=True)
        local, check_db = verifier.Policy(), verifier.Policy(check_database=True)
        init_sdk(url, API_KEY, anti_csrf="NONE")
        no_validators = {"override_global_claim_validators": lambda _globals, _session, _context: []}
        service = create_service(load(base, environ={}))
        cached_service = create_service(load({**base, "decision_cache_seconds": "3600"}, environ={}))
        constant = falcon.App()
        constant.add_route("/verify", Constant())
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/verify", "QUERY_STRING": "", "SERVER_NAME": "bench",
                   "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                   "REMOTE_ADDR": "127.0.0.1", "HTTP_COOKIE": f"sAccessToken={raw}"}
        incoming = Incoming("GET", "/verify", "", {"cookie": f"sAccessToken={raw}"}, "127.0.0.1")

        decision = interleaved({
            "one RSA-2048 verify (cryptography)": lambda: key.verify(signature, signed, padding.PKCS1v15(),
                                                                     hashes.SHA256()),
            "decision, cache miss": lambda: miss_gate.verify(creds, local),
            "decision, cache hit": lambda: hit_gate.verify(creds, local),
            "SDK get_session_without_request_response": lambda: get_session_without_request_response(
                raw, anti_csrf_check=False, **no_validators),
            "service /verify, one WSGI call": answering("200", service, environ),
            "service /verify endpoint alone (ASGI path)": endpoint_call(service.verify, incoming),
            "the same, a decision-cache hit": endpoint_call(cached_service.verify, incoming),
            "constant-200 Falcon app, one WSGI call": answering("200", constant, environ),
        }, args.seconds)
        database = interleaved({
            "decision, checkDatabase": lambda: hit_gate.verify(creds, check_db),
            "decision, checkDatabase, revocation cache 5 s": lambda: cached_gate.verify(creds, check_db),
            "SDK, check_database=True": lambda: get_session_without_request_response(
                raw, anti_csrf_check=False, check_database=True, **no_validators),
        }, args.seconds / 2)
    finally:
        stop()

    rsa = decision["one RSA-2048 verify (cryptography)"]
    print(f"{'measurement (median of interleaved rounds)':48s} {'us/call':>9s} {'RSA verifies':>13s}")
    for name, micros in {**decision, **database}.items():
        print(f"{name:48s} {micros:9.2f} {micros / rsa:12.2f}x")
    miss, hit = decision["decision, cache miss"], decision["decision, cache hit"]
    sdk = decision["SDK get_session_without_request_response"]
    print()
    print("target: measured")
    print(f"cache miss <= 1.5x one RSA verify: {miss / rsa:.2f}x")
    print(f"cache hit <= 3 us, 0.18x of the issue machine's 17-us RSA verify: {hit:.2f} us = {hit / rsa:.2f}x")
    print(f"SDK >= 4x the decision (miss | hit): {sdk / miss:.2f}x | {sdk / hit:.2f}x")
    constant_call = decision["constant-200 Falcon app, one WSGI call"]
    print(f"/verify, one WSGI call: {decision['service /verify, one WSGI call'] / constant_call:.2f}x the constant app; "
          f"the endpoint alone {decision['service /verify endpoint alone (ASGI path)'] / constant_call:.2f}x; "
          f"a decision-cache hit {decision['the same, a decision-cache hit'] / constant_call:.2f}x")
    print(f"SDK / decision with checkDatabase: "
          f"{database['SDK, check_database=True'] / database['decision, checkDatabase']:.2f}x")


if __name__ == "__main__":
    main()
