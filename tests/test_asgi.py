"""The ASGI layer under granian: the environ it builds, and core calls kept off the event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conftest import CORE, FakeCore, v5
from prometheus_client import REGISTRY

from forward_auth import settings as settings_module
from forward_auth.app import Service, build_gate, create_service
from forward_auth.asgi import ASGIApp
from forward_auth.decision_cache import DecisionCache
from forward_auth.devcore.minter import SigningKey
from forward_auth.endpoint import Answer, Incoming, Verify, VerifyEndpoint
from forward_auth.transport import Reply


def scope(method: str, raw_path: bytes, headers: list[tuple[str, bytes]], query: bytes = b"",
          client: tuple[str, int] | None = ("127.0.0.1", 40000)) -> dict[str, Any]:
    """An ASGI HTTP scope as granian builds it: header names lower-cased, values as sent."""
    return {"type": "http", "http_version": "1.1", "method": method, "scheme": "http",
            "path": raw_path.decode("latin-1"), "raw_path": raw_path, "query_string": query,
            "headers": [(name.lower().encode(), value) for name, value in headers],
            "server": ("127.0.0.1", 8080), "client": client}


class Exchange:
    """receive() hands out the body in chunks; send() keeps the answer."""

    def __init__(self, body: bytes = b"") -> None:
        self._chunks = [body[i:i + 3] for i in range(0, len(body), 3)] or [b""]
        self.messages: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        chunk = self._chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self._chunks)}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def answer(self) -> tuple[int, dict[str, str], bytes] | None:
        if len(self.messages) < 2:
            return None
        start, body = self.messages
        return start["status"], {k.decode().lower(): v.decode("latin-1") for k, v in start["headers"]}, body["body"]


def serve(app: ASGIApp, request: dict[str, Any], body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    exchange = Exchange(body)
    asyncio.run(app(request, exchange.receive, exchange.send))
    assert exchange.answer is not None
    return exchange.answer


def echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/json"), ("X-Body", "usér".encode().decode("latin-1"))])
    shown = {k: v for k, v in environ.items() if isinstance(v, str)}
    shown["body"] = environ["wsgi.input"].read().decode()
    return [json.dumps(shown).encode()]


def test_header_names_with_underscores_are_dropped_and_repeats_joined() -> None:
    app = ASGIApp(echo, core_concurrency=1, core_queue=1)
    request = scope("POST", b"/verify/caf%C3%A9%2Fx", [
        ("X-Forwarded-Uri", b"/admin/x"), ("X_Forwarded_Uri", b"/public/x"), ("Cookie", b"a=1"), ("Cookie", b"b=2"),
        ("Accept", b"text/html"), ("Accept", b"*/*"), ("Content-Type", b"application/json"), ("Content-Length", b"7"),
    ], query=b"policy=x")
    status, headers, body = serve(app, request, b'{"a":1}')
    environ = json.loads(body)
    assert status == 200 and headers["x-body"].encode("latin-1") == "usér".encode()  # the bytes the app meant
    assert environ["HTTP_X_FORWARDED_URI"] == "/admin/x"
    assert environ["HTTP_COOKIE"] == "a=1; b=2" and environ["HTTP_ACCEPT"] == "text/html,*/*"
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"], environ["body"]) == ("application/json", "7", '{"a":1}')
    assert "HTTP_CONTENT_TYPE" not in environ
    assert environ["PATH_INFO"] == "/verify/caf\u00c3\u00a9/x"  # decoded once, its bytes as latin-1, as gunicorn
    assert (environ["QUERY_STRING"], environ["REMOTE_ADDR"], environ["REQUEST_METHOD"]) == ("policy=x", "127.0.0.1",
                                                                                            "POST")


def test_header_values_that_are_not_ascii_reach_the_app_as_sent() -> None:
    """A raw UTF-8 byte in nginx's X-Original-URI, or in a cookie beside the token, is kept (as
    latin-1 text, as under any WSGI server): granian's RSGI layer left such headers out."""
    app = ASGIApp(echo, core_concurrency=1, core_queue=1)
    raw = "/admin/é".encode()
    environ = json.loads(serve(app, scope("GET", b"/verify", [("X-Original-URI", raw),
                                                               ("Cookie", b"pref=caf\xc3\xa9; sAccessToken=t")],
                                          client=None))[2])
    assert environ["HTTP_X_ORIGINAL_URI"].encode("latin-1") == raw
    assert environ["HTTP_COOKIE"].endswith("; sAccessToken=t")
    assert environ["REMOTE_ADDR"] == ""  # a unix socket: a local peer


