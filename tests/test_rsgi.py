"""The RSGI layer under granian: the environ it builds, and core calls kept off the event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable
from typing import Any

from conftest import CORE, FakeCore, v5

from forward_auth import settings as settings_module
from forward_auth.app import build_gate, create_app
from forward_auth.devcore.minter import SigningKey
from forward_auth.rsgi import RSGIApp
from forward_auth.transport import Reply


class Headers:
    """RSGI's header mapping: lower-case names, one item per value, in the order sent."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = [(name.lower(), value) for name, value in items]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        return any(key == name for key, _ in self._items)


class Scope:
    proto = "http"
    http_version = "1.1"
    server = "127.0.0.1:8080"
    client = "127.0.0.1:40000"
    scheme = "http"

    def __init__(self, method: str, path: str, headers: list[tuple[str, str]], query: str = "") -> None:
        self.method, self.path, self.query_string, self.headers = method, path, query, Headers(headers)


class Protocol:
    """Hands out the body in chunks and keeps the answer."""

    def __init__(self, body: bytes = b"") -> None:
        self._chunks = [body[i:i + 3] for i in range(0, len(body), 3)]
        self.answer: tuple[int, dict[str, str], bytes] | None = None

    def __aiter__(self) -> Protocol:
        return self

    async def __anext__(self) -> bytes:
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.pop(0)

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.answer = (status, {name.lower(): value for name, value in headers}, body)


def serve(app: RSGIApp, scope: Scope, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    protocol = Protocol(body)
    asyncio.run(app.__rsgi__(scope, protocol))
    assert protocol.answer is not None
    return protocol.answer


def echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/json"), ("X-Body", "usér".encode().decode("latin-1"))])
    shown = {k: v for k, v in environ.items() if isinstance(v, str)}
    shown["body"] = environ["wsgi.input"].read().decode()
    return [json.dumps(shown).encode()]


def test_header_names_with_underscores_are_dropped_and_repeats_joined() -> None:
    app = RSGIApp(echo, core_concurrency=1, core_queue=1)
    scope = Scope("POST", "/verify/caf\u00e9", [
        ("X-Forwarded-Uri", "/admin/x"), ("X_Forwarded_Uri", "/public/x"), ("Cookie", "a=1"), ("Cookie", "b=2"),
        ("Accept", "text/html"), ("Accept", "*/*"), ("Content-Type", "application/json"), ("Content-Length", "7"),
    ], query="policy=x")
    status, headers, body = serve(app, scope, b'{"a":1}')
    environ = json.loads(body)
    assert status == 200 and headers["x-body"] == "usér"  # the UTF-8 bytes the app meant, once
    assert environ["HTTP_X_FORWARDED_URI"] == "/admin/x"
    assert environ["HTTP_COOKIE"] == "a=1; b=2" and environ["HTTP_ACCEPT"] == "text/html,*/*"
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"], environ["body"]) == ("application/json", "7", '{"a":1}')
    assert "HTTP_CONTENT_TYPE" not in environ
    assert environ["PATH_INFO"] == "/verify/caf\u00c3\u00a9"  # PEP 3333: the path's UTF-8 bytes as latin-1
    assert (environ["QUERY_STRING"], environ["REMOTE_ADDR"], environ["REQUEST_METHOD"]) == ("policy=x", "127.0.0.1",
                                                                                            "POST")


class ThreadRecorder:
    """A WSGI app around another that records the thread each call ran on."""

    def __init__(self, app: Any) -> None:
        self.app, self.threads = app, []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.threads.append(threading.current_thread().name)
        return self.app(environ, start_response)


def service(fake_core: FakeCore, **overrides: str) -> Any:
    settings = settings_module.load({"core_url": CORE, "check_database": "false", **overrides}, environ={})
    gate = build_gate(settings, transport=fake_core)
    gate.keys.keys()  # as a worker does at start
    return create_app(settings, gate)


def at(token: str, query: str = "") -> Scope:
    return Scope("GET", "/verify", [("X-Forwarded-Uri", "/api/x"), ("Cookie", f"sAccessToken={token}")], query)


def test_local_verification_stays_on_the_loop_and_core_calls_go_to_the_pool(fake_core: FakeCore,
                                                                             key: SigningKey) -> None:
    fake_core.verify_answer = {"status": "OK", "session": {"handle": "handle-1", "userId": "user-1",
                                                           "userDataInJWT": {}, "tenantId": "public"}}
    recorder = ThreadRecorder(service(fake_core))
    app = RSGIApp(recorder, core_concurrency=2, core_queue=4)
    token = v5(key)
    for _ in range(2):
        status, headers, _ = serve(app, at(token))
        assert (status, headers["x-user-id"]) == (200, "user-1")
    assert recorder.threads == [threading.current_thread().name] * 2  # no core: decided on the loop, once
    status, headers, _ = serve(app, at(token, "checkDatabase=true"))
    assert (status, headers["x-user-id"]) == (200, "user-1")
    assert recorder.threads[2:] == [threading.current_thread().name, recorder.threads[3]]
    assert recorder.threads[3].startswith("forward-auth-core")  # decided again where it may wait
    assert fake_core.count("/recipe/session/verify") == 1


def test_a_hung_core_fills_the_pool_and_its_queue_then_503_core_busy_while_local_requests_pass(
        fake_core: FakeCore, key: SigningKey) -> None:
    release = threading.Event()

    def hung(method: str, url: str, headers: dict[str, str], body: bytes | None) -> Reply:
        if url.endswith("/recipe/session/verify"):
            release.wait(10)
            return Reply(200, {}, json.dumps({"status": "UNAUTHORISED", "message": "revoked"}).encode())
        return Reply(200, {}, json.dumps(fake_core.jwks).encode())

    fake_core.override = hung
    app = RSGIApp(service(fake_core), core_concurrency=1, core_queue=2)
    token = v5(key)

    async def scenario() -> list[Any]:
        protocols = [Protocol() for _ in range(3)]
        waiting = [asyncio.ensure_future(app.__rsgi__(at(token, "checkDatabase=true"), p)) for p in protocols]
        await asyncio.sleep(0.2)  # two handed to the pool (one calling, one queued), the third refused
        local = Protocol()
        await app.__rsgi__(at(token), local)
        refused = [p.answer for p in protocols if p.answer is not None]
        release.set()
        await asyncio.gather(*waiting)
        return [local.answer, refused, [p.answer[0] for p in protocols if p.answer]]

    local, refused, statuses = asyncio.run(scenario())
    assert local[0] == 200 and local[1]["x-user-id"] == "user-1"
    assert [(status, headers["x-forward-auth-reason"]) for status, headers, _ in refused] == [(503, "core-busy")]
    assert sorted(statuses) == [401, 401, 503]  # the core's answer once released: revoked
    assert fake_core.count("/recipe/session/verify") == 2
