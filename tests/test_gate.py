"""The gate's verified-signature cache: verify once, never past exp, off when size is 0."""

from __future__ import annotations

import time

import pytest
from conftest import CORE, FakeCore, ManualClock, v5
from prometheus_client import REGISTRY

from forward_auth import credentials, settings, signature, token, verifier
from forward_auth.app import build_gate
from forward_auth.devcore.minter import SigningKey
from forward_auth.errors import TryRefreshToken
from forward_auth.gate import VERIFIED_TTL_CAP, Gate


def gate(fake_core: FakeCore, clock: ManualClock, **overrides: str) -> Gate:
    built = build_gate(settings.load({"core_url": CORE, **overrides}, environ={}), transport=fake_core)
    return Gate(built.settings, built.keys, built.core, now=clock)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = signature.verify_signature

    def counting(tok: token.AccessToken, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        calls.append(tok.raw)
        real(tok, *args, **kwargs)

    monkeypatch.setattr(signature, "verify_signature", counting)
    return calls


def creds(raw: str) -> credentials.Credentials:
    return credentials.Credentials(method="GET", uri="/", cookie_token=raw)


def test_a_token_is_verified_once(fake_core: FakeCore, key: SigningKey, counted: list[str]) -> None:
    clock = ManualClock(time.time())
    subject = gate(fake_core, clock)
    raw = v5(key)
    for _ in range(3):
        assert subject.verify(creds(raw), verifier.Policy()).user_id == "user-1"
    assert len(counted) == 1


def test_a_remembered_token_still_expires(fake_core: FakeCore, key: SigningKey, counted: list[str]) -> None:
    clock = ManualClock(time.time())
    subject = gate(fake_core, clock)
    raw = v5(key, exp=int(clock.now) + 60)
    subject.verify(creds(raw), verifier.Policy())
    clock.now += 61
    with pytest.raises(TryRefreshToken, match="expired"):
        subject.verify(creds(raw), verifier.Policy())


def test_bad_signatures_are_never_remembered(fake_core: FakeCore, foreign_key: SigningKey, counted: list[str]) -> None:
    subject = gate(fake_core, ManualClock(time.time()), jwks_refetch_cooldown_seconds="3600")
    for _ in range(2):
        with pytest.raises(TryRefreshToken):
            subject.verify(creds(v5(foreign_key)), verifier.Policy())
    assert len(counted) == 2


def test_the_cache_can_be_turned_off(fake_core: FakeCore, key: SigningKey, counted: list[str]) -> None:
    subject = gate(fake_core, ManualClock(time.time()), verified_cache_size="0")
    raw = v5(key)
    subject.verify(creds(raw), verifier.Policy())
    subject.verify(creds(raw), verifier.Policy())
    assert len(counted) == 2


def test_a_remembered_signature_is_checked_again_after_the_cap(
        fake_core: FakeCore, key: SigningKey, counted: list[str]) -> None:
    clock = ManualClock(time.time())
    subject = gate(fake_core, clock)
    raw = v5(key, exp=int(clock.now) + 3600)
    subject.verify(creds(raw), verifier.Policy())
    clock.now += VERIFIED_TTL_CAP - 1
    subject.verify(creds(raw), verifier.Policy())
    assert len(counted) == 1
    clock.now += 2
    subject.verify(creds(raw), verifier.Policy())
    assert len(counted) == 2


def test_the_memory_is_bounded(fake_core: FakeCore, key: SigningKey, counted: list[str]) -> None:
    subject = gate(fake_core, ManualClock(time.time()), verified_cache_size="2")
    first, second, third = (v5(key, sub=f"user-{n}") for n in range(3))
    for raw in (first, second, third, third, first):
        subject.verify(creds(raw), verifier.Policy())
    assert counted == [first, second, third, first]  # the least recently used one was forgotten


def test_a_signature_hit_is_counted_once_for_the_token_used(fake_core: FakeCore, key: SigningKey) -> None:
    subject = gate(fake_core, ManualClock(time.time()))
    bearer, cookie = v5(key, sub="user-b"), v5(key, sub="user-c")
    subject.verify(credentials.Credentials(method="GET", uri="/", authorization=f"Bearer {bearer}"), verifier.Policy())
    subject.verify(creds(cookie), verifier.Policy())
    both = credentials.Credentials(method="GET", uri="/", cookie_token=cookie, authorization=f"Bearer {bearer}")
    before = hits()
    assert subject.verify(both, verifier.Policy()).user_id == "user-b"
    assert hits() == before + 1


def hits() -> float:
    return REGISTRY.get_sample_value("forward_auth_cache_total", {"cache": "signature", "result": "hit"}) or 0.0
