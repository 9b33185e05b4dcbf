"""Route policies: parsing with clear errors, first-match selection, reload that survives bad edits."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ManualClock

from forward_auth.claims import Validator
from forward_auth.paths import AmbiguousPath
from forward_auth.policy import PolicyError, PolicyFile, parse_policy, read_policy

EXAMPLE = """
default: {session: optional}
rules:
  - name: public
    match: {path_prefix: /public/}
    session: public
  - name: admin
    match: {host: "*.example.com", path_glob: "/admin/*", methods: [get, POST]}
    anti_csrf: true
    check_database: true
    claims:
      - {claim: st-role, includes: admin}
      - {claim: st-perm, includes_all: [read, write]}
      - {claim: st-ev, equals: true, max_age_seconds: 300}
      - {claim: plan, at_least: 2, id: paid-plan}
      - {claim: email, exists: true}
    headers: {X-User-Roles: st-role, X-User-Email: email}
    forward_payload: true
  - name: api
    match: {path_regex: "/api/v[0-9]+/.*"}
"""


@pytest.fixture
def example(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE)
    return path


def test_rules_parse_with_their_validators(example: Path) -> None:
    policy = read_policy(str(example))
    admin = policy.named("admin")
    assert admin is not None and admin.session == "required" and admin.anti_csrf is True
    assert admin.claims == (
        Validator("st-role", "includes", "admin"),
        Validator("st-perm", "includes_all", ["read", "write"]),
        Validator("st-ev", "has_value", True, 300),
        Validator("plan", "at_least", 2, id="paid-plan"),
        Validator("email", "exists", True),
    )
    assert admin.headers == (("X-User-Roles", "st-role"), ("X-User-Email", "email"))
    assert policy.default.session == "optional"


@pytest.mark.parametrize(
    ("host", "path", "method", "rule"),
    [
        ("a.example.com", "/public/x", "DELETE", "public"),
        ("a.example.com", "/admin/x", "POST", "admin"),
        ("A.EXAMPLE.COM", "/admin/x", "GET", "admin"),
        ("a.example.com", "/admin/x", "PUT", "default"),
        ("other.org", "/admin/x", "GET", "default"),
        ("x", "/api/v2/users", "GET", "api"),
        ("x", "/api/vX/users", "GET", "default"),
        ("x", "/publicity", "GET", "default"),
    ],
)
def test_first_match_wins(example: Path, host: str, path: str, method: str, rule: str) -> None:
    assert read_policy(str(example)).select(host, path, method).name == rule


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("rules: {}", "rules must be a list"),
        ("rules: [{session: maybe}]", "rules[0]: session must be one of"),
        ("rules: [{sesion: required}]", "unknown key(s) sesion"),
        ("rules: [{match: {path_prefx: /x}}]", "rules[0]: unknown match key(s) path_prefx; a match takes host,"),
        ("rules: [{match: [/x]}]", "match is a mapping of"),
        ("rules: [{match: {path_prefix: /a, path_glob: /b}}]", "one of path_prefix"),
        ("rules: [{match: {path_regex: '('}}]", "path_regex does not compile"),
        ("rules: [{claims: [{claim: st-role}]}]", "claims[0]: exactly one of"),
        ("rules: [{claims: [{claim: st-role, includes: a, excludes: b}]}]", "exactly one of"),
        ("rules: [{claims: [{claim: st-role, includes_all: a}]}]", "includes_all needs a list"),
        ("rules: [{claims: [{claim: plan, at_least: lots}]}]", "at_least needs a number"),
        ("rules: [{claims: [{claim: st-ev, equals: true, max_age_seconds: -1}]}]", "max_age_seconds"),
        ("rules: [{headers: {'X-Bad Header': st-role}}]", "headers maps header names"),
        ("rules: [{session: public, claims: [{claim: a, exists: true}]}]", "a public rule checks nothing"),
        ("rules: [{name: a}, {name: a}]", "rule names must be unique (a)"),
        ("default: {match: {path_prefix: /}}", "the default rule has no match"),
        ("rules: [{anti_csrf: sometimes}]", "anti_csrf must be true or false"),
        ("rules: [{claims: [{claim: st-role, includes: {admin: true}}]}]", "compares plain values"),
        ("rules: [{claims: [{claim: st-role, excludes_all: [[x]]}]}]", "compares plain values"),
        ("rules: [{headers: {X-User-Id: email}}]", "X-User-Id cannot carry a claim"),
        ("rules: [{headers: {X-Forward-Auth-Rule: email}}]", "cannot carry a claim"),
        ("[1, 2]", "the policy is a mapping"),
        ("rules: [{on_denied: html}]", "on_denied must be one of redirect, api"),
        ("rules: [{login_url: '//evil.example/auth'}]", "login_url must be an http(s) URL"),
        ("rules: [{refresh_url: 7}]", "refresh_url must be a string"),
        ("rules: [{claims: [{claim: st-ev, equals: true, redirect: 'javascript:x'}]}]", "claims[0]: redirect must be"),
    ],
)
def test_invalid_policies_say_where_and_what(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(document)
    with pytest.raises(PolicyError) as info:
        read_policy(str(path))
    assert message in str(info.value) and str(path) in str(info.value)


def test_unreadable_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot be read"):
        read_policy(str(tmp_path / "missing.yaml"))
    (tmp_path / "p.yaml").write_text("rules: [\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        read_policy(str(tmp_path / "p.yaml"))


def test_empty_policy_requires_a_session_everywhere() -> None:
    assert parse_policy(None).select("h", "/x", "GET").session == "required"


def test_changes_are_picked_up_and_bad_edits_keep_the_policy(example: Path) -> None:
    clock = ManualClock(100.0)
    watched = PolicyFile(str(example), every=2.0, clock=clock)
    assert watched.current().select("h", "/public/a", "GET").name == "public"
    example.write_text("rules: [{name: everything-public, session: public}]\n")
    assert watched.current().named("everything-public") is None  # not checked again yet
    clock.now += 2
    assert watched.current().select("h", "/x", "GET").name == "everything-public"
    example.write_text("rules: [{session: maybe}]\n")
    clock.now += 2
    assert watched.current().select("h", "/x", "GET").name == "everything-public"
    assert watched.last_error is not None and "session must be one of" in watched.last_error
    example.write_text(EXAMPLE)
    clock.now += 2
    assert watched.current().named("admin") is not None and watched.last_error is None


def test_an_inherited_policy_is_checked_against_the_file_at_the_first_look(example: Path) -> None:
    """A worker started after the file changed must not keep the master's older policy."""
    clock = ManualClock(100.0)
    old = read_policy(str(example))
    example.write_text("rules: [{name: newer, session: public}]\n")
    watched = PolicyFile(str(example), every=2.0, clock=clock, initial=old)
    clock.now += 2
    assert watched.current().select("h", "/x", "GET").name == "newer"


