"""The core client: request shape, answer translation, failover, revocation cache."""

from __future__ import annotations

import json
import time

import pytest
from conftest import CORE, FakeCore, ManualClock

from forward_auth.core import CoreClient
from forward_auth.errors import CoreError, CoreUnavailable, TryRefreshToken, Unauthorised
from forward_auth.transport import Reply

OK = {"status": "OK", "session": {"handle": "h", "userId": "u", "recipeUserId": "r", "userDataInJWT": {"a": 1},
                                  "tenantId": "public"}}
FAR = (time.time() + 3600) * 1000


def verify(client: CoreClient, token: str = "tok", **kwargs) -> object:  # noqa: ANN003
    args = {"anti_csrf_token": None, "do_anti_csrf_check": False, "enable_anti_csrf": False,
            "check_database": True, "token_expiry_ms": FAR, **kwargs}
    return client.verify_session(token, **args)


def test_request_has_the_sdk_shape_and_headers(fake_core: FakeCore) -> None:
    seen = {}

    def capture(method: str, url: str, headers: dict, body: bytes | None) -> Reply:
        seen.update(url=url, headers=headers, body=json.loads(body or b"{}"))
        return Reply(200, {}, json.dumps(OK).encode())

    fake_core.override = capture
    session = verify(CoreClient([CORE + "/appid-a"], fake_core, api_key="k"), anti_csrf_token="c",
                     do_anti_csrf_check=True, enable_anti_csrf=True)
    assert seen["url"] == CORE + "/appid-a/recipe/session/verify"
    assert seen["headers"]["cdi-version"] == "5.4" and seen["headers"]["api-key"] == "k"
    assert seen["headers"]["rid"] == "session"
    assert seen["body"] == {"accessToken": "tok", "doAntiCsrfCheck": True, "enableAntiCsrf": True,
                            "checkDatabase": True, "antiCsrfToken": "c"}
    assert (session.user_id, session.recipe_user_id, session.user_data_in_jwt) == ("u", "r", {"a": 1})


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"status": "UNAUTHORISED", "message": "gone"}, Unauthorised),
        ({"status": "TRY_REFRESH_TOKEN", "message": "x"}, TryRefreshToken),
        ({"status": "WHAT"}, CoreError),
        ([1, 2], CoreError),
        ({"status": "OK"}, CoreError),
        ({"status": "OK", "session": {"handle": 1, "userId": "u"}}, CoreError),
    ],
)
def test_answers_translate_to_the_hierarchy(fake_core: FakeCore, answer: object, error: type) -> None:
    fake_core.override = lambda *a: Reply(200, {}, json.dumps(answer).encode())
    with pytest.raises(error):
        verify(CoreClient([CORE], fake_core))


def test_unauthorised_from_core_clears_tokens(fake_core: FakeCore) -> None:
    fake_core.verify_answer = {"status": "UNAUTHORISED", "message": "gone"}
    with pytest.raises(Unauthorised) as info:
        verify(CoreClient([CORE], fake_core))
    assert info.value.clear_tokens is True


@pytest.mark.parametrize(("status", "body", "error"), [(401, b"Invalid API key", CoreError),
                                                        (400, b"bad", CoreError), (200, b"<html>", CoreError),
                                                        (500, b"", CoreUnavailable), (429, b"", CoreUnavailable)])
def test_http_failures(fake_core: FakeCore, status: int, body: bytes, error: type) -> None:
    fake_core.override = lambda *a: Reply(status, {}, body)
    with pytest.raises(error):
        verify(CoreClient([CORE], fake_core))


def test_failover_to_the_next_core(fake_core: FakeCore) -> None:
    def first_down(method: str, url: str, headers: dict, body: bytes | None) -> Reply:
        return Reply(502, {}, b"") if "dead" in url else Reply(200, {}, json.dumps(OK).encode())

    fake_core.override = first_down
    assert verify(CoreClient(["http://dead:1", CORE], fake_core)).handle == "h"


def test_unreachable_cores_are_unavailable(fake_core: FakeCore) -> None:
    fake_core.down = True
    with pytest.raises(CoreUnavailable, match="no SuperTokens core answered"):
        verify(CoreClient([CORE, "http://other:1"], fake_core))
    assert len(fake_core.requests) == 2


def test_revocation_cache_is_bounded_by_time_and_token_expiry(fake_core: FakeCore) -> None:
    fake_core.verify_answer = OK
    clock = ManualClock(1_000_000.0)
    client = CoreClient([CORE], fake_core, revocation_cache_seconds=30, clock=clock)
    verify(client, token_expiry_ms=(clock.now + 3600) * 1000)
    clock.now += 29
    verify(client, token_expiry_ms=(clock.now + 3600) * 1000)
    assert fake_core.count("/verify") == 1
    clock.now += 2
    verify(client, token_expiry_ms=(clock.now + 3600) * 1000)
    assert fake_core.count("/verify") == 2  # past the 30 s cap
    verify(client, "short-lived", token_expiry_ms=(clock.now + 5) * 1000)
    clock.now += 4
    verify(client, "short-lived", token_expiry_ms=(clock.now + 1) * 1000)
    assert fake_core.count("/verify") == 3  # cached until the token's own expiry...
    clock.now += 2
    verify(client, "short-lived", token_expiry_ms=(clock.now + 1) * 1000)
    assert fake_core.count("/verify") == 4  # ...and not after it


def test_a_cached_revocation_is_raised_afresh_each_time(fake_core: FakeCore) -> None:
    fake_core.verify_answer = {"status": "UNAUTHORISED", "message": "gone"}
    client = CoreClient([CORE], fake_core, revocation_cache_seconds=30)
    raised = []
    for _ in range(3):
        with pytest.raises(Unauthorised) as info:
            verify(client)
        raised.append(info.value)
    assert len({id(e) for e in raised}) == 3 and all(e.clear_tokens for e in raised)


def test_revocation_is_cached_too_and_off_by_default(fake_core: FakeCore) -> None:
    fake_core.verify_answer = {"status": "UNAUTHORISED", "message": "gone"}
    cached = CoreClient([CORE], fake_core, revocation_cache_seconds=30)
    for _ in range(2):
        with pytest.raises(Unauthorised):
            verify(cached)
    assert fake_core.count("/verify") == 1
    uncached = CoreClient([CORE], fake_core)
    for _ in range(2):
        with pytest.raises(Unauthorised):
            verify(uncached)
    assert fake_core.count("/verify") == 3
