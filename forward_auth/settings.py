"""The frozen settings object, and the one scheme that fills it.

Every setting has three spellings: a YAML key (``session_expired_status``), an environment
variable (``FORWARD_AUTH_SESSION_EXPIRED_STATUS``) and, for the common ones, a command-line
flag. Precedence: flag > environment > config file > default. Invalid values stop start-up
with :class:`SettingsError`, which names the setting, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any
from urllib.parse import urlsplit

import yaml

from .redirects import check_url, url_host

ENV_PREFIX = "FORWARD_AUTH_"
ANTI_CSRF_MODES = ("NONE", "VIA_CUSTOM_HEADER", "VIA_TOKEN")
SAMESITE_VALUES = ("lax", "strict", "none")
SERVERS = ("builtin", "granian", "gunicorn")
SDK_PROFILES = ("python", "node")
IPNetwork = IPv4Network | IPv6Network


class SettingsError(ValueError):
    """A setting has a value that is not allowed."""

    def __init__(self, name: str, value: object, allowed: str) -> None:
        super().__init__(f"invalid setting {name}={value!r}: {allowed}")
        self.name = name


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with; validated once, at start-up."""

    core_url: tuple[str, ...] = ("http://127.0.0.1:3567",)
    core_api_key: str | None = field(default=None, repr=False)
    core_timeout_seconds: float = 2.0
    anti_csrf: str | None = None
    enable_anti_csrf: bool = True
    session_expired_status: int = 401
    invalid_claim_status: int = 403
    check_database: bool = False
    revocation_cache_seconds: float = 0.0
    verified_cache_size: int = 4096
    decision_cache_seconds: float = 60.0
    proxy_cache_seconds: float = 0.0
    use_static_signing_key: bool = False
    jwks_cache_seconds: float = 14400.0
    jwks_refetch_cooldown_seconds: float = 0.5
    jwks_max_stale_seconds: float = 86400.0
    legacy: bool = False
    cookie_domain: str | None = None
    cookie_secure: bool = False
    cookie_samesite: str = "lax"
    refresh_token_path: str = "/auth/session/refresh"
    trusted_proxies: tuple[IPNetwork, ...] = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
    cors_preflight: bool = False
    login_url: str | None = None
    refresh_url: str | None = None
    allowed_redirect_hosts: tuple[str, ...] = ()
    sdk_profile: str = "python"
    clock_skew_seconds: float = 0.0
    policy_file: str | None = None
    policy_reload_seconds: float = 2.0
    server: str = "builtin"
    bind: str = "127.0.0.1:8080"
    metrics_bind: str | None = None
    workers: int = 2
    threads: int = 4
    log_level: str = "info"
    log_format: str = "text"
    tracing: bool = False
    session_data_cache_seconds: float = 5.0
    session_api: bool = False
    session_api_bind: str | None = None
    session_api_key: str | None = field(default=None, repr=False)
    session_api_key_file: str | None = None
    session_api_trusted: tuple[IPNetwork, ...] = (ip_network("127.0.0.0/8"), ip_network("::1/128"))

    @property
    def effective_anti_csrf(self) -> str:
        """The anti-CSRF mode in force, derived as the SDKs do when it is not set."""
        if not self.enable_anti_csrf:
            return "NONE"
        if self.anti_csrf is not None:
            return self.anti_csrf
        return "VIA_CUSTOM_HEADER" if self.cookie_samesite == "none" else "NONE"

    @property
    def redirect_hosts(self) -> tuple[str, ...]:
        """The hosts a navigation may be redirected for and to: ``allowed_redirect_hosts``, else
        the host of ``login_url`` (none for a path: redirects then stay on the browser's host)."""
        if self.allowed_redirect_hosts:
            return self.allowed_redirect_hosts
        host = url_host(self.login_url) if self.login_url else None
        return (host,) if host else ()


# --- parsers: each turns a raw (YAML or string) value into the typed one or raises ---

