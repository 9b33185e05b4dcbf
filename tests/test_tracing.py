"""OpenTelemetry: the caller's trace continued, a span per decision and per core request, never a token."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FakeCore, v5
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from forward_auth import server, tracing
from forward_auth import settings as settings_module
from forward_auth.devcore.minter import SigningKey

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"
CORE_OK = {"status": "OK", "session": {"handle": "handle-1", "userId": "user-1", "recipeUserId": "user-1",
                                       "userDataInJWT": {}, "tenantId": "public"}}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every span kept in memory."""
    spans = InMemorySpanExporter()
    tracing.start(SimpleSpanProcessor(spans))
    yield spans
    tracing.stop()


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in spans.get_finished_spans() if span.name == name]


def test_a_decision_continues_the_callers_trace_and_its_core_request_is_a_child(
        make_client, fake_core: FakeCore, key: SigningKey, exporter: InMemorySpanExporter) -> None:
    fake_core.verify_answer = CORE_OK
    result = make_client().simulate_get("/verify", params={"checkDatabase": "true"},
                                        headers={"traceparent": TRACEPARENT, "Cookie": "sAccessToken=" + v5(key),
                                                 "X-Request-Id": "req-7"})
    assert result.status_code == 200
    [decision] = named(exporter, "GET /verify")
    assert decision.kind == SpanKind.SERVER
    assert format(decision.context.trace_id, "032x") == TRACE_ID
    assert decision.parent is not None and decision.parent.is_remote
    assert format(decision.parent.span_id, "016x") == CALLER_SPAN_ID
    assert dict(decision.attributes or {}) == {
        "forward_auth.outcome": "allow", "forward_auth.reason": "ok", "http.response.status_code": 200,
        "forward_auth.request": "GET /verify", "user.id": "user-1", "forward_auth.tenant_id": "public",
        "forward_auth.request_id": "req-7",
    }
    assert decision.status.status_code == StatusCode.UNSET
    [core] = named(exporter, "POST /recipe/session/verify")
    assert core.kind == SpanKind.CLIENT
    assert core.context.trace_id == decision.context.trace_id
    assert core.parent is not None and core.parent.span_id == decision.context.span_id
    assert dict(core.attributes or {}) == {"forward_auth.endpoint": "/recipe/session/verify",
                                           "forward_auth.outcome": "200"}
    [jwks] = named(exporter, "GET /.well-known/jwks.json")  # the first request loads the keys
    assert jwks.parent is not None and jwks.parent.span_id == decision.context.span_id
    assert jwks.attributes is not None and jwks.attributes["forward_auth.outcome"] == "ok"


def test_without_a_traceparent_a_decision_starts_a_trace(client, exporter: InMemorySpanExporter) -> None:
    assert client.simulate_get("/verify").status_code == 401
    [decision] = named(exporter, "GET /verify")
    assert decision.parent is None
    attributes = decision.attributes or {}
    assert (attributes["forward_auth.outcome"], attributes["forward_auth.reason"]) == ("deny", "no-token")
    assert attributes["http.response.status_code"] == 401 and "user.id" not in attributes


