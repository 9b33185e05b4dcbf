"""Shared fixtures: real RSA keys, really signed tokens, and a fake core at the one HTTP seam."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import falcon.testing
import pytest

from forward_auth import settings as settings_module
from forward_auth.app import build_gate, create_app
from forward_auth.devcore.minter import SigningKey, mint_v2, mint_v5, sha256_hex, v2_payload, v5_claims
from forward_auth.transport import Reply, TransportError

CORE = "http://core.test:3567"


@pytest.fixture(scope="session")
def key() -> SigningKey:
    return SigningKey.generate("d-1700000000000")


@pytest.fixture(scope="session")
def static_key() -> SigningKey:
    return SigningKey.generate("s-" + str(uuid.UUID(int=1)))


@pytest.fixture(scope="session")
def foreign_key() -> SigningKey:
    """A key the core never published."""
    return SigningKey.generate("d-1600000000000")


Handler = Callable[[str, str, dict[str, str], bytes | None], Reply]


class ManualClock:
    """A clock the test moves by hand (``now``), called as ``time.time`` and ``time.monotonic`` are."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeCore:
    """Answers the JWKS and ``/recipe/session/verify``; records every request."""

    jwks: dict[str, Any]
    jwks_headers: dict[str, str] = field(default_factory=lambda: {"cache-control": "max-age=3600, must-revalidate"})
    verify_answer: dict[str, Any] | None = None
    verify_seconds: float = 0.0  # how long the session check takes (a slow core)
    down: bool = False
    requests: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    override: Handler | None = None

    def request(self, method: str, url: str, *, headers: dict[str, str], body: bytes | None = None,
                timeout: float) -> Reply:
        self.requests.append((method, url, json.loads(body) if body else None))
        if self.down:
            raise TransportError(f"{method} {url}: NewConnectionError")
        if self.override is not None:
            return self.override(method, url, headers, body)
        if url.endswith("/.well-known/jwks.json"):
            return Reply(200, dict(self.jwks_headers), json.dumps(self.jwks).encode())
        if url.endswith("/recipe/session/verify") and self.verify_answer is not None:
            time.sleep(self.verify_seconds)
            return Reply(200, {"content-type": "application/json"}, json.dumps(self.verify_answer).encode())
        return Reply(404, {}, b"not found")

    def count(self, suffix: str) -> int:
        return sum(1 for _, url, _ in self.requests if url.endswith(suffix))


@pytest.fixture
def fake_core(key: SigningKey, static_key: SigningKey) -> FakeCore:
    return FakeCore(jwks={"keys": [key.public_jwk(), static_key.public_jwk()]})


@pytest.fixture
def make_client(fake_core: FakeCore) -> Callable[..., falcon.testing.TestClient]:
    """A falcon.testing client for the real app wired to the fake core."""

    def build(**overrides: Any) -> falcon.testing.TestClient:
        settings = settings_module.load({"core_url": CORE, **overrides}, environ={})
        return falcon.testing.TestClient(create_app(settings, build_gate(settings, transport=fake_core)))

    return build


@pytest.fixture
def client(make_client: Callable[..., falcon.testing.TestClient]) -> falcon.testing.TestClient:
    return make_client()


def v5(key: SigningKey, *, version: str = "5", header: dict[str, Any] | None = None, **changes: Any) -> str:
    """A v5 token valid for an hour; keyword changes replace claims (``None`` removes one)."""
    now_ms = int(time.time() * 1000)
    claims = v5_claims(
        user_id="user-1", session_handle="handle-1", refresh_token_hash1=sha256_hex("rt"),
        created_ms=now_ms - 1000, expiry_ms=now_ms + 3_600_000, custom={"st-role": {"v": ["admin"], "t": now_ms}},
    )
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return mint_v5(key, claims, version=version, header_overrides=header)


def v2(key: SigningKey, **changes: Any) -> str:
    """A legacy v2 token valid for an hour."""
    now_ms = int(time.time() * 1000)
    payload = v2_payload(
        user_id="legacy-user", session_handle="handle-2", refresh_token_hash1=sha256_hex("rt2"),
        created_ms=now_ms - 1000, expiry_ms=now_ms + 3_600_000, user_data={"role": "admin"},
    )
    payload.update(changes)
    return mint_v2(key, payload)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item (browser tests save artifacts on failure)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
