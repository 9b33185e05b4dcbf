"""Route policies: an ordered YAML list of rules, first match wins (pure, apart from reading the file).

    default: {session: required}
    rules:
      - name: public
        match: {path_prefix: /public/}
        session: public                  # public | required | optional
      - name: admin
        match: {host: "*.example.com", path_glob: "/admin/*", methods: [GET, POST]}
        session: required
        anti_csrf: true                  # omitted: the SDK's default (every method but GET)
        check_database: true
        claims:
          - {claim: st-role, includes: admin}
          - {claim: st-ev, equals: true, max_age_seconds: 300}
          - {claim: plan, at_least: 2}
        headers: {X-User-Roles: st-role, X-User-Email: email}
        forward_payload: true            # X-Access-Token-Payload: base64url JSON of the payload
        session_data: true               # X-Session-Data: the core's session data (docs/session-object.md)
        access_token: true               # X-Access-Token: the access token itself
      - name: reports
        match: {path_prefix: /reports/}
        on_denied: redirect              # or api; omitted: told from the request (navigation.py)
        login_url: https://app.example.com/auth          # else the settings'
        refresh_url: https://app.example.com/auth/refresh
        claims:
          - {claim: st-ev, equals: true, redirect: https://app.example.com/auth/verify-email}

A match may name ``host`` (a glob), one of ``path_prefix`` / ``path_glob`` / ``path_regex``, and
``methods``; an empty match matches everything. :class:`PolicyFile` re-reads the file when it
changes; a bad file keeps the policy in force and logs why.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from .claims import Validator
from .navigation import ON_DENIED
from .paths import AmbiguousPath, canonical_path, without_trailing_dots
from .redirects import check_url
from .verifier import Policy

log = logging.getLogger(__name__)
SESSIONS = ("public", "required", "optional")
_RULE_KEYS = {"name", "match", "session", "anti_csrf", "check_database", "claims", "headers", "forward_payload",
              "on_denied", "login_url", "refresh_url", "session_data", "access_token"}
_MATCH_KEYS = {"host", "path_prefix", "path_glob", "path_regex", "methods"}
_CLAIM_KINDS = {"includes", "includes_all", "excludes", "excludes_all", "includes_any", "equals", "exists",
                "at_least"}
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")
#: Headers a claim may not be mapped to: identity, session and transport headers the service sets.
RESERVED_HEADERS = frozenset({
    "x-user-id", "x-session-handle", "x-tenant-id", "x-recipe-user-id", "x-session-expiry", "x-session-created",
    "x-access-token-payload", "x-request-id", "set-cookie", "front-token", "st-access-token", "st-refresh-token",
    "anti-csrf", "access-control-expose-headers", "cache-control", "content-type", "content-length", "retry-after",
    "x-session-data", "x-access-token",
})


class PolicyError(ValueError):
    """A policy file that cannot be used; says where and what is wrong."""


@dataclass(frozen=True)
class Match:
    """Which original requests a rule applies to."""

    host: str | None = None
    path_prefix: str | None = None
    path_glob: str | None = None
    path_regex: re.Pattern[str] | None = None
    methods: frozenset[str] | None = None

    def matches(self, host: str, path: str, method: str, *, folded: bool = False) -> bool:
        """Whether the rule applies; ``folded``: with case ignored on both sides (``lower()``, as
        ``re.IGNORECASE`` folds; :func:`canonical_path` refuses the letters where folds differ)."""
        if self.methods is not None and method not in self.methods:
            return False
        if self.host is not None and not fnmatch.fnmatchcase(host.lower(), self.host.lower()):
            return False
        if folded:
            path = path.lower()
        if self.path_prefix is not None and not path.startswith(self._fold(self.path_prefix, folded)):
            return False
        if self.path_glob is not None and not fnmatch.fnmatchcase(path, self._fold(self.path_glob, folded)):
            return False
        if self.path_regex is None:
            return True
        return (self._folded_regex if folded else self.path_regex).fullmatch(path) is not None

    @staticmethod
    def _fold(pattern: str, folded: bool) -> str:
        return pattern.lower() if folded else pattern

    @functools.cached_property
    def _folded_regex(self) -> re.Pattern[str]:
        assert self.path_regex is not None
        return re.compile(self.path_regex.pattern, self.path_regex.flags | re.IGNORECASE)

    def describe(self) -> str:
        parts = [f"host={self.host}" if self.host else "", f"prefix={self.path_prefix}" if self.path_prefix else "",
                 f"glob={self.path_glob}" if self.path_glob else "",
                 f"regex={self.path_regex.pattern}" if self.path_regex else "",
                 f"methods={','.join(sorted(self.methods))}" if self.methods else ""]
        return " ".join(p for p in parts if p) or "everything"


@dataclass(frozen=True)
class Rule:
    """What one kind of route requires, and which claims it forwards as headers."""

    name: str
    match: Match = field(default_factory=Match)
    session: str = "required"
    anti_csrf: bool | None = None
    check_database: bool | None = None
    claims: tuple[Validator, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    forward_payload: bool = False
    session_data: bool = False
    access_token: bool = False
    on_denied: str | None = None
    login_url: str | None = None
    refresh_url: str | None = None
    claim_redirects: tuple[tuple[str, str], ...] = ()  # (validator id, URL) for a denied navigation

    def to_policy(self, check_database_default: bool) -> Policy:
        """The verifier's per-request policy for this rule (``public`` rules never get here)."""
        return Policy(
            session_required=self.session == "required",
            anti_csrf_check=self.anti_csrf,
            check_database=check_database_default if self.check_database is None else self.check_database,
            claims=self.claims,
        )

    def describe(self) -> str:
        needs = [self.session]
        if self.anti_csrf is not None:
            needs.append(f"anti_csrf={'on' if self.anti_csrf else 'off'}")
        if self.check_database is not None:
            needs.append(f"check_database={'on' if self.check_database else 'off'}")
        needs += [f"{v.key} {v.kind} {v.value!r}" + (f" (max age {v.max_age_seconds} s)" if v.max_age_seconds else "")
                  for v in self.claims]
        needs += [f"{header} <- {claim}" for header, claim in self.headers]
        needs += [header for header, wanted in (("X-Access-Token-Payload", self.forward_payload),
                                                ("X-Session-Data", self.session_data),
                                                ("X-Access-Token", self.access_token)) if wanted]
        if self.on_denied is not None:
            needs.append(f"on_denied={self.on_denied}")
        needs += [f"{name} {url}" for name, url in (("login_url", self.login_url), ("refresh_url", self.refresh_url))
                  if url is not None]
        needs += [f"{key} denied -> {url}" for key, url in self.claim_redirects]
        return f"{self.name}: when {self.match.describe()}: " + "; ".join(needs)


