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
from collections.abc import Callable
from typing import Any

import falcon

from . import metrics, tracing

log = logging.getLogger("forward_auth.decisions")
SESSIONS_PATH = "/sessions/verify"


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


class Decision:
    """The record of one decision, filled in while it is made and written once by :meth:`finish`:
    a metric sample, a log line and a span (the child of the caller's trace context)."""

    __slots__ = ("started", "request_id", "span", "original", "user_id", "tenant_id", "allow_reason", "detail")

    def __init__(self, header: Callable[[str], str | None], name: str, path: str) -> None:
        """``header`` reads the request's headers by lower-case name; ``name`` is the span's (``GET /verify``)."""
        self.started = time.perf_counter()
        self.request_id = request_id(header("x-request-id"))
        self.span = (tracing.decision_span(name, header, {"forward_auth.request_id": self.request_id})
                     if tracing.active() else tracing.NO_SPAN)
        self.original = path  # the original method and path, once known
        self.user_id: str | None = None
        self.tenant_id: str | None = None
        self.allow_reason: str | None = None
        self.detail: str | None = None  # an error's detail: logged, never sent

    def abandon(self) -> None:
        """The decision is made again elsewhere (on the worker's core pool): end this span, record nothing."""
        self.span.set({"forward_auth.outcome": "handed-to-core-pool"})
        self.span.end()

    def finish(self, status: int, reason: str | None, rule: str | None) -> None:
        """Record the answer: its status, its ``X-Forward-Auth-Reason`` and the rule's name."""
        try:
            elapsed = time.perf_counter() - self.started
            outcome = "allow" if status < 300 else "deny" if status < 500 else "error"
            reason = reason or self.allow_reason or _http_reason(status)
            def fields() -> dict[str, Any]:
                return {"request": self.original, "user_id": self.user_id, "tenant_id": self.tenant_id,
                        "rule": rule, "request_id": self.request_id}

            span = self.span
            if span is not tracing.NO_SPAN:
                span.set({"forward_auth.outcome": outcome, "forward_auth.reason": reason,
                          "http.response.status_code": status, "forward_auth.request": self.original,
                          "forward_auth.rule": rule, "user.id": self.user_id, "forward_auth.tenant_id": self.tenant_id})
                if outcome == "error":
                    span.fail(reason)
            record_decision(outcome, status, reason, elapsed, fields, self.detail)
        finally:
            self.span.end()


class DecisionRecorder:
    """Falcon middleware around ``POST /sessions/verify`` (``/verify`` records its own)."""

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object, params: object) -> None:
        if req.uri_template == SESSIONS_PATH:  # the route, however it was spelled (``//sessions/verify``)
            req.context.decision = Decision(req.get_header, f"{req.method} {SESSIONS_PATH}", SESSIONS_PATH)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        decision: Decision | None = req.context.get("decision")
        if decision is None:
            return
        decision.detail = req.context.get("detail")
        resp.set_header("X-Request-Id", decision.request_id)
        decision.finish(resp.status_code, resp.get_header("X-Forward-Auth-Reason"), None)


def request_id(supplied: str | None) -> str:
    """The caller's ``X-Request-Id`` when it is printable (at most 128 characters), else a new one."""
    supplied = (supplied or "")[:128]
    return supplied if supplied.isprintable() and supplied else f"{random.getrandbits(128):032x}"


def record_decision(outcome: str, status: int, reason: str, elapsed: float, fields: Callable[[], dict[str, Any]],
                    detail: str | None = None, *, also: tuple[Any, ...] = ()) -> None:
    """Count the decision (and ``also``, more counters' children) and log its line (allowed at
    debug, denied at info, our own errors at warning); ``fields()`` gives the line's other fields
    (``request`` among them), asked for only when the line is written."""
    metrics.TALLY.count(_decisions(outcome, reason), *also, seconds=elapsed)
    level = logging.WARNING if outcome == "error" else logging.INFO if outcome == "deny" else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    record = {"outcome": outcome, "status": status, "reason": reason, **fields(), "latency_ms": round(elapsed * 1000, 3)}
    text = f"{'deny' if outcome != 'allow' else 'allow'} {status} {record['request']}: {reason}"
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
