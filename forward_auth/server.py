"""The servers of ``forward-auth serve``, run programmatically with the validated settings: the
built-in one (the default: gunicorn's master, :mod:`forward_auth.worker`'s workers), gunicorn's
gthread workers, or granian. All build the same app per worker and reload the policy on SIGHUP."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.util
import os
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from . import metrics, tracing
from .app import Service, build_gate, create_service, create_session_api_app
from .asgi import ASGIApp, WSGIApp
from .decisions import configure_logging
from .errors import ForwardAuthError
from .listener import Listener
from .policy import PolicyFile, PolicySet
from .settings import Settings, SettingsError
from .worker import Shares

log = logging.getLogger("forward_auth")

#: Long SuperTokens cookies must reach us; nginx's own limit (8k per line) applies before.
LIMIT_REQUEST_FIELD_SIZE = 32768
#: How long a stopping worker may finish what it holds (gunicorn's ``graceful_timeout`` too).
GRACEFUL_TIMEOUT_SECONDS = 10


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """The gunicorn settings derived from ours (also used by ``gunicorn.conf.py``)."""
    return {
        "bind": [settings.bind],
        "workers": settings.workers,
        "worker_class": "forward_auth.worker.Worker" if settings.server == "builtin" else "gthread",
        "threads": settings.threads,
        "timeout": 30,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "keepalive": 75,
        "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
        "loglevel": settings.log_level,
        "errorlog": "-",
        "proc_name": "forward-auth",
        # gunicorn 27's control socket, one path per user ($HOME/.gunicorn/gunicorn.ctl): every
        # instance on the host would take it over, and it is a management interface nobody asked for.
        "control_socket_disable": True,
    }


def worker_app(settings: Settings, policy: PolicySet | None = None,
               reloads: Callable[[], int] | None = None) -> WSGIApp:
    """Build the app in a worker and load the signing keys before the first request.

    ``policy`` is the master's last good policy: a worker started by a reload with a broken
    policy file keeps serving it (the file is watched and picked up once it is fixed).
    ``reloads`` counts SIGHUPs under granian: a change re-reads the policy file at once.
    """
    configure_logging(settings.log_level, settings.log_format)
    if os.environ.get(metrics.MULTIPROC_ENV):  # several workers: each writes its counts once a second
        metrics.TALLY.start()
    if settings.tracing:
        tracing.start()
    gate = build_gate(settings)
    try:
        gate.keys.keys()
    except ForwardAuthError as exc:
        log.warning("signing keys not loaded at start: %s", exc)
    policies = None
    if settings.policy_file:  # a broken file is logged by the main process, once, when it has one
        policies = PolicyFile(settings.policy_file, every=settings.policy_reload_seconds, initial=policy,
                              reloads=reloads, quiet=policy is not None)
        if reloads is not None:  # a worker that outlives reloads looks even while no request comes
            _watched(policies, settings.policy_reload_seconds or 1.0, lambda _: None)
    return create_service(settings, gate, policies)


def _watched(file: PolicyFile, every: float, keep: Callable[[PolicySet], None]) -> None:
    """Look at the policy file every ``every`` s on a daemon thread; ``keep`` gets the policy in
    force. So a worker that got no request while the file was good keeps that good policy, not
    an older one, when a broken edit follows."""

    def watch() -> None:
        while True:
            time.sleep(every)
            keep(file.current())

    threading.Thread(target=watch, name="policy-watch", daemon=True).start()


def _child_exit(arbiter: object, worker: Any) -> None:
    metrics.worker_exited(worker.pid)


#: The master's own listeners (``metrics_bind``, ``session_api_bind``). Module state, as they must
#: outlive the hooks: a reload (SIGHUP) installs new ones, and ``gunicorn.conf.py`` is read again then.
_listeners: list[Listener] = []


def _cannot_listen(name: str, address: str, exc: OSError) -> SettingsError:
    return SettingsError(name, address, f"cannot be listened on ({exc.strerror or exc})")


def _open_listeners(settings: Settings) -> list[Listener]:
    """The addresses the main process serves itself; one that cannot be listened on is a settings error."""
    wanted: list[tuple[str, str | None, Callable[[str], Listener]]] = [
        ("metrics_bind", settings.metrics_bind, metrics.MetricsServer),
        ("session_api_bind", settings.session_api_bind,
         lambda address: Listener(address, create_session_api_app(settings), name="session-api")),
    ]
    opened: list[Listener] = []
    for name, address, listen in wanted:
        if address is None:
            continue
        try:
            opened.append(listen(address))
        except OSError as exc:
            for listener in opened:
                listener.stop()
            raise _cannot_listen(name, address, exc) from None
    return opened


def _check_bind(bind: str) -> None:
    """A TCP ``bind`` that cannot be listened on (taken, or no such host) is a settings error,
    said in one line before either server starts (granian would raise from Rust, gunicorn retry
    for five seconds). A unix socket is left to the server (a stale one is replaced)."""
    if bind.startswith("unix:"):
        return
    host, _, port = bind.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as both servers bind
            sock.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        raise _cannot_listen("bind", bind, exc) from None


class MasterPolicy:
    """The main process's last good policy, handed to every worker it starts (a respawned one
    too): the file is watched as the workers watch it (a daemon thread, every
    ``policy_reload_seconds``) and re-read on SIGHUP, so a worker started while the file is
    broken gets the policy its siblings serve, not an older one."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._file = (PolicyFile(settings.policy_file, every=settings.policy_reload_seconds)
                      if settings.policy_file else None)
        self.current = self._file.current() if self._file else None
        passing = (self.current or PolicySet()).passing_options() if settings.sdk_profile == "node" else []
        if passing:
            log.warning("sdk_profile node: OPTIONS and TRACE requests pass without a session, as supertokens-node "
                        "lets them, on routes that require one (rules: %s)", ", ".join(passing))
        if self._file is not None and settings.policy_reload_seconds > 0:
            _watched(self._file, settings.policy_reload_seconds, partial(setattr, self, "current"))

    def reload(self) -> None:
        """SIGHUP: the file again now (a broken one keeps the last good policy, and says why)."""
        if self._file is not None:
            self.current = self._file.reread()


