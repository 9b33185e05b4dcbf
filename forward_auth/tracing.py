"""OpenTelemetry spans, when the ``otel`` extra is installed and the ``tracing`` setting is on.

One server span per decision (``/verify``, ``/verify/{path}``, ``/sessions/verify``), continuing
the caller's W3C ``traceparent``, and one client span per request to the core, its child.
Attributes say the outcome, reason, status, rule and user: never a token, cookie or anti-CSRF
value. opentelemetry is imported only by :func:`start`; until then (and without the extra)
every span here is :data:`NO_SPAN`, which does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

EXPORTER_GROUP = "opentelemetry_traces_exporter"  # the SDK's entry points: `console`; `otlp` with its package
Attributes = Mapping[str, str | int | None]


def _exporter_names() -> list[str]:
    """``OTEL_TRACES_EXPORTER`` as the SDK reads it: comma-separated, ``otlp`` by default, ``none`` for none."""
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
    return [name.strip() for name in names if name.strip() and name.strip() != "none"]


def _exporter_entry_points() -> list[Any]:
    """The exporters named, found but not imported (validation runs in the master, before forks)."""
    found_all = []
    for name in _exporter_names():
        found = entry_points(group=EXPORTER_GROUP, name=name)
        if not found:
            hint = "pip install opentelemetry-exporter-otlp" if name.startswith("otlp") else "install its package"
            raise LookupError(f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed ({hint}, "
                              "or set OTEL_TRACES_EXPORTER=console)")
        found_all.append(next(iter(found)))
    return found_all


def _exporter_classes() -> list[Callable[[], Any]]:
    return [entry_point.load() for entry_point in _exporter_entry_points()]


def unavailable() -> str | None:
    """Why tracing cannot start in this environment, or ``None`` when it can."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return "needs the otel extra: pip install 'forward-auth[otel]'"
    try:
        _exporter_entry_points()
    except LookupError as exc:
        return str(exc)
    return None


class _Tracer:
    """The opentelemetry pieces in use: a tracer provider of our own and the global propagator."""

    def __init__(self, processors: list[SpanProcessor]) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider

        resource = Resource.create({"service.name": "forward-auth"}).merge(OTELResourceDetector().detect())
        self.provider = TracerProvider(resource=resource)
        for processor in processors:
            self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("forward_auth")
        self.context, self.propagate, self.trace = context, propagate, trace


_active: _Tracer | None = None


def start(processor: SpanProcessor | None = None) -> None:
    """Trace from now on in this process (a worker): spans go to ``processor`` (tests), else in
    batches to the exporters ``OTEL_TRACES_EXPORTER`` names (each configured by its own ``OTEL_*``)."""
    global _active
    stop()
    if processor is None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        processors: list[SpanProcessor] = [BatchSpanProcessor(exporter()) for exporter in _exporter_classes()]
    else:
        processors = [processor]
    _active = _Tracer(processors)


def active() -> bool:
    """Whether spans are being recorded in this process."""
    return _active is not None


def stop() -> None:
    """Export what is pending and stop tracing."""
    global _active
    if _active is not None:
        _active.provider.shutdown()
        _active = None


class Span:
    """A started span, current until :meth:`end`; :data:`NO_SPAN` when tracing is off."""

    def __init__(self, otel: _Tracer | None = None, span: Any = None, token: object = None) -> None:
        self._otel, self._span, self._token = otel, span, token

    def set(self, attributes: Attributes) -> None:
        """Record the attributes, leaving ``None`` values out."""
        if self._span is not None:
            self._span.set_attributes({name: value for name, value in attributes.items() if value is not None})

    def fail(self, reason: str) -> None:
        """Mark the span as our own trouble."""
        if self._otel is not None:
            self._span.set_status(self._otel.trace.Status(self._otel.trace.StatusCode.ERROR, reason))

    def end(self) -> None:
        if self._otel is not None:
            self._span.end()
            self._otel.context.detach(self._token)


NO_SPAN = Span()


def decision_span(name: str, header: Callable[[str], str | None], attributes: Attributes) -> Span:
    """The server span of one decision, the child of the caller's trace context (read from the
    propagator's headers: ``traceparent`` and ``tracestate`` by default), made current."""
    otel = _active
    if otel is None:
        return NO_SPAN
    propagator = otel.propagate.get_global_textmap()
    carrier = {field: value for field in propagator.fields if (value := header(field)) is not None}
    return _begin(otel, name, otel.trace.SpanKind.SERVER, attributes, propagator.extract(carrier))


@contextmanager
def core_span(method: str, endpoint: str) -> Iterator[Span]:
    """The client span of one request to the core, the child of the current (decision) span."""
    otel = _active
    if otel is None:
        yield NO_SPAN
        return
    span = _begin(otel, f"{method} {endpoint}", otel.trace.SpanKind.CLIENT, {"forward_auth.endpoint": endpoint}, None)
    try:
        yield span
    finally:
        span.end()


def _begin(otel: _Tracer, name: str, kind: Any, attributes: Attributes, parent: Any) -> Span:
    span = otel.tracer.start_span(name, context=parent, kind=kind)
    started = Span(otel, span, otel.context.attach(otel.trace.set_span_in_context(span, parent)))
    started.set(attributes)
    return started