class ThreadRecorder:
    """A ``/verify`` endpoint around another that records the thread each call ran on."""

    def __init__(self, verify: Verify) -> None:
        self.verify, self.threads = verify, []

    def __call__(self, incoming: Incoming) -> Answer:
        self.threads.append(threading.current_thread().name)
        return self.verify(incoming)


def service(fake_core: FakeCore, **overrides: str) -> Service:
    settings = settings_module.load({"core_url": CORE, "check_database": "false", **overrides}, environ={})
    gate = build_gate(settings, transport=fake_core)
    gate.keys.keys()  # as a worker does at start
    return create_service(settings, gate)


def lean(svc: Service, verify: Verify | None = None, concurrency: int = 1, queue: int = 1) -> ASGIApp:
    """As ``serve`` runs it: ``/verify`` straight from the endpoint (``verify``: the service's own)."""
    return ASGIApp(svc, verify=verify or svc.verify, core_concurrency=concurrency, core_queue=queue)


def at(token: str, query: bytes = b"") -> dict[str, Any]:
    return scope("GET", b"/verify", [("X-Forwarded-Uri", b"/api/x"), ("Cookie", f"sAccessToken={token}".encode())],
                 query)


OK_SESSION = {"status": "OK", "session": {"handle": "handle-1", "userId": "user-1", "userDataInJWT": {},
                                          "tenantId": "public"}}


def test_local_verification_stays_on_the_loop_and_core_calls_go_to_the_pool(fake_core: FakeCore,
                                                                             key: SigningKey) -> None:
    fake_core.verify_answer = OK_SESSION
    svc = service(fake_core)
    recorder = ThreadRecorder(svc.verify)
    app = lean(svc, recorder, concurrency=2, queue=4)
    token = v5(key)
    for _ in range(2):
        status, headers, _ = serve(app, at(token))
        assert (status, headers["x-user-id"]) == (200, "user-1")
    assert recorder.threads == [threading.current_thread().name] * 2  # no core: decided on the loop, once
    status, headers, _ = serve(app, at(token, b"checkDatabase=true"))
    assert (status, headers["x-user-id"]) == (200, "user-1")
    assert recorder.threads[2:] == [threading.current_thread().name, recorder.threads[3]]
    assert recorder.threads[3].startswith("forward-auth-core")  # decided again where it may wait
    assert fake_core.count("/recipe/session/verify") == 1


def test_a_request_handed_to_the_pool_counts_one_decision_cache_miss(fake_core: FakeCore, key: SigningKey) -> None:
    fake_core.verify_answer = OK_SESSION
    svc = service(fake_core)
    assert isinstance(svc.verify, DecisionCache)  # on by default
    app = lean(svc)
    labels = {"cache": "decision", "result": "miss"}
    before = REGISTRY.get_sample_value("forward_auth_cache_total", labels) or 0.0
    assert serve(app, at(v5(key), b"checkDatabase=true"))[0] == 200
    assert REGISTRY.get_sample_value("forward_auth_cache_total", labels) == before + 1


