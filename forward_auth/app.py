"""The application factory and the one place where errors become HTTP answers."""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon

from . import pages, redirects, session_api
from .cookies import clearing_headers
from .core import CoreClient
from .decisions import DecisionRecorder
from .errors import (
    ApiKeyRefused,
    BadRequest,
    BodyTooLarge,
    CoreError,
    ForwardAuthError,
    InvalidClaims,
    PeerRefused,
    ServiceUnavailable,
    TryRefreshToken,
    Unauthorised,
    UnknownSession,
)
from .gate import Gate
from .headers import apply_headers
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


class ErrorAnswers:
    """Maps the error hierarchy to SuperTokens' statuses and bodies."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def status_and_body(self, ex: ForwardAuthError) -> tuple[int, dict[str, Any]]:
        if isinstance(ex, Unauthorised):
            return self._settings.session_expired_status, {"message": "unauthorised"}
        if isinstance(ex, TryRefreshToken):
            return self._settings.session_expired_status, {"message": "try refresh token"}
        if isinstance(ex, InvalidClaims):
            return self._settings.invalid_claim_status, {"message": "invalid claim", "claimValidationErrors": ex.errors}
        if isinstance(ex, BadRequest):
            return 413 if isinstance(ex, BodyTooLarge) else 400, {"message": ex.detail}
        if isinstance(ex, UnknownSession):
            return 404, {"status": "UNAUTHORISED", "message": "no session has this handle"}
        if isinstance(ex, ApiKeyRefused):
            return 401, {"message": "unauthorised"}
        if isinstance(ex, PeerRefused):
            return 403, {"message": "forbidden"}
        # Our own trouble: the reason only; core addresses and answers stay in the log.
        if isinstance(ex, ServiceUnavailable):
            return 503, {"message": ex.reason}
        if isinstance(ex, CoreError):
            return 502, {"message": ex.reason}
        return 500, {"message": "internal error"}

    def handle(self, req: falcon.Request, resp: falcon.Response, ex: ForwardAuthError, params: Any) -> None:
        navigation = req.context.get("navigation")
        denial = redirects.denial(ex, navigation) if navigation is not None else None
        if denial is None:
            resp.status, resp.media = self.status_and_body(ex)
        else:  # a person's browser: sent to sign in (or refresh), or a page
            resp.status = denial.status
            if denial.page is None:
                resp.set_header("Location", str(denial.location))
                resp.data = b""
            else:
                resp.data, resp.content_type = denial.page, pages.HTML
        resp.set_header("Cache-Control", "no-store")
        resp.set_header("X-Forward-Auth-Reason", ex.reason)
        if isinstance(ex, Unauthorised) and ex.clear_tokens:
            apply_headers(resp, clearing_headers(self._settings))
        if isinstance(ex, ServiceUnavailable):
            resp.set_header("Retry-After", "1")
        req.context.detail = ex.detail  # logged by the decision recorder, never sent

    def crash(self, req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
        """Our own bug: fail closed with a 500, log the traceback (never a token)."""
        log.exception("internal error on %s", req.path)
        resp.status = 500
        resp.media = {"message": "internal error"}
        resp.set_header("X-Forward-Auth-Reason", "internal-error")


def compact_json(media: Any) -> str:
    """JSON as supertokens-python writes it (no spaces), in ASCII: a token's text, whatever it
    holds (a lone surrogate too), cannot fail to encode, nor be changed by a header's trip."""
    return json.dumps(media, separators=(",", ":"))


class NginxCompat:
    """``?proxy=nginx``: what nginx ``auth_request`` cannot pass on, said in headers.

    nginx turns an auth status other than 2xx/401/403 into a 500, drops the body and copies
    only the first ``Set-Cookie``; its config re-emits these headers (see nginx.conf.example),
    and turns a navigation's redirect (401 + ``X-Forward-Auth-Location``) into the browser's 302
    or 303. The body itself is left empty.
    """

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        if req.get_param("proxy") != "nginx":
            return
        status = resp.status_code
        resp.set_header("X-Forward-Auth-Status", str(status))
        if status >= 400 and resp.media is not None:
            resp.set_header("X-Forward-Auth-Body", compact_json(resp.media))
        elif status >= 400 and resp.content_type == pages.HTML:  # a navigation's page (one ASCII line)
            resp.set_header("X-Forward-Auth-Body", resp.data.decode("ascii"))
            resp.set_header("X-Forward-Auth-Content-Type", pages.HTML)
        if 300 <= status < 400:  # a navigation's redirect
            resp.set_header("X-Forward-Auth-Location", resp.get_header("Location") or "")
            resp.delete_header("Location")
        if 300 <= status < 500 and status not in (401, 403):
            resp.status = 401
        for index, cookie in enumerate(resp.context.get("set_cookies", []), start=1):
            resp.set_header(f"X-Forward-Auth-Set-Cookie-{index}", cookie)
        # nginx reads only the headers, and closes its upstream connection after any answer with a
        # body: an empty body keeps the keep-alive pool (bench/http_bench.py: ~300 us a request).
        resp.media = None
        resp.data = b""


def _json_app(settings: Settings, middleware: list[object]) -> falcon.App:
    """A Falcon app speaking compact JSON, with the error hierarchy mapped once."""
    app = falcon.App(middleware=middleware)
    handler = falcon.media.JSONHandler(dumps=compact_json)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = handler
    answers = ErrorAnswers(settings)
    app.add_error_handler(Exception, answers.crash)
    app.add_error_handler(ForwardAuthError, answers.handle)
    return app


def create_session_api_app(settings: Settings, transport: Transport | None = None) -> falcon.App:
    """The session API alone, for ``session_api_bind`` (served by the main process)."""
    app = _json_app(settings, [])
    session_api.add_routes(app, settings, build_core(settings, transport or PooledTransport()))
    return app


def create_app(settings: Settings, gate: Gate | None = None, policies: PolicyFile | None = None) -> falcon.App:
    """The WSGI app: ``/verify``, ``/sessions/verify``, ``/healthz``, ``/readyz``, ``/metrics`` and,
    with ``session_api`` but no ``session_api_bind``, the session API.

    ``policies`` defaults to ``settings.policy_file`` (read now; an invalid file raises PolicyError).
    """
    gate = gate or build_gate(settings)
    if policies is None and settings.policy_file:
        policies = PolicyFile(settings.policy_file, every=settings.policy_reload_seconds)
    # The recorder comes last so that its process_response sees the status before NginxCompat.
    app = _json_app(settings, [NginxCompat(), DecisionRecorder()])
    if settings.session_api and settings.session_api_bind is None:
        session_api.add_routes(app, settings, gate.core)
    verify = VerifyResource(gate, policies)
    app.add_route("/verify", verify)
    app.add_route("/verify/{path:path}", verify, suffix="path")  # (no trailing-slash stripping: it is meaningful)
    app.add_route("/sessions/verify", SessionsResource(gate))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(gate))
    if settings.metrics_bind is None:  # else the gunicorn master serves it on its own address
        app.add_route("/metrics", MetricsResource())
    return app
