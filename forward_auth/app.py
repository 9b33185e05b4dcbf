"""The application factory: the routes, and the error hierarchy mapped once (``answers.py``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import falcon

from . import session_api
from .answers import ErrorAnswers, compact_json, internal_error
from .core import CoreClient
from .decision_cache import DecisionCache
from .decisions import DecisionRecorder
from .endpoint import Verify, VerifyEndpoint
from .errors import ForwardAuthError
from .gate import Gate
from .jwks import JwksFetcher
from .policy import PolicyFile
from .resources import (
    HealthResource,
    MetricsResource,
    ReadyResource,
    SessionsResource,
    VerifyResource,
)
from .settings import Settings
from .transport import PooledTransport, Transport

log = logging.getLogger("forward_auth")


def build_gate(settings: Settings, transport: Transport | None = None) -> Gate:
    """Wire the gate to its network edges (one shared connection pool)."""
    transport = transport or PooledTransport()
    keys = JwksFetcher(
        settings.core_url,
        transport,
        cache_seconds=settings.jwks_cache_seconds,
        cooldown_seconds=settings.jwks_refetch_cooldown_seconds,
        max_stale_seconds=settings.jwks_max_stale_seconds,
        timeout_seconds=settings.core_timeout_seconds,
    )
    return Gate(settings, keys, build_core(settings, transport))


def build_core(settings: Settings, transport: Transport) -> CoreClient:
    """The core client of the settings (the gate's, and the session API's on its own address)."""
    return CoreClient(
        settings.core_url,
        transport,
        api_key=settings.core_api_key,
        timeout_seconds=settings.core_timeout_seconds,
        revocation_cache_seconds=settings.revocation_cache_seconds,
    )


def _handle(answers: ErrorAnswers) -> Any:
    """Falcon's handler of the error hierarchy: the one mapping of ``answers.py``."""
    def handle(req: falcon.Request, resp: falcon.Response, ex: ForwardAuthError, params: Any) -> None:
        answers.apply(resp, ex, None)
        req.context.detail = ex.detail  # logged by the decision recorder, never sent
    return handle


def _crash(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
    """Our own bug: fail closed with a 500, log the traceback (never a token)."""
    log.exception("internal error on %s", req.path)
    internal_error(resp)


def _json_app(settings: Settings, middleware: list[object]) -> falcon.App:
    """A Falcon app speaking compact JSON, with the error hierarchy mapped once."""
    app = falcon.App(middleware=middleware)
    handler = falcon.media.JSONHandler(dumps=compact_json)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.add_error_handler(Exception, _crash)
    app.add_error_handler(ForwardAuthError, _handle(ErrorAnswers(settings)))
    return app


def create_session_api_app(settings: Settings, transport: Transport | None = None) -> falcon.App:
    """The session API alone, for ``session_api_bind`` (served by the main process)."""
    app = _json_app(settings, [])
    session_api.add_routes(app, settings, build_core(settings, transport or PooledTransport()))
    return app


class Service(NamedTuple):
    """The WSGI app, and the ``/verify`` endpoint it serves (which the ASGI adapter calls without Falcon)."""

    app: falcon.App
    verify: Verify

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self.app(environ, start_response)


def create_service(settings: Settings, gate: Gate | None = None, policies: PolicyFile | None = None) -> Service:
    """The WSGI app: ``/verify``, ``/sessions/verify``, ``/healthz``, ``/readyz``, ``/metrics`` and,
    with ``session_api`` but no ``session_api_bind``, the session API. ``/verify`` answers from
    the decision cache first (``decision_cache_seconds``).

    ``policies`` defaults to ``settings.policy_file`` (read now; an invalid file raises PolicyError).
    """
    gate = gate or build_gate(settings)
    if policies is None and settings.policy_file:
        policies = PolicyFile(settings.policy_file, every=settings.policy_reload_seconds)
    endpoint: Verify = VerifyEndpoint(gate, policies)
    if settings.decision_cache_seconds > 0:  # never with tracing (settings.validate)
        endpoint = DecisionCache(endpoint, settings.decision_cache_seconds, now=gate.now,
                                 policy=policies.current if policies is not None else lambda: None)
    app = _json_app(settings, [DecisionRecorder()])
    if settings.session_api and settings.session_api_bind is None:
        session_api.add_routes(app, settings, gate.core)
    verify = VerifyResource(endpoint)
    app.add_route("/verify", verify)
    app.add_route("/verify/{path:path}", verify, suffix="path")  # (no trailing-slash stripping: it is meaningful)
    app.add_route("/sessions/verify", SessionsResource(gate))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(gate))
    if settings.metrics_bind is None:  # else the gunicorn master serves it on its own address
        app.add_route("/metrics", MetricsResource())
    return Service(app, endpoint)


def create_app(settings: Settings, gate: Gate | None = None, policies: PolicyFile | None = None) -> falcon.App:
    """The Falcon app of :func:`create_service`."""
    return create_service(settings, gate, policies).app