def test_the_same_request_as_sent_is_replayed_at_the_edge_and_any_other_decided(fake_core: FakeCore,
                                                                                key: SigningKey) -> None:
    settings = settings_module.load({"core_url": CORE}, environ={})
    gate = build_gate(settings, transport=fake_core)
    gate.keys.keys()
    svc = create_service(settings, gate)
    inner = ThreadRecorder(VerifyEndpoint(gate))
    app = lean(svc, DecisionCache(inner, 60, now=gate.now))
    token = f"sAccessToken={v5(key)}".encode()
    headers = [("X-Forwarded-Uri", b"/api/x"), ("Cookie", b"a=1; " + token)]
    hits = REGISTRY.get_sample_value("forward_auth_cache_total", {"cache": "decision", "result": "hit"}) or 0.0

    first = serve(app, scope("GET", b"/verify", [*headers, ("X-Request-Id", b"one")]))
    again = serve(app, scope("GET", b"/verify", [("X-Request-Id", b"two"), *headers]))

    assert len(inner.threads) == 1
    assert REGISTRY.get_sample_value("forward_auth_cache_total", {"cache": "decision", "result": "hit"}) == hits + 1
    assert (first[0], first[1].pop("x-request-id"), again[1].pop("x-request-id")) == (200, "one", "two")
    assert again == first and first[1]["x-user-id"] == "user-1"
    others = [
        [headers[0], ("Cookie", b"a=1"), ("Cookie", token)],  # the same cookies, in two headers
        [*headers, ("X_Forwarded_Uri", b"/public/x")],         # a name the gate drops
        [headers[1], ("X-Forwarded-Uri", b"/api/y")],
    ]
    for other in others:
        assert serve(app, scope("GET", b"/verify", other))[0] == 200
    assert serve(app, scope("HEAD", b"/verify", headers))[0] == 200
    assert serve(app, scope("GET", b"/verify", headers, client=("127.0.0.2", 1)))[0] == 200
    assert serve(app, scope("GET", b"/verify", headers, query=b"sessionRequired=false"))[0] == 200
    assert len(inner.threads) == 7  # each decided afresh


def test_a_hung_core_fills_the_pool_and_its_queue_then_503_core_busy_while_local_requests_pass(
        fake_core: FakeCore, key: SigningKey) -> None:
    release = threading.Event()

    def hung(method: str, url: str, headers: dict[str, str], body: bytes | None) -> Reply:
        if url.endswith("/recipe/session/verify"):
            release.wait(10)
            return Reply(200, {}, json.dumps({"status": "UNAUTHORISED", "message": "revoked"}).encode())
        return Reply(200, {}, json.dumps(fake_core.jwks).encode())

    fake_core.override = hung
    app = lean(service(fake_core))
    token = v5(key)

    async def scenario() -> list[Any]:
        exchanges = [Exchange() for _ in range(3)]
        waiting = [asyncio.ensure_future(app(at(token, b"checkDatabase=true"), e.receive, e.send)) for e in exchanges]
        await asyncio.sleep(0.2)  # two handed to the pool (one calling the core, one queued), the third refused
        local = Exchange()
        await app(at(token), local.receive, local.send)
        refused = [e.answer for e in exchanges if e.answer is not None]
        release.set()
        await asyncio.gather(*waiting)
        return [local.answer, refused, [e.answer[0] for e in exchanges if e.answer]]

    local, refused, statuses = asyncio.run(scenario())
    assert local[0] == 200 and local[1]["x-user-id"] == "user-1"
    assert [(status, headers["x-forward-auth-reason"]) for status, headers, _ in refused] == [(503, "core-busy")]
    assert sorted(statuses) == [401, 401, 503]  # the core's answer once released: revoked
    assert fake_core.count("/recipe/session/verify") == 2


def _sent(app: ASGIApp, request: dict[str, Any], body: bytes = b"") -> tuple[int, list[tuple[str, str]], bytes]:
    """The answer as sent, but its request id and Content-Length (granian counts the body itself)."""
    exchange = Exchange(body)
    asyncio.run(app(request, exchange.receive, exchange.send))
    start, sent = exchange.messages
    headers = sorted((k.decode().lower(), v.decode("latin-1")) for k, v in start["headers"]
                     if k.lower() not in (b"x-request-id", b"content-length"))
    return start["status"], headers, sent["body"]


