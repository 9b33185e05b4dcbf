"""The JWKS fetcher: freshness, rotation, cooldown, single flight, stale-if-error."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import CORE, FakeCore

from forward_auth.devcore.minter import SigningKey
from forward_auth.errors import KeysUnavailable
from forward_auth.jwks import JwksFetcher, max_age, parse_jwks
from forward_auth.transport import Reply, TransportError


class Timer:
    """A clock that only moves when told (as cachetools' own tests do)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def fetcher(core: FakeCore, timer: Timer, **kwargs) -> JwksFetcher:  # noqa: ANN003
    return JwksFetcher([CORE], core, clock=timer, **kwargs)


def test_cache_honours_max_age_below_the_ceiling(fake_core: FakeCore) -> None:
    timer = Timer()
    fake_core.jwks_headers = {"cache-control": "max-age=60, must-revalidate"}
    keys = fetcher(fake_core, timer, cache_seconds=600)
    keys.keys()
    timer.tick(59)
    keys.keys()
    assert fake_core.count("jwks.json") == 1
    timer.tick(2)
    keys.keys()
    assert fake_core.count("jwks.json") == 2


def test_ceiling_caps_a_long_max_age(fake_core: FakeCore) -> None:
    timer = Timer()
    fake_core.jwks_headers = {"cache-control": "max-age=100000"}
    keys = fetcher(fake_core, timer, cache_seconds=30)
    keys.keys()
    timer.tick(31)
    keys.keys()
    assert fake_core.count("jwks.json") == 2


def test_rotation_unknown_kid_refetches_once_per_cooldown(fake_core: FakeCore, key: SigningKey) -> None:
    timer = Timer()
    keys = fetcher(fake_core, timer, cooldown_seconds=0.5)
    keys.keys()
    rotated = SigningKey.generate("d-1800000000000")
    fake_core.jwks = {"keys": [key.public_jwk(), rotated.public_jwk()]}
    timer.tick(1)
    assert keys.key_for(rotated.kid) is not None
    assert keys.key_for("d-404") is None  # within the cooldown: no fetch
    assert fake_core.count("jwks.json") == 2
    timer.tick(1)
    assert keys.key_for("d-404") is None
    assert fake_core.count("jwks.json") == 3


def test_failed_refresh_keeps_the_last_good_keys_within_staleness(fake_core: FakeCore, key: SigningKey) -> None:
    timer = Timer()
    keys = fetcher(fake_core, timer, cache_seconds=60, max_stale_seconds=300)
    keys.keys()
    fake_core.down = True
    timer.tick(61)
    assert keys.key_for(key.kid) is not None
    assert keys.status()["usable"] is True and keys.status()["last_fetch_failed"] is True
    assert "NewConnectionError" in str(keys.last_error)  # for the log, not for /readyz
    timer.tick(300)
    with pytest.raises(KeysUnavailable):
        keys.keys()
    assert keys.status()["usable"] is False


def test_garbage_answer_does_not_replace_the_cache(fake_core: FakeCore, key: SigningKey) -> None:
    timer = Timer()
    keys = fetcher(fake_core, timer, cache_seconds=60)
    keys.keys()
    fake_core.override = lambda *a: Reply(200, {}, b"<html>oops</html>")
    timer.tick(61)
    assert keys.key_for(key.kid) is not None


def test_no_keys_ever_is_keys_unavailable(fake_core: FakeCore) -> None:
    fake_core.down = True
    with pytest.raises(KeysUnavailable):
        fetcher(fake_core, Timer()).keys()


def test_cores_are_tried_in_order(fake_core: FakeCore, key: SigningKey) -> None:
    def first_down(method: str, url: str, headers: dict, body: bytes | None) -> Reply:
        if url.startswith("http://dead"):
            return Reply(503, {}, b"")
        return Reply(200, {}, json.dumps(fake_core.jwks).encode())

    fake_core.override = first_down
    keys = JwksFetcher(["http://dead:1", "http://alive:2/appid-x"], fake_core, clock=Timer())
    assert keys.key_for(key.kid) is not None
    assert [url for _, url, _ in fake_core.requests] == [
        "http://dead:1/.well-known/jwks.json", "http://alive:2/appid-x/.well-known/jwks.json"]


def test_concurrent_unknown_kids_share_one_fetch(fake_core: FakeCore, key: SigningKey) -> None:
    keys = JwksFetcher([CORE], fake_core, cooldown_seconds=0.0)
    keys.keys()
    gate = threading.Event()

    def slow(method: str, url: str, headers: dict, body: bytes | None) -> Reply:
        gate.wait(2)
        return Reply(200, {}, json.dumps(fake_core.jwks).encode())

    fake_core.override = slow
    threads = [threading.Thread(target=keys.key_for, args=("d-unknown",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    gate.set()
    for thread in threads:
        thread.join()
    assert fake_core.count("jwks.json") == 2  # the start-up fetch and one shared refetch


def test_parse_jwks_keeps_only_rs256_signing_keys(key: SigningKey) -> None:
    other = [{"kty": "EC", "kid": "e"}, {**key.public_jwk(), "kid": "enc", "use": "enc"},
             {**key.public_jwk(), "kid": "hs", "alg": "HS256"}, {"kty": "RSA", "kid": "broken", "n": "!", "e": "AQAB"}]
    keys = parse_jwks(json.dumps({"keys": [key.public_jwk(), *other]}).encode())
    assert list(keys) == [key.kid]
    with pytest.raises(ValueError):
        parse_jwks(json.dumps({"keys": other}).encode())


@pytest.mark.parametrize(("header", "seconds"), [("max-age=60, must-revalidate", 60), ("public,MAX-AGE=5", 5),
                                                 ("no-cache", None), (None, None)])
def test_max_age(header: str | None, seconds: float | None) -> None:
    assert max_age(header) == seconds


def test_during_an_outage_waiting_callers_share_one_failed_fetch(fake_core: FakeCore, key: SigningKey) -> None:
    """A hanging core costs one timeout, not one per waiting thread."""
    keys = JwksFetcher([CORE], fake_core, cache_seconds=0.1, cooldown_seconds=0.1, max_stale_seconds=600)
    keys.keys()
    time.sleep(0.15)  # the keys are stale now; the fetch below hangs longer than the cooldown

    def hanging(method: str, url: str, headers: dict, body: bytes | None) -> Reply:
        time.sleep(0.3)
        raise TransportError("timed out")

    fake_core.override = hanging
    found: list[object] = []
    threads = [threading.Thread(target=lambda: found.append(keys.key_for(key.kid))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 6 and all(k is not None for k in found)  # stale keys served to everybody
    assert fake_core.count("jwks.json") == 2  # the start-up fetch and one failed refetch


def test_expired_keys_with_a_fetch_in_flight_are_served_stale_on_the_loop() -> None:
    """On granian's event loop an expired key set whose refetch is already running (or not due)
    gives the last good keys at once, instead of handing every request to the core pool."""
    from forward_auth.blocking import INLINE, WouldBlock, no_waiting

    key = SigningKey.generate("d-2")
    clock = [1000.0]
    core = FakeCore(jwks={"keys": [key.public_jwk()]}, jwks_headers={"cache-control": "max-age=10"})
    fetcher = JwksFetcher([CORE], core, cache_seconds=10, cooldown_seconds=5, max_stale_seconds=600,
                          clock=lambda: clock[0])
    assert fetcher.key_for("d-2") is not None
    clock[0] += 11  # expired; the last attempt was 11 s ago: a fetch is due
    with no_waiting(INLINE):
        with pytest.raises(WouldBlock):
            fetcher.keys()
        with fetcher._fetch_lock:  # another thread is fetching
            assert fetcher.key_for("d-2") is not None
    assert core.count("/.well-known/jwks.json") == 1
