"""``forward-auth``: serve, dev-core, demo, check-policy, explain, inspect. A thin shell over the same functions."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from . import __version__, claims, signature
from . import settings as settings_module
from . import token as tokens
from .cookies import ACCESS_COOKIE, parse_cookie_header
from .errors import ForwardAuthError
from .paths import AmbiguousPath
from .policy import PolicyError, read_policy
from .transport import PooledTransport, TransportError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # spelled here: importing metrics would import prometheus-client


def _help(description: str) -> str:
    """A setting's description as help text: the docs' Markdown code marks left out."""
    return description.replace("`", "")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forward-auth", description="A SuperTokens session gate for reverse "
                                     "proxies, and the tools around it.")
    parser.add_argument("--version", action="version", version=f"forward-auth {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gate (the built-in server; --server granian or gunicorn for those)")
    serve.add_argument("--config", help="YAML config file (keys are setting names; default: FORWARD_AUTH_CONFIG)")
    defaults = settings_module.Settings()
    for name in settings_module.FLAGS:
        switch = isinstance(getattr(defaults, name), bool)  # --legacy / --no-legacy, no value
        serve.add_argument(settings_module.flag_name(name), dest=name, help=_help(settings_module.DESCRIPTIONS[name]),
                           action=argparse.BooleanOptionalAction if switch else "store")
    serve.add_argument("--check-config", action="store_true",
                       help="check the settings and the policy file as serve does at start (not whether the "
                            "addresses are free), print the settings, exit (2 if anything is wrong)")

    core = commands.add_parser("dev-core", help="run the in-memory development SuperTokens core")
    core.add_argument("--bind", default="127.0.0.1:3567", help="HOST:PORT to listen on (default %(default)s; "
                                                               "port 0: a free one, printed at start)")
    core.add_argument("--access-token-validity", type=int, default=3600,
                      help="seconds an access token it issues is valid (default %(default)s)")
    core.add_argument("--api-key", help="API key the core requires of every caller (default: none)")
    core.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")

    demo = commands.add_parser("demo", help="dev core + gate on free ports, with ready-to-paste curls")
    demo.add_argument("--host", default="127.0.0.1", help="loopback address both listen on (default %(default)s)")

    check = commands.add_parser("check-policy", help="validate a policy file and print its rules in match order")
    check.add_argument("file", help="the policy file (YAML)")

    explain = commands.add_parser("explain", help="which policy rule a request matches, and what it requires")
    explain.add_argument("--policy-file", help="default: the policy_file setting")
    explain.add_argument("--method", default="GET", help="the original request's method (default %(default)s)")
    explain.add_argument("--uri", required=True, help="the original request's path (a query string is ignored)")
    explain.add_argument("--host", default="", help="the original request's host (default: none)")
    explain.add_argument("--token", help="an access token, as pasted: its claims are checked against the rule "
                                         "(not its signature)")

    inspect = commands.add_parser("inspect", help="decode a token; with a core, verify it (exit 1 if a check fails)")
    inspect.add_argument("token", help="the token, as pasted: eyJ..., 'Bearer eyJ...', 'sAccessToken=eyJ...' "
                                       "or a whole 'Cookie: ...' header line")
    inspect.add_argument("--core-url", help="core(s) whose JWKS verifies the token (default: FORWARD_AUTH_CORE_URL; "
                                            "neither: the signature is not checked)")
    return parser


class CommandError(Exception):
    """A command cannot do what it was asked: one line on stderr and exit code 2, as a bad setting."""


class CheckFailed(Exception):
    """A check of ``inspect`` or ``explain`` says no: printed on stdout, exit code 1."""


def _host_and_port(flag: str, text: str) -> tuple[str, int]:
    """HOST:PORT (``[::1]:PORT`` for IPv6; port 0 picks a free one), else CommandError."""
    host, sep, port = text.rpartition(":")
    if not (sep and host and port.isdigit() and int(port) < 65536):
        raise CommandError(f"{flag} {text!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def metrics_directory() -> str | None:
    """A fresh directory for prometheus-client's multiprocess files, set before it is imported.

    Returns it when this process created it (and so must remove it); an operator's own
    ``PROMETHEUS_MULTIPROC_DIR`` is used as it is and left alone.
    """
    if os.environ.get(MULTIPROC_ENV):
        return None
    path = tempfile.mkdtemp(prefix="forward-auth-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def cmd_serve(args: argparse.Namespace) -> int:
    overrides = {name: getattr(args, name) for name in settings_module.FLAGS}
    settings = settings_module.load(overrides, config_file=args.config)
    if args.check_config:
        if settings.policy_file:
            read_policy(settings.policy_file)  # as serve reads it at start: a bad file exits 2
        print(json.dumps(settings_module.public_view(settings), indent=2, default=str))
        return 0
    directory = metrics_directory()
    from .server import run  # after the metrics directory is set: prometheus-client reads it

    master = os.getpid()
    try:
        run(settings)
    finally:
        if directory and os.getpid() == master:  # forked workers unwind through here too when they exit
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def cmd_dev_core(args: argparse.Namespace) -> int:
    from .devcore.server import serve_devcore

    host, port = _host_and_port("--bind", args.bind)
    try:
        serve_devcore(host, port, access_token_validity=args.access_token_validity,
                      api_key=args.api_key, allow_remote=args.allow_remote)
    except ValueError as exc:  # a remote address without --allow-remote
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.bind} ({exc.strerror or exc})") from None
    return 0


def _free_address(host: str) -> str:
    """HOST:PORT with a port free on ``host`` now (``[::1]:PORT`` for IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
    except OSError as exc:
        raise CommandError(f"--host {host!r}: cannot listen there ({exc.strerror or exc})") from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Until ``url`` answers, while ``proc`` (which serves it) runs."""
    transport = PooledTransport()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CommandError(f"the development core exited with code {proc.returncode}")
        try:
            if transport.request("GET", url, headers={}, timeout=1.0).status < 500:
                return
        except TransportError:
            pass
        time.sleep(0.1)
    raise CommandError(f"{url} did not answer within {timeout:.0f} s")


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = PooledTransport().request(
        "POST", url, headers={"content-type": "application/json"}, body=json.dumps(body).encode(), timeout=5.0
    )
    return reply.json()


def cmd_demo(args: argparse.Namespace) -> int:
    from .devcore.server import is_loopback

    if not is_loopback(args.host):
        raise CommandError(f"--host {args.host!r} is not a loopback address (the demo's development core "
                           "has no hardening)")
    core_bind, service_bind = _free_address(args.host), _free_address(args.host)
    metrics_directory()
    from .server import run
    core_url = f"http://{core_bind}"
    core_proc = subprocess.Popen([sys.executable, "-m", "forward_auth", "dev-core", "--bind", core_bind],
                                 stdout=subprocess.DEVNULL)
    try:
        _wait_for(core_url + "/hello", core_proc)
        created = _post_json(core_url + "/dev/sessions", {"userId": "demo-user"})
        expired = _post_json(core_url + "/dev/tokens", {"version": 5, "claims": {"exp": 1_000_000_000}})
        valid, stale = created["accessToken"]["token"], expired["token"]
        verify = f"http://{service_bind}/verify"
        print(f"""
forward-auth demo: development core at {core_url}, service at http://{service_bind}

  # a valid session: 200 with X-User-Id: demo-user
  curl -i {verify} -H 'Cookie: sAccessToken={valid}'

  # an expired access token: 401 {{"message":"try refresh token"}}
  curl -i {verify} -H 'Cookie: sAccessToken={stale}'

  # no token at all: 401 {{"message":"unauthorised"}}
  curl -i {verify}

  # the same session in header mode, and an optional-session location
  curl -i {verify} -H 'Authorization: Bearer {valid}'
  curl -i '{verify}?sessionRequired=false'
""", flush=True)
        settings = settings_module.load({"bind": service_bind, "core_url": core_url, "workers": 1})
        run(settings)
    finally:
        core_proc.terminate()
        core_proc.wait(timeout=10)
    return 0


def _when(ms: float) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).isoformat(timespec="seconds")


def pasted_token(text: str) -> str:
    """The access token in what people paste: the token itself, ``Bearer eyJ…``, ``sAccessToken=eyJ…``,
    a cookie list, or a whole ``Cookie:`` / ``Authorization:`` / ``st-access-token:`` header line."""
    text = text.strip()
    name, sep, value = text.partition(":")
    if sep and name.strip().lower() in ("cookie", "authorization", "st-access-token"):
        text = value.strip()
    if text[:7].lower() == "bearer ":
        return text[7:].strip()
    return parse_cookie_header(text).get(ACCESS_COOKIE, text)


def _parsed_token(text: str) -> tokens.AccessToken:
    try:
        return tokens.parse(pasted_token(text))
    except tokens.MalformedToken as exc:
        raise CheckFailed(f"not a SuperTokens access token: {exc}") from None


def cmd_inspect(args: argparse.Namespace) -> int:
    core = args.core_url or os.environ.get(settings_module.env_name("core_url"))
    core_urls = settings_module.PARSERS["core_url"]("core_url", core) if core else ()
    token = _parsed_token(args.token)
    expired = token.expiry_ms < time.time() * 1000
    print(f"version:  {token.version}")
    print(f"kid:      {token.kid or '(none: legacy token, any key of the JWKS)'}")
    print(f"user:     {token.user_id} (recipe user {token.recipe_user_id}, tenant {token.tenant_id})")
    print(f"session:  {token.session_handle}")
    print(f"created:  {_when(token.created_ms)}")
    print(f"expires:  {_when(token.expiry_ms)} ({'expired' if expired else 'not expired'})")
    print(f"promoted: {'no: the core must be asked (parentRefreshTokenHash1 set)' if token.parent_refresh_token_hash else 'yes'}")
    print("claims:   " + json.dumps(token.payload, indent=2, sort_keys=True).replace("\n", "\n          "))
    if not core_urls:
        print("signature: not checked (no core given: --core-url or FORWARD_AUTH_CORE_URL)")
        if expired:
            raise CheckFailed("verifies: no (expired)")
        return 0
    from .jwks import JwksFetcher

    logging.getLogger("forward_auth.jwks").disabled = True  # its fetch errors are printed below, once
    fetcher = JwksFetcher(core_urls, PooledTransport(), cooldown_seconds=0.0)
    try:
        keys = [k for k in [fetcher.key_for(token.kid)] if k] if token.kid else fetcher.all_keys()
        signature.verify_signature(token, keys, now=time.time())
    except ForwardAuthError as exc:
        raise CheckFailed(f"verifies: no ({exc.reason}: {exc.detail})") from None
    if expired:
        raise CheckFailed("verifies: no (expired: the signature is good, the token is too old)")
    print(f"verifies: yes, against {';'.join(core_urls)}")
    return 0


def cmd_check_policy(args: argparse.Namespace) -> int:
    policy_set = read_policy(args.file)
    print(f"{args.file}: {policy_set.counted()}, first match wins")
    for index, rule in enumerate(policy_set.rules, start=1):
        print(f"{index:3d}. {rule.describe()}")
    print(f"  -. {policy_set.default.describe()} (when no rule matches)")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    path = args.policy_file or settings_module.load().policy_file
    if not path:
        raise CommandError("explain needs a policy file (give --policy-file or set policy_file)")
    uri = args.uri.partition("?")[0]
    try:
        rule = read_policy(path).select(args.host.lower().partition(":")[0].rstrip("."), uri, args.method.upper())
    except AmbiguousPath as exc:
        raise CheckFailed(f"{args.method.upper()} {uri}: refused with 400 ({exc})") from None
    print(f"{args.method.upper()} {args.host}{uri} -> rule {rule.describe()}")
    if args.token is None:
        return 0
    errors = claims.failures(rule.claims, _parsed_token(args.token).custom_claims, time.time() * 1000)
    if errors:
        raise CheckFailed("claims: " + json.dumps(errors))
    print("claims: satisfied")
    return 0


COMMANDS = {"serve": cmd_serve, "dev-core": cmd_dev_core, "demo": cmd_demo, "inspect": cmd_inspect,
            "check-policy": cmd_check_policy, "explain": cmd_explain}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (settings_module.SettingsError, CommandError) as exc:
        print(f"forward-auth: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(f"forward-auth: invalid policy: {exc}", file=sys.stderr)
        return 2
    except CheckFailed as exc:
        print(exc)
        return 1
    except KeyboardInterrupt:
        return 130