def test_verify_without_falcon_answers_exactly_as_through_falcon(fake_core: FakeCore, key: SigningKey) -> None:
    """``/verify`` straight from the ASGI scope gives, header for header, the answer that the
    WSGI environ and Falcon give: the same headers read (underscored names dropped, repeats
    joined, bytes as latin-1, a unix socket a local peer) and the same answer written."""
    fake_core.verify_answer = OK_SESSION
    svc = service(fake_core, login_url="https://example.com/login", trusted_proxies="127.0.0.1/32")
    token = v5(key).encode()
    cookie = ("Cookie", b"sAccessToken=" + token)
    cases: list[tuple[dict[str, Any], bytes]] = [
        (scope("GET", b"/verify", [("X-Original-URI", b"/api/x"), ("X-Original-Method", b"GET"), cookie]), b""),
        (scope("GET", b"/verify", [cookie]), b""),  # a person with curl: JSON
        (scope("GET", b"/verify", [("X-Original-URI", b"/api/x"), ("Cookie", b"sAccessToken=garbage")],
               b"proxy=nginx"), b""),
        (scope("GET", b"/verify", [("X-Forwarded-Uri", b"/api/x")], b"proxy=nginx&sessionRequired=false"), b""),
        (scope("GET", b"/verify", [("X-Forwarded-Uri", b"/api/x"), ("X_Forwarded_Uri", b"/other"), ("Cookie", b"a=1"),
                                   cookie]), b""),
        (scope("GET", b"/verify", [("X-Original-URI", "/caf\u00e9/x".encode()), cookie], client=None), b""),
        (scope("POST", b"/verify", [("X-Forwarded-Method", b"POST"), ("X-Forwarded-Uri", b"/api/x"), cookie,
                                    ("Content-Length", b"5")], b"antiCsrf=true"), b"hello"),
        (scope("GET", b"/verify", [("X-Forwarded-Uri", b"/app/page"), ("Sec-Fetch-Mode", b"navigate"),
                                   ("Sec-Fetch-Dest", b"document"), ("Host", b"example.com")]), b""),
        (scope("HEAD", b"/verify", [cookie]), b""),
        (scope("GET", b"/verify", [("Host", b"a"), ("Host", b"b"), cookie]), b""),
        (scope("GET", b"/verify", [("X-Forwarded-Uri", b"/a;b/x"), cookie]), b""),
    ]
    through_falcon = ASGIApp(svc, core_concurrency=1, core_queue=1)
    statuses = set()
    for request, body in cases:
        answer = _sent(lean(svc), request, body)
        assert answer == _sent(through_falcon, request, body), request["headers"]
        assert _sent(lean(svc), request, body) == answer  # again: replayed by the decision cache, or decided again
        statuses.add(answer[0])
    assert statuses == {200, 302, 400, 401}  # the cases reach each kind of answer


def test_verify_spelled_with_more_slashes_is_the_same_route_judged_on_the_forwarded_request(
        fake_core: FakeCore, key: SigningKey, tmp_path: Path) -> None:
    """Falcon routes ``//verify`` and ``/%2Fverify`` (an auth URL built from a base ending in
    ``/``) to ``/verify``: the forwarded URI and method are read there too, never the spelling."""
    fake_core.verify_answer = OK_SESSION
    policy = tmp_path / "policy.yaml"
    policy.write_text("default: {session: required}\nrules:\n  - name: admin\n    match: {path_prefix: /admin/}\n"
                      "    claims:\n      - {claim: st-role, includes: root}\n")
    svc = service(fake_core, trusted_proxies="127.0.0.1/32", policy_file=str(policy))
    cookie = ("Cookie", f"sAccessToken={v5(key)}".encode())
    for app in (lean(svc), ASGIApp(svc, core_concurrency=1, core_queue=1)):
        for raw in (b"/verify", b"//verify", b"/%2Fverify"):
            status, headers, _ = _sent(app, scope("GET", raw, [("X-Forwarded-Uri", b"/admin/x"), cookie]))
            assert (status, dict(headers)["x-forward-auth-rule"]) == (403, "admin"), raw
            status, headers, _ = _sent(app, scope("GET", raw, [("X-Forwarded-Method", b"POST"),
                                                               ("X-Forwarded-Uri", b"/api/x"), cookie]))
            assert status == 200 and "x-user-id" in dict(headers), raw  # a POST, decided as one
        for raw in (b"/verify/admin/x", b"//verify/admin/x"):
            assert _sent(app, scope("GET", raw, [cookie]))[0] == 403, raw


