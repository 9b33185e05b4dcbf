"""The comparison apps of ``bench/http_bench.py``, each served by gunicorn (or, with ``--server builtin``
or ``granian``, that server, but for flask-sdk, which runs asyncio itself) with the service's settings.

    python bench/http_bench_apps.py constant  --bind 127.0.0.1:P --workers 2 --threads 4
    python bench/http_bench_apps.py flask-sdk --bind 127.0.0.1:P --workers 2 --threads 4 \
        --core-url http://127.0.0.1:C --api-key K
    python bench/http_bench_apps.py service --bind ... --core-url ... --set reuse_port=true

Each ``--set KEY=VALUE`` overrides one gunicorn setting after ``gunicorn_options`` (validated by
gunicorn itself), to try a change to the service's settings on all apps alike without editing it.

- ``constant``: a Falcon app whose ``/verify`` answers 200 ``{"message":"ok"}`` (the floor of
  Falcon + gunicorn: what ``/verify`` would cost if verifying were free), and ``/empty`` the same
  with an empty body (its floor behind nginx ``auth_request``, which keeps upstream connections
  alive only after empty answers);
- ``service``: the service itself, built per worker by ``forward_auth.server.worker_app`` exactly
  as ``forward-auth serve`` does (the benchmark uses ``forward-auth serve`` itself unless it is given
  ``--gunicorn`` or ``--what-if``);
- ``flask-sdk``: Flask with supertokens-python 0.31.4's Flask integration (``Middleware`` and
  ``verify_session()``), the way an application would verify the same sessions itself; ``/verify``
  answers the identity in headers with an empty body (its best case behind nginx ``auth_request``).

The gunicorn settings are ``forward_auth.server.gunicorn_options`` of the same ``Settings`` that
``forward-auth serve`` derives from ``--workers`` and ``FORWARD_AUTH_THREADS`` (worker class,
threads, keepalive, timeouts...), so the comparison changes the app only; the app is built in each
worker after the fork, as the service's is.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from forward_auth.settings import load


def constant_app() -> Any:
    """Falcon, any method: ``/verify`` answers 200 {"message":"ok"}, ``/empty`` 200 with no body."""
    import falcon

    class Constant:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            resp.set_header("Cache-Control", "no-store")
            resp.media = {"message": "ok"}

        on_post = on_put = on_patch = on_delete = on_head = on_options = on_get

    class Empty:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            resp.set_header("Cache-Control", "no-store")
            resp.data = b""

        on_post = on_put = on_patch = on_delete = on_head = on_options = on_get

    app = falcon.App()
    constant = Constant()
    app.add_route("/verify", constant)
    app.add_route("/healthz", constant)
    app.add_route("/empty", Empty())
    return app


def flask_sdk_app(core_url: str, api_key: str | None) -> Any:
    """Flask + supertokens-python: ``@verify_session()`` on ``/verify``, identity in headers."""
    from flask import Flask, g, jsonify, make_response
    from supertokens_python import InputAppInfo, SupertokensConfig, init
    from supertokens_python.framework.flask import Middleware
    from supertokens_python.recipe import session
    from supertokens_python.recipe.session.framework.flask import verify_session

    init(
        app_info=InputAppInfo(app_name="bench", api_domain="http://127.0.0.1",
                              website_domain="http://127.0.0.1", api_base_path="/auth"),
        supertokens_config=SupertokensConfig(connection_uri=core_url, api_key=api_key),
        framework="flask",
        # The service's default on a same-site http app (effective_anti_csrf NONE).
        recipe_list=[session.init(anti_csrf="NONE")],
        mode="wsgi",
        telemetry=False,
    )
    app = Flask("bench_flask_sdk")
    Middleware(app)

    @app.route("/verify", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
    @verify_session()
    def verify() -> Any:
        # The identity in headers and an empty body, the best case for nginx auth_request: it drops
        # an auth body anyway, and only an empty one lets it keep the upstream connection alive.
        s = g.supertokens
        resp = make_response(b"", 200)
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-User-Id"] = s.get_user_id()
        resp.headers["X-Session-Handle"] = s.get_handle()
        resp.headers["X-Tenant-Id"] = s.get_tenant_id()
        return resp

    @app.route("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    return app


def empty_nginx_bodies(app: Any) -> Any:
    """What-if (``--what-if nginx-empty-body``): the service's answers to ``?proxy=nginx`` sent with
    an empty body (status and headers unchanged). nginx drops an ``auth_request`` body anyway, and
    closes the upstream connection after any answer that has one; this shows what keep-alive gains."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if "proxy=nginx" not in environ.get("QUERY_STRING", ""):
            return app(environ, start_response)
        answer: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer[:] = [status, headers]
            return lambda data: None

        chunks = app(environ, capture)
        try:
            for _ in chunks:
                pass
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
        status, headers = answer
        start_response(status, [(k, v) for k, v in headers if k.lower() != "content-length"]
                       + [("Content-Length", "0")])
        return [b""]

    return wrapped


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any], factory: Callable[[], Any]) -> None:
        self._options = options
        self._factory = factory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._factory()