def test_watching_can_be_off(example: Path) -> None:
    clock = ManualClock(100.0)
    watched = PolicyFile(str(example), every=0, clock=clock)
    example.write_text("rules: []\n")
    clock.now += 100
    assert watched.current().named("admin") is not None


@pytest.mark.parametrize(
    "spelling",
    ["//admin/x", "/public/../admin/x", "/public\\..\\admin/x", "/./admin/./x", "/admin//x",
     "/public/%2e%2e/admin/x", "/admin/%2e%2e/public/x", "/admin/..%2Fpublic/x", "/public/..;/admin/x",
     "/admin/%252e%252e/public/x".replace("%25", "%"), "/public%5C..%5Cadmin"],
)
def test_ambiguous_spellings_are_refused_not_guessed(tmp_path: Path, spelling: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("rules: [{name: public, match: {path_prefix: /public/}, session: public},"
                    " {name: admin, match: {path_prefix: /admin/}}]")
    with pytest.raises(AmbiguousPath):
        read_policy(str(path)).select("h", spelling, "GET")


def test_plain_encodings_are_decoded_once(example: Path) -> None:
    policy = read_policy(str(example))
    assert policy.select("a.example.com", "/%61dmin/x", "GET").name == "admin"
    assert policy.select("x", "/public/a%20b", "GET").name == "public"
    with pytest.raises(AmbiguousPath):  # %25: a backend that decodes twice would read another path
        policy.select("x", "/public/%2561", "GET")


def test_a_host_that_is_no_hostname_is_refused_where_rules_name_hosts() -> None:
    with_hosts = parse_policy({"rules": [{"name": "pub", "match": {"host": "*.pub.test"}, "session": "public"}]})
    for host in ("evil,a.pub.test", "a.pub.test x", "a.pub.test\t"):
        with pytest.raises(AmbiguousPath):
            with_hosts.select(host, "/x", "GET")
    assert with_hosts.select("a.pub.test", "/x", "GET").name == "pub"
    assert with_hosts.select("[::1]", "/x", "GET").name == "default"
    assert with_hosts.select("", "/x", "GET").name == "default"
    without_hosts = parse_policy({"rules": [{"name": "pub", "match": {"path_prefix": "/p/"}, "session": "public"}]})
    assert without_hosts.select("evil,a.pub.test", "/p/x", "GET").name == "pub"


def test_pages_keys_of_a_rule() -> None:
    policy = parse_policy({"rules": [{
        "name": "reports", "on_denied": "redirect", "login_url": "https://app.example.com/auth",
        "refresh_url": "/refresh",
        "claims": [{"claim": "st-ev", "equals": True, "redirect": "/verify-email"},
                   {"claim": "st-role", "includes": "x", "id": "roles", "redirect": "/no-role"},
                   {"claim": "plan", "at_least": 2}],
    }]})
    [rule] = policy.rules
    assert (rule.on_denied, rule.login_url, rule.refresh_url) == ("redirect", "https://app.example.com/auth", "/refresh")
    assert rule.claim_redirects == (("st-ev", "/verify-email"), ("roles", "/no-role"))
    assert "on_denied=redirect" in rule.describe() and "st-ev denied -> /verify-email" in rule.describe()