def test_a_policy_rule_and_a_denial_are_named(make_client, tmp_path: Path, key: SigningKey,
                                              exporter: InMemorySpanExporter) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: [{name: admin, match: {path_prefix: /admin/},"
                      " claims: [{claim: st-role, includes: root}]}]\n")
    client = make_client(policy_file=str(policy))
    result = client.simulate_get("/verify", headers={"Cookie": "sAccessToken=" + v5(key),
                                                     "X-Forwarded-Uri": "/admin/x?secret=1"})
    assert result.status_code == 403
    attributes = named(exporter, "GET /verify")[0].attributes or {}
    assert attributes["forward_auth.rule"] == "admin" and attributes["forward_auth.outcome"] == "deny"
    assert attributes["forward_auth.reason"] == result.headers["X-Forward-Auth-Reason"]
    assert attributes["forward_auth.request"] == "GET /admin/x"  # never the query string


def test_our_own_trouble_marks_the_spans(make_client, fake_core: FakeCore, key: SigningKey,
                                         exporter: InMemorySpanExporter) -> None:
    client = make_client(check_database="true")
    assert client.simulate_get("/readyz").status_code == 200  # keys loaded; then the core goes away
    fake_core.down = True
    assert client.simulate_get("/verify", headers={"Cookie": "sAccessToken=" + v5(key)}).status_code == 503
    [decision] = named(exporter, "GET /verify")
    assert decision.status.status_code == StatusCode.ERROR and decision.status.description == "core-unavailable"
    assert (decision.attributes or {})["forward_auth.outcome"] == "error"
    [core] = named(exporter, "POST /recipe/session/verify")
    assert (core.attributes or {})["forward_auth.outcome"] == "unreachable"


def test_envoy_path_and_sessions_api_have_their_spans(client, key: SigningKey,
                                                      exporter: InMemorySpanExporter) -> None:
    client.simulate_get("/verify/some/path", headers={"Authorization": "Bearer " + v5(key)})
    client.simulate_post("/sessions/verify", json={"accessToken": v5(key)}, headers={"traceparent": TRACEPARENT})
    assert len(named(exporter, "GET /verify/{path}")) == 1
    [api] = named(exporter, "POST /sessions/verify")
    assert format(api.context.trace_id, "032x") == TRACE_ID
    assert (api.attributes or {})["user.id"] == "user-1"


def test_no_span_holds_a_token_cookie_or_anti_csrf_value(make_client, fake_core: FakeCore, key: SigningKey,
                                                         exporter: InMemorySpanExporter) -> None:
    fake_core.verify_answer = CORE_OK
    client = make_client(anti_csrf="VIA_TOKEN")
    cookie_token = v5(key, sub="c", antiCsrfToken="csrf-secret")
    header_token, bad = v5(key, sub="h"), v5(key, sub="x") + "tampered"
    answers = [
        client.simulate_post("/verify", params={"checkDatabase": "true"},
                             headers={"Cookie": f"sAccessToken={cookie_token}; sRefreshToken=refresh-secret",
                                      "anti-csrf": "csrf-secret", "traceparent": TRACEPARENT}),
        client.simulate_get("/verify", headers={"Authorization": "Bearer " + header_token}),
        client.simulate_get("/verify", headers={"Cookie": "sAccessToken=" + bad}),
        client.simulate_post("/sessions/verify", json={"accessToken": cookie_token, "antiCsrfToken": "csrf-secret",
                                                       "doAntiCsrfCheck": True}),
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 401, 200]
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["GET /.well-known/jwks.json", "POST /recipe/session/verify",
                                             "POST /verify", "GET /verify", "GET /verify", "POST /sessions/verify"]
    everything = json.dumps([json.loads(span.to_json()) for span in spans])
    secrets = [*cookie_token.split("."), *header_token.split("."), *bad.split("."), "refresh-secret", "csrf-secret"]
    assert [secret for secret in secrets if secret in everything] == []


def test_tracing_off_records_nothing(client, key: SigningKey) -> None:
    spans = InMemorySpanExporter()
    tracing.start(SimpleSpanProcessor(spans))
    tracing.stop()
    assert client.simulate_get("/verify", headers={"Cookie": "sAccessToken=" + v5(key)}).status_code == 200
    assert spans.get_finished_spans() == ()
    assert tracing.decision_span("GET /verify", lambda _: TRACEPARENT, {}) is tracing.NO_SPAN


def test_a_worker_starts_tracing_only_when_the_setting_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "configure_logging", lambda *_: None)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    base = {"core_url": "http://127.0.0.1:9", "core_timeout_seconds": "0.2"}
    server.worker_app(settings_module.load(base, environ={}))
    assert tracing.decision_span("GET /verify", lambda _: None, {}) is tracing.NO_SPAN
    try:
        server.worker_app(settings_module.load({**base, "tracing": "true"}, environ={}))
        span = tracing.decision_span("GET /verify", lambda _: None, {})
        assert span is not tracing.NO_SPAN
        span.end()
    finally:
        tracing.stop()


def test_tracing_needs_an_installed_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert settings_module.load({"tracing": "true"}, environ={}).tracing is True
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,jaeger")  # (its exporter package is retired)
    with pytest.raises(settings_module.SettingsError) as info:
        settings_module.load({"tracing": "true"}, environ={})
    assert info.value.name == "tracing" and "OTEL_TRACES_EXPORTER names 'jaeger'" in str(info.value)


def test_without_opentelemetry_the_service_works_and_tracing_is_refused(
        monkeypatch: pytest.MonkeyPatch, client, key: SigningKey) -> None:
    for name in [n for n in sys.modules if n.split(".")[0] == "opentelemetry"] + ["opentelemetry.sdk.trace"]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if the extra were not installed
    assert tracing.unavailable() == "needs the otel extra: pip install 'forward-auth[otel]'"
    with pytest.raises(settings_module.SettingsError) as info:
        settings_module.load({"tracing": "true"}, environ={})
    assert str(info.value) == ("invalid setting tracing=True: needs the otel extra: "
                               "pip install 'forward-auth[otel]'")
    assert client.simulate_get("/verify", headers={"Cookie": "sAccessToken=" + v5(key)}).status_code == 200
    with tracing.core_span("POST", "/recipe/session/verify") as span:
        assert span is tracing.NO_SPAN


def test_opentelemetry_is_not_even_imported_while_tracing_is_off() -> None:
    code = """
import sys
import falcon.testing
from forward_auth import settings
from forward_auth.app import create_app
client = falcon.testing.TestClient(create_app(settings.load({"core_url": "http://127.0.0.1:9"}, environ={})))
assert client.simulate_get("/verify").status_code == 401
assert client.simulate_get("/metrics").status_code == 200
print(sorted(n for n in sys.modules if n.startswith("opentelemetry")))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_a_request_handed_to_the_core_pool_leaves_no_span_open_or_current(
        fake_core: FakeCore, key: SigningKey, exporter: InMemorySpanExporter) -> None:
    """Under granian a request first tried on the event loop and decided again on the core pool
    ends its first span (marked so) and detaches it: the next request's span is no child of it."""
    from opentelemetry import trace
    from test_asgi import OK_SESSION, at, lean, serve, service

    fake_core.verify_answer = OK_SESSION
    app = lean(service(fake_core))
    assert serve(app, at(v5(key), b"checkDatabase=true"))[0] == 200
    assert not trace.get_current_span().get_span_context().is_valid  # nothing left current on the loop
    handed, decided = named(exporter, "GET /verify")
    assert dict(handed.attributes or {})["forward_auth.outcome"] == "handed-to-core-pool"
    assert dict(decided.attributes or {})["forward_auth.outcome"] == "allow"
    assert serve(app, at(v5(key)))[0] == 200
    assert named(exporter, "GET /verify")[-1].parent is None