def _serve_listeners(settings: Settings, arbiter: Any) -> None:
    if not _listeners:
        _listeners.extend(_open_listeners(settings))
        for name in ("metrics_bind", "session_api_bind"):
            if getattr(settings, name):
                arbiter.log.info("%s: http://%s", name, getattr(settings, name))


def _close_inherited_listeners(arbiter: object, worker: Any) -> None:
    for listener in _listeners:
        listener.close_inherited()


def _stop_listeners(arbiter: object) -> None:
    while _listeners:
        _listeners.pop().stop()


def master_hooks(settings: Settings) -> dict[str, Callable[..., None]]:
    """gunicorn's server hooks (also ``gunicorn.conf.py``'s): dead workers' metric files are
    released; with ``metrics_bind`` or ``session_api_bind``, the master serves them once it is
    ready (an address it cannot listen on stops start-up) until it exits."""
    hooks: dict[str, Callable[..., None]] = {"child_exit": _child_exit}
    if settings.metrics_bind or settings.session_api_bind:
        hooks.update(when_ready=partial(_serve_listeners, settings),
                     post_fork=_close_inherited_listeners, on_exit=_stop_listeners)
    return hooks


class Server(BaseApplication):  # type: ignore[misc]
    """A gunicorn application whose app is built per worker (after fork).

    The master reads the policy file at start (an invalid one stops start-up) and again on
    SIGHUP; a file that no longer parses keeps the last good policy, so a bad edit never takes
    the gate down. Under gthread workers gunicorn then replaces the workers. The built-in
    server's workers are kept, as granian's are (:func:`serve_granian`): the master raises a
    counter they share, and each re-reads the file at its next request.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._policy = MasterPolicy(settings)
        self._reloads = multiprocessing.RawValue("L", 0)  # shared with the forked workers
        self.shares = Shares(max(8, 2 * settings.workers))  # room for `kill -TTIN` and replacements
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self._settings).items():
            if key in self.cfg.settings:  # control_socket_disable is gunicorn 27's
                self.cfg.set(key, value)
        self.cfg.set("on_reload", self._on_reload)
        hooks = master_hooks(self._settings)
        if self._settings.server == "builtin":
            hooks.update(pre_fork=self._pre_fork, child_exit=partial(self._child_exit, hooks["child_exit"]))
        for hook, function in hooks.items():
            self.cfg.set(hook, function)

    def _pre_fork(self, arbiter: Any, worker: Any) -> None:
        worker.slot = self.shares.claim(getattr(other, "slot", None) for other in arbiter.WORKERS.values())

    def _child_exit(self, then: Callable[..., None], arbiter: Any, worker: Any) -> None:
        self.shares.release(getattr(worker, "slot", None))
        then(arbiter, worker)

    def _on_reload(self, arbiter: object) -> None:
        self._policy.reload()

    def reload_policy(self) -> None:
        """SIGHUP under the built-in server: the policy again, in the same workers."""
        self._policy.reload()  # logs why a broken file is not taken
        self._reloads.value += 1

    def load(self) -> WSGIApp | ASGIApp:
        if self._settings.server != "builtin":
            return worker_app(self._settings, self._policy.current)
        return asgi_app(self._settings, worker_app(self._settings, self._policy.current,
                                                   reloads=lambda: self._reloads.value))

    def run(self) -> None:
        (_KeepingArbiter if self._settings.server == "builtin" else Arbiter)(self).run()


class _KeepingArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, but SIGHUP replaces no worker (a stopping one would close its
    keep-alive connections): it re-reads the policy (:meth:`Server.reload_policy`)."""

    def handle_hup(self) -> None:
        self.log.info("Hang up: re-reading the policy")
        self.app.reload_policy()