@dataclass(frozen=True)
class PolicySet:
    """Ordered rules and the default rule for requests no rule matches."""

    rules: tuple[Rule, ...] = ()
    default: Rule = field(default_factory=lambda: Rule(name="default"))

    def select(self, host: str, path: str, method: str) -> Rule:
        """The first rule whose match holds on the canonical path, else the default.

        Refused (:class:`AmbiguousPath`): a host that is no hostname when a rule names hosts
        (``evil,a.example.com`` would match ``*.example.com``), and a path whose rule depends on
        its case or on trailing dots of its segments: case-insensitive servers (Express by
        default, ASP.NET, IIS) read ``/ADMIN/x`` as ``/admin/x``, IIS reads ``/admin./x`` so too.
        """
        path = canonical_path(path)
        if not _HOSTNAME.fullmatch(host) and any(rule.match.host is not None for rule in self.rules):
            raise AmbiguousPath(f"host {host[:64]!r} is not a hostname")
        rule = self._first(host, path, method, folded=False)
        if self._first(host, without_trailing_dots(path), method, folded=True) is not rule:
            raise AmbiguousPath("the path's case or trailing dots pick another rule than it does as written")
        return rule

    def _first(self, host: str, path: str, method: str, *, folded: bool) -> Rule:
        return next((rule for rule in self.rules if rule.match.matches(host, path, method, folded=folded)),
                    self.default)

    def passing_options(self) -> list[str]:
        """Rules (and the default) requiring a session on ``OPTIONS`` or ``TRACE``: under
        ``sdk_profile: node`` those requests pass without one, as supertokens-node lets them."""
        return [rule.name for rule in (*self.rules, self.default) if rule.session == "required" and (
            rule.match.methods is None or rule.match.methods & {"OPTIONS", "TRACE"})]

    def counted(self) -> str:
        """``1 rule``, ``3 rules``."""
        return f"{len(self.rules)} rule{'' if len(self.rules) == 1 else 's'}"

    def named(self, name: str) -> Rule | None:
        if name == self.default.name:
            return self.default
        return next((rule for rule in self.rules if rule.name == name), None)


_HOSTNAME = re.compile(r"\[[0-9a-f:.]+\]|[a-z0-9._-]*", re.IGNORECASE)  # as credentials hands it over: no port


def _fail(where: str, what: str) -> PolicyError:
    return PolicyError(f"{where}: {what}")


def _bool_or_none(raw: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, bool):
        raise _fail(where, f"{key} must be true or false")
    return value