def options_for(bind: str, workers: int, threads: int, log_level: str, proc_name: str) -> dict[str, Any]:
    """The service's gunicorn options for these values (only ``proc_name`` differs)."""
    from forward_auth.server import gunicorn_options  # imported late: see main() for the service

    settings = load({"bind": bind, "workers": workers, "threads": threads, "log_level": log_level,
                     "server": "gunicorn"}, environ={})
    options = gunicorn_options(settings)
    options["proc_name"] = proc_name
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=["constant", "flask-sdk", "service"])
    parser.add_argument("--server", choices=["builtin", "gunicorn", "granian"], default="gunicorn")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--core-url")
    parser.add_argument("--api-key")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a gunicorn setting (repeatable)")
    parser.add_argument("--what-if", choices=["nginx-empty-body"], help="service only: simulate a change")
    parser.add_argument("--print-options", action="store_true", help="print the gunicorn options and exit")
    args = parser.parse_args()
    if args.app == "service":
        # As `forward-auth serve`: prometheus-client's multiprocess directory is set before the
        # client is first imported (by forward_auth.server).
        from forward_auth.cli import metrics_directory

        metrics_directory()
    options = options_for(args.bind, args.workers, args.threads, args.log_level, f"bench-{args.app}")
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set needs KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = value.strip()
    if args.print_options:
        print(json.dumps(options, default=str, sort_keys=True))
        return
    if args.app != "constant" and not args.core_url:
        parser.error(f"{args.app} needs --core-url")
    factory: Callable[[], Any]
    if args.app == "constant":
        factory = constant_app
    elif args.app == "service":
        from forward_auth.server import worker_app

        service_settings = load({"bind": args.bind, "workers": args.workers, "threads": args.threads,
                                 "log_level": args.log_level, "core_url": args.core_url,
                                 "core_api_key": args.api_key}, environ={})
        factory = functools.partial(worker_app, service_settings)
        if args.what_if == "nginx-empty-body":
            build = factory

            def factory() -> Any:
                return empty_nginx_bodies(build())
    else:
        factory = functools.partial(flask_sdk_app, args.core_url, args.api_key)
    # flask-sdk runs asyncio itself (the SDK's sync wrapper), which cannot happen on the event loop
    # that the other servers' workers decide on: it stays under gunicorn, with the same settings.
    if args.server == "builtin" and args.app != "flask-sdk":
        from forward_auth import server  # what `forward-auth serve` runs, building this app in each worker

        settings = load({"bind": args.bind, "workers": args.workers, "threads": args.threads,
                         "log_level": args.log_level, "server": "builtin"}, environ={})
        built = factory
        server.worker_app = lambda *_, **__: built()
        server.Server(settings).run()
    elif args.server == "granian" and args.app != "flask-sdk":
        from forward_auth.server import asgi_app, granian_server  # what `forward-auth serve --server granian` uses

        settings = load({"bind": args.bind, "workers": args.workers, "threads": args.threads,
                         "log_level": args.log_level}, environ={})
        wsgi_factory = factory
        granian_server(settings).serve(target_loader=lambda: asgi_app(settings, wsgi_factory()), wrap_loader=False)
    else:
        _Gunicorn(options, factory).run()


if __name__ == "__main__":
    main()