def parse_bool(raw: object) -> bool | None:
    """true/false in the usual spellings; ``None`` when it is neither."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    return None


def _bool(name: str, raw: object) -> bool:
    value = parse_bool(raw)
    if value is None:
        raise SettingsError(name, raw, "must be true or false")
    return value


def _number(name: str, raw: object) -> float:
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SettingsError(name, raw, "must be a number of seconds") from None
    if value < 0 or value != value or value == float("inf"):
        raise SettingsError(name, raw, "must be a finite number >= 0")
    return value


def _int_between(low: int, high: int, allowed: str) -> Callable[[str, object], int]:
    def parse(name: str, raw: object) -> int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise SettingsError(name, raw, allowed) from None
        if not low <= value <= high:
            raise SettingsError(name, raw, allowed)
        return value

    return parse


_positive_int = _int_between(1, 1 << 31, "must be a whole number >= 1")
_count = _int_between(0, 1 << 31, "must be a whole number >= 0")
_status = _int_between(400, 499, "must be an HTTP status code 400-499")


def _text(name: str, raw: object) -> str | None:
    text = str(raw).strip()
    return text or None


def _choice(allowed: tuple[str, ...], *, upper: bool) -> Callable[[str, object], str]:
    def parse(name: str, raw: object) -> str:
        text = str(raw).strip()
        text = text.upper() if upper else text.lower()
        if text not in allowed:
            raise SettingsError(name, raw, "must be one of " + ", ".join(allowed))
        return text

    return parse


def _core_urls(name: str, raw: object) -> tuple[str, ...]:
    parts = raw if isinstance(raw, list) else str(raw).split(";")
    urls = tuple(str(p).strip().rstrip("/") for p in parts if str(p).strip())
    if not urls:
        raise SettingsError(name, raw, "must name at least one core URL")
    for url in urls:
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise SettingsError(name, raw, f"{url!r} is not an http(s) URL")
    return urls


def _host_port(text: str) -> bool:
    """Whether ``text`` is HOST:PORT with a port 1-65535."""
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _bind(name: str, raw: object) -> str:
    text = str(raw).strip()
    if not text.startswith("unix:") and not _host_port(text):
        raise SettingsError(name, raw, "must be HOST:PORT (or unix:PATH)")
    return text


def _own_address(unset: str) -> Callable[[str, object], str | None]:
    """HOST:PORT of a listener of its own, or None (empty: ``unset`` says what happens then)."""
    def parse(name: str, raw: object) -> str | None:
        text = str(raw).strip()
        if text and not _host_port(text):
            raise SettingsError(name, raw, f"must be HOST:PORT (empty: {unset})")
        return text or None

    return parse


def _path(name: str, raw: object) -> str:
    text = str(raw).strip()
    if not text.startswith("/"):
        raise SettingsError(name, raw, "must be a path starting with /")
    return text


def _redirect_url(name: str, raw: object) -> str | None:
    text = str(raw).strip()
    problem = check_url(text) if text else None
    if problem:
        raise SettingsError(name, raw, problem)
    return text or None


_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\]")


def _hosts(name: str, raw: object) -> tuple[str, ...]:
    parts = raw if isinstance(raw, list) else str(raw).split(",")
    hosts = tuple(str(p).strip().lower().rstrip(".") for p in parts if str(p).strip())
    bad = [host for host in hosts if not _HOSTNAME.fullmatch(host)]
    if bad:
        raise SettingsError(name, raw, f"must be comma-separated host names ({bad[0]!r} is none)")
    return hosts


def _networks(name: str, raw: object) -> tuple[IPNetwork, ...]:
    parts = raw if isinstance(raw, list) else str(raw).split(",")
    try:
        return tuple(ip_network(str(p).strip(), strict=False) for p in parts if str(p).strip())
    except ValueError as exc:
        raise SettingsError(name, raw, f"must be comma-separated CIDRs ({exc})") from None


PARSERS: Mapping[str, Callable[[str, object], Any]] = {
    "core_url": _core_urls,
    "core_api_key": _text,
    "core_timeout_seconds": _number,
    "anti_csrf": _choice(ANTI_CSRF_MODES, upper=True),
    "enable_anti_csrf": _bool,
    "session_expired_status": _status,
    "invalid_claim_status": _status,
    "check_database": _bool,
    "revocation_cache_seconds": _number,
    "verified_cache_size": _count,
    "decision_cache_seconds": _number,
    "proxy_cache_seconds": _number,
    "use_static_signing_key": _bool,
    "jwks_cache_seconds": _number,
    "jwks_refetch_cooldown_seconds": _number,
    "jwks_max_stale_seconds": _number,
    "legacy": _bool,
    "cookie_domain": _text,
    "cookie_secure": _bool,
    "cookie_samesite": _choice(SAMESITE_VALUES, upper=False),
    "refresh_token_path": _path,
    "trusted_proxies": _networks,
    "cors_preflight": _bool,
    "login_url": _redirect_url,
    "refresh_url": _redirect_url,
    "allowed_redirect_hosts": _hosts,
    "sdk_profile": _choice(SDK_PROFILES, upper=False),
    "clock_skew_seconds": _number,
    "policy_file": _text,
    "policy_reload_seconds": _number,
    "server": _choice(SERVERS, upper=False),
    "bind": _bind,
    "metrics_bind": _own_address("/metrics on the main port"),
    "workers": _positive_int,
    "threads": _positive_int,
    "log_level": _choice(("debug", "info", "warning", "error"), upper=False),
    "log_format": _choice(("text", "json"), upper=False),
    "tracing": _bool,
    "session_data_cache_seconds": _number,
    "session_api": _bool,
    "session_api_bind": _own_address("the session API on the main port"),
    "session_api_key": _text,
    "session_api_key_file": _text,
    "session_api_trusted": _networks,
}

DESCRIPTIONS: Mapping[str, str] = {
    "core_url": "SuperTokens core URL(s), `;`-separated, tried in order; each may carry a base path such as `/appid-x`",
    "core_api_key": "API key sent to the core (`api-key` header)",
    "core_timeout_seconds": "timeout of every request to the core (JWKS and verify)",
    "anti_csrf": "`NONE`, `VIA_CUSTOM_HEADER` or `VIA_TOKEN`; unset: `VIA_CUSTOM_HEADER` if `cookie_samesite` is `none`, else `NONE` (as the SDKs)",
    "enable_anti_csrf": "global switch: false turns every anti-CSRF check off (the legacy `enable_anti_csrf`)",
    "session_expired_status": "status for UNAUTHORISED and TRY_REFRESH_TOKEN (401; 440 in the legacy profile)",
    "invalid_claim_status": "status for INVALID_CLAIMS",
    "check_database": "ask the core on every request whether the session was revoked",
    "revocation_cache_seconds": "cache the core's verify answer this long (never past the token's expiry); 0 = off",
    "verified_cache_size": "tokens whose verified signature is remembered with their session (until exp, at most 300 s; under 2 KB each); 0 = off",
    "decision_cache_seconds": "replay an allowed `/verify` answer to the same request (every header but the request id and trace context) for up to this long: never past the token's exp, a policy reload or the verified signature's trust, never when the core was asked (a revocation check, a refreshed token) or with a claim with a maximum age; 0 = off; off by default with `tracing` or `verified_cache_size: 0`",
    "proxy_cache_seconds": "let nginx's `proxy_cache` reuse an allowed answer this long (`X-Accel-Expires`, whole seconds; the same answers as `decision_cache_seconds`, never past the token's exp; the cache key is nginx's: see nginx.conf.example); 0 = off",
    "use_static_signing_key": "accept only static (`s-`) signing keys, as the SDK's `use_dynamic_access_token_signing_key=false`",
    "jwks_cache_seconds": "ceiling on how long the JWKS is cached (the core's `Cache-Control: max-age` may shorten it)",
    "jwks_refetch_cooldown_seconds": "minimum time between two JWKS fetches caused by unknown `kid`s",
    "jwks_max_stale_seconds": "how long the last good JWKS keeps serving while every core is unreachable",
    "legacy": "legacy v1.0.X profile: 440, `sIdRefreshToken` marks a session",
    "cookie_domain": "`Domain` of the cookies this service sets or clears",
    "cookie_secure": "`Secure` on the cookies this service sets or clears",
    "cookie_samesite": "`SameSite` of the cookies this service sets or clears",
    "refresh_token_path": "`Path` of the `sRefreshToken` cookie (`<apiBasePath>/session/refresh`)",
    "trusted_proxies": "CIDRs whose `X-Forwarded-*` / `X-Original-*` headers are believed; from any other peer a forwarded method makes the method unknown, so anti-CSRF checks apply",
    "cors_preflight": "let an `OPTIONS` request with `Access-Control-Request-Method` pass without a session",
    "login_url": "sign-in page a denied browser navigation (UNAUTHORISED) is sent to, with `redirectToPath=<original path and query>`: an http(s) URL or a path; unset: navigations get the API answers (see Protecting pages)",
    "refresh_url": "page that refreshes the session and goes back (`redirectToPath`), for a navigation with an expired token (TRY_REFRESH_TOKEN); unset: `login_url`",
    "allowed_redirect_hosts": "comma-separated hosts whose navigations are redirected and that an absolute target may name; unset: the host of `login_url`",
    "sdk_profile": "whose `verifySession` every decision equals: `python` (supertokens-python 0.31.4) or `node` (supertokens-node 24.0.3; passes `OPTIONS`/`TRACE` without a session: see docs/sdk-differences.md)",
    "clock_skew_seconds": "how far in the future a token's `iat` (and `nbf`) may be, for a gate whose clock is behind the core's (never `exp`); 0 = the SDKs' own rule",
    "policy_file": "YAML file of route rules (first match wins); without it, query parameters choose the policy",
    "policy_reload_seconds": "how often the policy file is checked for changes (0: only at start and on SIGHUP)",
    "server": "`builtin` (gunicorn's master; each worker an event loop, uvloop and httptools, that verifies and waits on the core in threads of its own: the `threads` setting), `granian` (a Rust HTTP server, the same event loop per worker) or `gunicorn` (gthread workers)",
    "bind": "address the service listens on",
    "metrics_bind": "HOST:PORT on which the master process serves `/metrics` (every worker added up) instead of the main port, which then answers 404; unset: `/metrics` on the main port",
    "workers": "worker processes",
    "threads": "threads per worker: under builtin and granian, those that wait on the core (revocation checks, promotions, JWKS fetches; 64 more requests may queue for them, then 503 `core-busy`); under gunicorn, its gthread threads",
    "log_level": "debug, info, warning or error (allowed requests are logged at debug, denials at info)",
    "log_format": "`text` or `json` (one object per line; a decision's fields: outcome, reason, request, user, rule, latency, request id)",
    "tracing": "OpenTelemetry spans per decision and per core request, continuing the caller's `traceparent` (needs the `otel` extra; exporter from `OTEL_TRACES_EXPORTER`)",
    "session_data_cache_seconds": "how long `X-Session-Data` reuses a session's data from the core (per handle, never past the token's exp; at most 4096 handles a worker); 0 = a core request every time",
    "session_api": "serve the session API for upstreams (`/sessions/{handle}...`, `/users/{userId}/sessions/revoke`; docs/session-object.md); needs `session_api_key`",
    "session_api_bind": "HOST:PORT on which the main process serves the session API (and nothing else); unset: on the main port",
    "session_api_key": "the bearer secret every session API call must send (at least 16 characters); prefer the environment variable or `session_api_key_file`",
    "session_api_key_file": "a file holding `session_api_key` (read once at start-up; surrounding whitespace ignored)",
    "session_api_trusted": "CIDRs the session API answers (any other peer: 403); a unix socket is local",
}


#: Settings that also have a ``forward-auth serve`` flag (``--core-url`` for ``core_url``).
FLAGS: tuple[str, ...] = ("server", "bind", "metrics_bind", "workers", "core_url", "core_api_key", "anti_csrf",
                          "session_expired_status", "check_database", "legacy", "policy_file", "log_level")


def flag_name(name: str) -> str:
    """The command-line spelling of a setting."""
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    """The environment variable spelling of a setting."""
    return ENV_PREFIX + name.upper()


def read_config_file(path: str) -> dict[str, object]:
    """Load a YAML config file; its keys are the settings' names."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise SettingsError("config", path, f"cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise SettingsError("config", path, f"is not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError("config", path, "must hold a mapping of setting names")
    return data