def _url(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    problem = check_url(value) if isinstance(value, str) else "must be a string"
    if problem:
        raise _fail(where, f"{key} {problem}")
    return str(value)


def _validator(raw: Any, where: str) -> Validator:
    if not isinstance(raw, dict) or not isinstance(raw.get("claim"), str):
        raise _fail(where, "a claim check needs `claim: <key>` and one of " + ", ".join(sorted(_CLAIM_KINDS)))
    kinds = [k for k in raw if k in _CLAIM_KINDS]
    unknown = set(raw) - _CLAIM_KINDS - {"claim", "max_age_seconds", "id", "redirect"}
    if len(kinds) != 1 or unknown:
        raise _fail(where, "exactly one of " + ", ".join(sorted(_CLAIM_KINDS))
                    + " (and optionally max_age_seconds, id, redirect)")
    kind, value = kinds[0], raw[kinds[0]]
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, (str, int, float, bool)) for item in items):
        raise _fail(where, f"{kind} compares plain values (strings, numbers, booleans)")
    if kind in ("includes_all", "excludes_all", "includes_any") and not isinstance(value, list):
        raise _fail(where, f"{kind} needs a list")
    if kind == "at_least" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise _fail(where, "at_least needs a number")
    max_age = raw.get("max_age_seconds")
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0):
        raise _fail(where, "max_age_seconds must be a whole number >= 0")
    kind = {"equals": "has_value"}.get(kind, kind)
    return Validator(raw["claim"], kind, True if kind == "exists" else value, max_age, raw.get("id"))


def _match(raw: Any, where: str) -> Match:
    if raw is None:
        return Match()
    if not isinstance(raw, dict):
        raise _fail(where, "match is a mapping of " + ", ".join(sorted(_MATCH_KEYS)))
    unknown = set(raw) - _MATCH_KEYS
    if unknown:
        raise _fail(where, f"unknown match key(s) {', '.join(sorted(map(str, unknown)))}; a match takes "
                    + ", ".join(sorted(_MATCH_KEYS)))
    if sum(k in raw for k in ("path_prefix", "path_glob", "path_regex")) > 1:
        raise _fail(where, "use one of path_prefix, path_glob, path_regex")
    for key in ("host", "path_prefix", "path_glob", "path_regex"):
        if key in raw and not isinstance(raw[key], str):
            raise _fail(where, f"{key} must be a string")
    try:
        regex = re.compile(raw["path_regex"]) if "path_regex" in raw else None
    except re.error as exc:
        raise _fail(where, f"path_regex does not compile ({exc})") from None
    methods = raw.get("methods")
    if methods is not None and (not isinstance(methods, list) or not all(isinstance(m, str) for m in methods)):
        raise _fail(where, "methods must be a list of HTTP methods")
    return Match(raw.get("host"), raw.get("path_prefix"), raw.get("path_glob"), regex,
                 frozenset(m.upper() for m in methods) if methods is not None else None)


def _rule(raw: Any, where: str, default_name: str) -> Rule:
    if not isinstance(raw, dict):
        raise _fail(where, "a rule is a mapping")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; a rule takes "
                    + ", ".join(sorted(_RULE_KEYS)))
    session = raw.get("session", "required")
    if session not in SESSIONS:
        raise _fail(where, f"session must be one of {', '.join(SESSIONS)}")
    claims = [] if raw.get("claims") is None else raw["claims"]
    headers = {} if raw.get("headers") is None else raw["headers"]
    if not isinstance(claims, list):
        raise _fail(where, "claims must be a list")
    if not isinstance(headers, dict) or not all(
            isinstance(h, str) and _HEADER_NAME.fullmatch(h) and isinstance(c, str) for h, c in headers.items()):
        raise _fail(where, "headers maps header names to claim keys")
    reserved = sorted(h for h in headers if h.lower() in RESERVED_HEADERS or h.lower().startswith("x-forward-auth-"))
    if reserved:
        raise _fail(where, f"{', '.join(reserved)} cannot carry a claim (the service sets it)")
    forwards = ("forward_payload", "session_data", "access_token")
    if session == "public" and (claims or headers or any(raw.get(key) for key in forwards)):
        raise _fail(where, "a public rule checks nothing, so it cannot require or forward claims")
    for key in forwards:
        if not isinstance(raw.get(key, False), bool):
            raise _fail(where, f"{key} must be true or false")
    on_denied = raw.get("on_denied")
    if on_denied is not None and on_denied not in ON_DENIED:
        raise _fail(where, f"on_denied must be one of {', '.join(ON_DENIED)}")
    validators = tuple(_validator(c, f"{where}, claims[{i}]") for i, c in enumerate(claims))
    claim_redirects = tuple((v.id or v.key, url) for i, (v, c) in enumerate(zip(validators, claims, strict=True))
                            if (url := _url(c, "redirect", f"{where}, claims[{i}]")) is not None)
    return Rule(
        name=str(raw.get("name") or default_name),
        match=_match(raw.get("match"), where),
        session=session,
        anti_csrf=_bool_or_none(raw, "anti_csrf", where),
        check_database=_bool_or_none(raw, "check_database", where),
        claims=validators,
        headers=tuple(headers.items()),
        forward_payload=raw.get("forward_payload", False),
        session_data=raw.get("session_data", False),
        access_token=raw.get("access_token", False),
        on_denied=on_denied,
        login_url=_url(raw, "login_url", where),
        refresh_url=_url(raw, "refresh_url", where),
        claim_redirects=claim_redirects,
    )