def test_methods_without_a_responder_and_a_repeated_proxy_parameter_answer_as_through_falcon(
        fake_core: FakeCore, key: SigningKey) -> None:
    fake_core.verify_answer = OK_SESSION
    svc = service(fake_core)
    cookie = ("Cookie", f"sAccessToken={v5(key)}".encode())
    through_falcon = ASGIApp(svc, core_concurrency=1, core_queue=1)
    for method, expected in (("TRACE", 405), ("PROPFIND", 405), ("get", 400), ("FOO", 400)):
        request = scope(method, b"/verify", [cookie])
        assert _sent(lean(svc), request)[0] == _sent(through_falcon, request)[0] == expected, method
    for query in (b"proxy=nginx&proxy=nginx", b"proxy=traefik&proxy=nginx"):  # the last one counts
        request = scope("GET", b"/verify", [("X-Original-URI", b"/api/x"), ("Cookie", b"sAccessToken=garbage")], query)
        status, headers, body = _sent(lean(svc), request)
        assert (status, dict(headers).get("x-forward-auth-status"), body) == (401, "401", b""), query


def test_sessions_verify_spelled_with_more_slashes_is_the_same_route(fake_core: FakeCore, key: SigningKey) -> None:
    svc = service(fake_core)
    body = json.dumps({"accessToken": v5(key)}).encode()
    for raw in (b"/sessions/verify", b"//sessions/verify"):
        request = scope("POST", raw, [("Content-Type", b"application/json"), ("Content-Length", str(len(body)).encode())])
        status, _, answer = _sent(ASGIApp(svc, core_concurrency=1, core_queue=1), request, body)
        assert (status, json.loads(answer)["status"]) == (200, "OK"), raw  # its decision recorded, no 500


def test_the_envoy_path_is_judged_as_sent(fake_core: FakeCore, key: SigningKey, tmp_path: Path) -> None:
    """``/verify/<path>``: the policy decodes the client's path once, as it does a forwarded URI,
    so bytes that are no UTF-8 (an overlong ``.``) and an encoded ``/`` are refused, not lost in
    the server's own decoding; a UTF-8 path is decoded once."""
    fake_core.verify_answer = OK_SESSION
    policy = tmp_path / "policy.yaml"
    policy.write_text("default: {session: required}\nrules:\n  - name: admin\n    match: {path_prefix: /admin/}\n"
                      "    claims:\n      - {claim: st-role, includes: root}\n")
    app = ASGIApp(service(fake_core, policy_file=str(policy)), core_concurrency=1, core_queue=1)
    cookie = ("Cookie", f"sAccessToken={v5(key)}".encode())
    for raw in (b"/verify/%C0%AE%C0%AE/admin/x", b"/verify/a%2Fb/x", b"/verify/admin%2Fx"):
        status, headers, _ = _sent(app, scope("GET", raw, [cookie]))
        assert (status, dict(headers)["x-forward-auth-reason"]) == (400, "ambiguous-path"), raw
    status, headers, _ = _sent(app, scope("GET", b"/verify/admin/caf%C3%A9", [cookie]))
    assert (status, dict(headers)["x-forward-auth-rule"]) == (403, "admin")
    assert _sent(app, scope("GET", b"/verify/api/x", [cookie]))[0] == 200
    status, headers, _ = _sent(app, scope("GET", b"/verify/api/x", [], b"proxy=nginx"))  # the client's query
    assert status == 401 and "x-forward-auth-status" not in dict(headers)


def test_a_replay_echoes_the_request_id_a_decision_would(fake_core: FakeCore, key: SigningKey) -> None:
    """Two ``X-Request-Id`` headers are joined as any other repeat (``a,b``), by the decision and
    by its replay alike."""
    app = lean(service(fake_core))
    cookie = ("Cookie", f"sAccessToken={v5(key)}".encode())
    for ids, echoed in (([("X-Request-Id", b"a"), ("X-Request-Id", b"b")], "a,b"),
                        ([("X-Request-Id", b"a"), ("X-Request-Id", b"")], "a,")):
        answers = [serve(app, scope("GET", b"/verify", [cookie, *ids]))[1] for _ in range(2)]
        assert [headers["x-request-id"] for headers in answers] == [echoed, echoed]
