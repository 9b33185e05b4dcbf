"""One record per decision: a metric sample, a log line (JSON or text) and a span, never a token.

The record holds the outcome, the reason, the original method and path (no query string), the
user and tenant the token proved, the policy rule, the latency and a request id (the caller's
``X-Request-Id`` or a new one, echoed back).
"""

from __future__ import annotations

import functools
import http
import json
import logging
import random
import time
from typing import Any

import falcon

from . import metrics, tracing

log = logging.getLogger("forward_auth.decisions")
DECIDING_PATHS = ("/verify", "/sessions/verify")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a decision's fields if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "decision", {}))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)  # ASCII: a lone surrogate in a user id writes to any stream


def configure_logging(level: str, fmt: str) -> None:
    """Root logging to stderr in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class DecisionRecorder:
    """Falcon middleware around the deciding resources."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        req.context.request_id = request_id(req.env.get("HTTP_X_REQUEST_ID"))
        if tracing.active() and _deciding(req.path):
            route = "/verify/{path}" if req.path.startswith("/verify/") else req.path
            req.context.span = tracing.decision_span(f"{req.method} {route}", req.get_header,
                                                     {"forward_auth.request_id": req.context.request_id})

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        if not _deciding(req.path) or not hasattr(req.context, "started"):
            return
        span: tracing.Span = req.context.get("span", tracing.NO_SPAN)
        try:
            self._record(req, resp, span)
        finally:
            span.end()

    @staticmethod
    def _record(req: falcon.Request, resp: falcon.Response, span: tracing.Span) -> None:
        elapsed = time.perf_counter() - req.context.started
        status = resp.status_code
        outcome = "allow" if status < 300 else "deny" if status < 500 else "error"
        reason = resp.get_header("X-Forward-Auth-Reason") or req.context.get("allow_reason") or _http_reason(status)
        resp.set_header("X-Request-Id", req.context.request_id)
        original = req.context.get("original", req.path)
        record = {
            "outcome": outcome, "status": status, "reason": reason, "request": original,
            "user_id": req.context.get("user_id"), "tenant_id": req.context.get("tenant_id"),
            "rule": resp.get_header("X-Forward-Auth-Rule"), "request_id": req.context.request_id,
        }
        if span is not tracing.NO_SPAN:
            span.set({"forward_auth.outcome": outcome, "forward_auth.reason": reason,
                      "http.response.status_code": status, "forward_auth.request": original,
                      "forward_auth.rule": record["rule"], "user.id": record["user_id"],
                      "forward_auth.tenant_id": record["tenant_id"]})
            if outcome == "error":
                span.fail(reason)
        record_decision(record, elapsed, req.context.get("detail"))


def request_id(supplied: str | None) -> str:
    """The caller's ``X-Request-Id`` when it is printable (at most 128 characters), else a new one."""
    supplied = (supplied or "")[:128]
    return supplied if supplied.isprintable() and supplied else f"{random.getrandbits(128):032x}"


def record_decision(record: dict[str, Any], elapsed: float, detail: str | None = None) -> None:
    """Count the decision and log its line (allowed at debug, denied at info, our own errors at
    warning); ``record`` holds its fields but the latency, added here."""
    outcome = record["outcome"]
    _decisions(outcome, record["reason"]).inc()
    metrics.DECISION_SECONDS.observe(elapsed)
    level = logging.WARNING if outcome == "error" else logging.INFO if outcome == "deny" else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    record["latency_ms"] = round(elapsed * 1000, 3)
    text = f"{'deny' if outcome != 'allow' else 'allow'} {record['status']} {record['request']}: {record['reason']}"
    log.log(level, text + (f" ({detail})" if detail else ""), extra={"decision": record})


@functools.lru_cache(maxsize=256)
def _decisions(outcome: str, reason: str) -> Any:
    """The decision counter's child for these labels (the client's own lookup costs ~5 us)."""
    return metrics.DECISIONS.labels(outcome=outcome, reason=reason)


@functools.lru_cache(maxsize=64)
def _http_reason(status: int) -> str:
    """The reason of an answer no decision gave (Falcon's own 404, 405...): ``method-not-allowed``."""
    try:
        return http.HTTPStatus(status).phrase.lower().replace(" ", "-")
    except ValueError:
        return f"http-{status}"


def _deciding(path: str) -> bool:
    return path in DECIDING_PATHS or path.startswith("/verify/")