def load(
    overrides: Mapping[str, object] | None = None,
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build validated settings from a config file, the environment and overrides."""
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    raw: dict[str, object] = {}
    if config_file:
        for key, value in read_config_file(config_file).items():
            if key not in PARSERS:
                raise SettingsError(str(key), value, "is not a known setting")
            raw[key] = value
    for name in PARSERS:
        if env_name(name) in environ:
            raw[name] = environ[env_name(name)]
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    values = {name: PARSERS[name](name, value) for name, value in raw.items() if value is not None}
    if values.get("legacy") and "session_expired_status" not in values:
        values["session_expired_status"] = 440
    if (values.get("tracing") or values.get("verified_cache_size") == 0) and "decision_cache_seconds" not in values:
        values["decision_cache_seconds"] = 0.0  # a replay has no span, and remembers a verified signature
    _read_secret(values)
    return validate(Settings(**values))


def validate(settings: Settings) -> Settings:
    """Cross-field checks that one setting alone cannot make."""
    if settings.session_expired_status == settings.invalid_claim_status:
        raise SettingsError(
            "invalid_claim_status",
            settings.invalid_claim_status,
            "must differ from session_expired_status",
        )
    if settings.cookie_samesite == "none" and not settings.cookie_secure:
        raise SettingsError(
            "cookie_secure", settings.cookie_secure, "must be true when cookie_samesite is none"
        )
    if settings.metrics_bind is not None and settings.metrics_bind == settings.bind:
        raise SettingsError("metrics_bind", settings.metrics_bind, "must differ from bind")
    if settings.refresh_url is not None and settings.login_url is None:
        raise SettingsError("refresh_url", settings.refresh_url, "needs login_url")
    for name in ("login_url", "refresh_url"):
        url = getattr(settings, name)
        host = url_host(url) if url else None
        if host is not None and host not in settings.redirect_hosts:
            raise SettingsError(name, url, "its host must be one of allowed_redirect_hosts")
    if settings.decision_cache_seconds > 0 and settings.tracing:
        raise SettingsError("decision_cache_seconds", settings.decision_cache_seconds,
                            "must be 0 when tracing is true (a remembered answer has no span)")
    _check_session_api(settings)
    if settings.tracing:
        from .tracing import unavailable  # opentelemetry is optional: only looked for when asked

        missing = unavailable()
        if missing:
            raise SettingsError("tracing", settings.tracing, missing)
    return settings


#: Shortest ``session_api_key`` accepted.
MIN_SESSION_API_KEY = 16


def _check_session_api(settings: Settings) -> None:
    """The session API needs its key (never shown: errors say ``***``) and an address of its own."""
    if settings.session_api_bind is not None:
        if not settings.session_api:
            raise SettingsError("session_api_bind", settings.session_api_bind, "needs session_api: true")
        if settings.session_api_bind in (settings.bind, settings.metrics_bind):
            raise SettingsError("session_api_bind", settings.session_api_bind, "must differ from bind and metrics_bind")
    if settings.session_api and not settings.session_api_key:
        raise SettingsError("session_api_key", None, "must be set (or session_api_key_file) when session_api is true")
    if settings.session_api_key is not None and len(settings.session_api_key) < MIN_SESSION_API_KEY:
        raise SettingsError("session_api_key", "***", f"must be at least {MIN_SESSION_API_KEY} characters")


def _read_secret(values: dict[str, Any]) -> None:
    """``session_api_key_file``'s content becomes ``session_api_key`` (not both)."""
    path = values.get("session_api_key_file")
    if path is None:
        return
    if "session_api_key" in values:
        raise SettingsError("session_api_key_file", path, "cannot be set with session_api_key")
    try:
        with open(path, encoding="utf-8") as handle:
            values["session_api_key"] = handle.read().strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError("session_api_key_file", path, f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None


def public_view(settings: Settings) -> dict[str, object]:
    """Every setting by name, secrets masked (for ``serve --check-config``)."""
    view: dict[str, object] = {name: getattr(settings, name) for name in SETTING_NAMES}
    for secret in ("core_api_key", "session_api_key"):
        if view[secret]:
            view[secret] = "***"
    return view


SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))


def markdown_table() -> str:
    """docs/settings.md's table of every setting, its three spellings and its default."""
    defaults = Settings()
    rows = ["| setting (YAML key) | environment variable | flag | default | meaning |", "|---|---|---|---|---|"]
    for name in SETTING_NAMES:
        value = getattr(defaults, name)
        flag = f"`{flag_name(name)}`" if name in FLAGS else ""
        if isinstance(value, tuple):
            value = (";" if name == "core_url" else ",").join(str(v) for v in value) or None
        elif isinstance(value, bool):
            value = str(value).lower()
            flag = flag and f"{flag} / `--no-{flag[3:]}"  # a switch: no value
        rows.append(f"| `{name}` | `{env_name(name)}` | {flag} | `{value}` | {DESCRIPTIONS[name]} |")
    return "\n".join(rows) + "\n"