def parse_policy(document: Any, source: str = "policy") -> PolicySet:
    """A validated :class:`PolicySet` from a loaded YAML document."""
    if document is None:
        document = {}
    if not isinstance(document, dict) or set(document) - {"rules", "default"}:
        raise _fail(source, "the policy is a mapping with `rules` (a list) and optionally `default`")
    rules_raw = [] if document.get("rules") is None else document["rules"]
    if not isinstance(rules_raw, list):
        raise _fail(source, "rules must be a list")
    rules = tuple(_rule(raw, f"{source}: rules[{i}]", f"rule-{i + 1}") for i, raw in enumerate(rules_raw))
    default_raw = document.get("default") or {}
    if isinstance(default_raw, dict) and "match" in default_raw:
        raise _fail(f"{source}: default", "the default rule has no match")
    default = _rule(default_raw, f"{source}: default", "default")
    names = [rule.name for rule in rules] + [default.name]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(source, f"rule names must be unique ({', '.join(duplicates)})")
    return PolicySet(rules, default)


def read_policy(path: str) -> PolicySet:
    """Read and validate a policy file."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML ({exc})") from None
    except UnicodeDecodeError as exc:  # a file saved in another encoding: broken like any other
        raise PolicyError(f"{path}: not UTF-8 ({exc})") from None
    return parse_policy(document, path)


class PolicyFile:
    """The policy in force: re-read when the file changes (checked at most every ``every`` s).

    A file that stops parsing keeps the previous policy in force; the error is logged once
    per change and kept in :attr:`last_error`. ``quiet`` logs reloads and errors at debug: the
    main process, watching the same file, says them once for every worker.
    """

    def __init__(self, path: str, *, every: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 initial: PolicySet | None = None, reloads: Callable[[], int] | None = None,
                 quiet: bool = False) -> None:
        self.path = path
        self._quiet = quiet
        self._every = every
        self._clock = clock
        self._reloads = reloads  # a counter raised by SIGHUP: re-read at the next look
        self._reloads_seen = reloads() if reloads is not None else 0
        self._lock = threading.Lock()
        # With an inherited policy the file is read again at the first look: it may have changed
        # since the policy was read (a worker started long after the master's last reload).
        self._stamp = self._file_stamp() if initial is None else None
        self._policy = initial if initial is not None else read_policy(path)
        self._checked = clock() if initial is None else float("-inf")  # an inherited one: look at the first request
        self.last_error: str | None = None

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    def current(self) -> PolicySet:
        """The policy in force, re-read first if the file changed since the last look (or a
        SIGHUP asked for it)."""
        if self._reloads is not None and self._reloads() != self._reloads_seen:
            self._reloads_seen = self._reloads()
            return self.reread()
        if self._every <= 0 or self._clock() - self._checked < self._every:
            return self._policy
        with self._lock:
            if self._clock() - self._checked < self._every:
                return self._policy
            self._checked = self._clock()
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                self._reload()
        return self._policy

    def reread(self) -> PolicySet:
        """The file read now, whether it changed or not (SIGHUP); a broken one keeps the policy."""
        with self._lock:
            self._checked, self._stamp = self._clock(), self._file_stamp()
            self._reload()
        return self._policy

    def _reload(self) -> None:
        try:
            self._policy = read_policy(self.path)
        except PolicyError as exc:
            self.last_error = str(exc)
            log.log(logging.DEBUG if self._quiet else logging.ERROR,
                    "policy not reloaded, the previous one stays in force: %s", exc)
            return
        self.last_error = None
        log.log(logging.DEBUG if self._quiet else logging.INFO,
                "policy reloaded from %s (%s)", self.path, self._policy.counted())