#: A worker's requests that may wait for a core thread (``threads`` of them) before the next is
#: answered 503 ``core-busy``: a hung core costs memory for these, never a verification's latency.
CORE_QUEUE = 64


def _worker_exited(pid: int) -> None:
    metrics.TALLY.flush()
    tracing.stop()
    metrics.worker_exited(pid)


def granian_server(settings: Settings) -> Any:
    """A granian server with the options of ``server: granian`` (``bind``, ``workers``,
    ``log_level``) speaking ASGI to a loader passed to its ``serve``: one event loop per worker
    (single-threaded runtime, uvloop; see :mod:`forward_auth.asgi`). SIGHUP replaces no
    worker: the hooks given to ``on_reload`` run and the workers keep serving. A unix socket is
    made as gunicorn makes it: a stale one replaced, open to every local user."""
    from granian import Granian
    from granian.constants import Interfaces, RuntimeModes
    from granian.log import LogLevels

    class Server(Granian):  # type: ignore[misc,valid-type]
        def _reload(self, spawn_target: Any, target_loader: Any) -> None:
            # granian's own reload respawns every worker, and a stopping worker resets the
            # connections still in its accept queue; the policy is all a reload changes here.
            self.reload_signal = False
            self.main_loop_interrupt.clear()
            self._call_hooks(self.hooks_reload)

    # Workers are forked: loaders are closures (forkserver, Python 3.14's default, would pickle them).
    multiprocessing.set_start_method("fork", force=True)
    if settings.bind.startswith("unix:"):
        socket_path = Path(settings.bind.removeprefix("unix:"))
        if socket_path.is_socket():  # left by a killed server; anything else at that path is refused by granian
            socket_path.unlink()
        address: dict[str, Any] = {"uds": socket_path, "uds_permissions": 0o777}
    else:
        host, _, port = settings.bind.rpartition(":")
        address = {"address": host.strip("[]"), "port": int(port)}
    # The target is granian's required argument; the loader given to serve() builds the app.
    return Server("forward_auth.wsgi:get_app", interface=Interfaces.ASGINL, workers=settings.workers,
                  blocking_threads=1, runtime_mode=RuntimeModes.st,
                  log_level=LogLevels(settings.log_level), websockets=False, respawn_failed_workers=True,
                  workers_kill_timeout=GRACEFUL_TIMEOUT_SECONDS, **address)


def asgi_app(settings: Settings, app: WSGIApp) -> ASGIApp:
    """``app`` as a granian worker serves it: over ASGI, ``threads`` core threads (also the
    bench's); a :class:`~forward_auth.app.Service`'s ``/verify`` straight from its endpoint."""
    return ASGIApp(app, verify=app.verify if isinstance(app, Service) else None,
                   core_concurrency=settings.threads, core_queue=CORE_QUEUE)


def serve_granian(settings: Settings) -> None:
    """Serve with granian (``server: granian``, the default): Rust HTTP handling, the same
    worker app as under gunicorn over ASGI (:mod:`forward_auth.asgi`).

    SIGHUP re-reads the policy without replacing a worker: the main process checks the file
    (and logs a bad edit) and raises a counter the workers share, and each worker's policy
    re-reads the file at its next request, keeping its last good policy if the file is broken.
    ``metrics_bind`` and ``session_api_bind`` are served by the main process.
    """
    policy = MasterPolicy(settings)
    reloads = multiprocessing.RawValue("L", 0)  # shared with the forked workers
    listeners = _open_listeners(settings)
    server = granian_server(settings)

    def reload_policy() -> None:
        policy.reload()  # logs why a broken file is not taken
        reloads.value += 1

    def load() -> ASGIApp:
        for listener in listeners:
            listener.close_inherited()
        # granian workers end through multiprocessing's exit path (no atexit): flush spans and
        # drop this worker's live gauges there, as gunicorn's child_exit does.
        multiprocessing.util.Finalize(None, _worker_exited, args=(os.getpid(),), exitpriority=10)
        return asgi_app(settings, worker_app(settings, policy.current, reloads=lambda: reloads.value))

    server.on_reload(reload_policy)
    for listener in listeners:
        server.on_shutdown(listener.stop)
    server.serve(target_loader=load, wrap_loader=False)


def run(settings: Settings) -> None:
    """Serve with the server the settings name (``forward-auth serve`` and ``demo``)."""
    _check_bind(settings.bind)
    configure_logging(settings.log_level, settings.log_format)  # the main process logs policy edits
    if settings.server == "granian":
        serve_granian(settings)
    else:
        Server(settings).run()
