"""Path handling as a property: over generated paths, the policy's choice of rule is never weaker
than the rule any common backend's reading of the same path would get.

A backend reads a path in one of several ways (each function below is one). For every generated
path the gate either refuses it (:class:`AmbiguousPath`, a 400) or picks the very rule that every
reading picks: then no reading can reach a route more protected than the one the gate judged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from forward_auth.policy import AmbiguousPath, PolicySet, Rule, canonical_path, parse_policy

POLICY = parse_policy({
    "default": {"session": "required"},
    "rules": [
        {"name": "public", "match": {"path_prefix": "/public/"}, "session": "public"},
        {"name": "optional", "match": {"path_prefix": "/optional/"}, "session": "optional"},
        {"name": "admin", "match": {"path_prefix": "/admin/"}, "claims": [{"claim": "st-role", "includes": "admin"}]},
        {"name": "reports", "match": {"path_glob": "/reports/*.pdf"}, "session": "public"},
        {"name": "api", "match": {"path_regex": "/api/v[0-9]+/.*"}, "check_database": True},
        {"name": "Docs", "match": {"path_prefix": "/Docs/"}, "session": "public"},
    ],
})
HOST = "app.example.com"

#: Segments that paths are built from: route names in several spellings, and every trick that
#: backends read differently (dots, path parameters, backslashes, encodings, case, trailing dots).
SEGMENTS = (
    "admin", "ADMIN", "Admin", "public", "optional", "api", "v1", "reports", "x.pdf", "X.PDF", "docs", "Docs", "x",
    "..", ".", "", "..;", ";a=1", "admin;jsessionid=1", "a;b", "%2e%2e", "%2E", ".%2e", "%2e.", "%2f", "%2F", "%5c",
    "\\", "..\\admin", "%3b", "%3B", "admin.", "admin..", "admin%20", "admin. ", "%61dmin", "%41dmin", "a%2fb", "%25",
    "%252e%252e", "é", "%C3%A9", "v1.2", "..x", "a..b", "...",
)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 on a ``/``-separated path (``//`` kept: some servers merge it, some do not)."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def merged(path: str) -> str:
    return re.sub("/{2,}", "/", path)


def plain(path: str) -> str:
    """Decoded once, dot segments removed (Flask, Django, Express, Go's ServeMux after Clean)."""
    return remove_dot_segments(unquote(path))


def tomcat(path: str) -> str:
    """Path parameters dropped from every raw segment, then decoded, then dot segments removed."""
    return remove_dot_segments(unquote(re.sub(r";[^/]*", "", path)))


def whatwg(path: str) -> str:
    """WHATWG URL: ``\\`` is ``/``, ``%2e`` spells a dot in a dot segment; decoded afterwards."""
    path = path.replace("\\", "/")
    dots = "/".join(re.sub(r"(?i)^(\.|%2e)$", ".", re.sub(r"(?i)^(\.|%2e)(\.|%2e)$", "..", s))
                    for s in path.split("/"))
    return unquote(remove_dot_segments(dots))


def iis(path: str) -> str:
    """IIS: decoded, ``\\`` is ``/``, dot segments removed, trailing dots and spaces dropped."""
    decoded = remove_dot_segments(unquote(path).replace("\\", "/"))
    return "/".join(s.rstrip(". ") or s for s in decoded.split("/"))


#: A reading: how a backend turns the path into the one it routes on, and whether it ignores case.
READINGS: tuple[tuple[str, Callable[[str], str], bool], ...] = (
    ("plain", plain, False), ("merged", lambda p: merged(plain(p)), False), ("tomcat", tomcat, False),
    ("whatwg", whatwg, False), ("iis", iis, True), ("express", plain, True),
)


def rule_of_reading(policy: PolicySet, path: str, read: Callable[[str], str], folded: bool) -> Rule:
    routed = read(path)
    return next((r for r in policy.rules if r.match.matches(HOST, routed, "GET", folded=folded)), policy.default)


def gate_rule(policy: PolicySet, path: str) -> Rule | None:
    """The gate's rule, or None when it refuses the path."""
    try:
        return policy.select(HOST, path, "GET")
    except AmbiguousPath:
        return None


def disagreements(policy: PolicySet, path: str) -> list[str]:
    """The readings that pick another rule than the gate (empty when the gate refuses)."""
    rule = gate_rule(policy, path)
    if rule is None:
        return []
    return [f"{name} reads {read(path)!r} as {other.name!r}, the gate picked {rule.name!r}"
            for name, read, folded in READINGS
            if (other := rule_of_reading(policy, path, read, folded)) is not rule]


paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6).map(lambda s: "/" + "/".join(s))


@settings(max_examples=3000, derandomize=True, deadline=None)
@given(paths)
@example("/public/..;/admin/x")
@example("/public/..\\admin/x")
@example("/public/..%5cadmin/x")
@example("/admin;jsessionid=1/x")
@example("/admin%3bx/x")
@example("/ADMIN/x")
@example("/admin./x")
@example("/docs/x")
@example("/REPORTS/x.pdf")
def test_no_reading_gets_another_rule(path: str) -> None:
    assert disagreements(POLICY, path) == []


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(("admin", "public", "api", "v1", "x.pdf", "reports", "a-b_c~1", "Docs", "%C3%A9",
                                 "v1.2", "a..b", "x")), min_size=1, max_size=5).map(lambda s: "/" + "/".join(s)))
def test_canonical_paths_are_not_refused(path: str) -> None:
    """The guard is not too wide: the paths browsers send for ordinary links pass."""
    assert gate_rule(POLICY, path) is not None, path
    assert disagreements(POLICY, path) == []


@pytest.mark.parametrize(("path", "reason"), [
    ("/admin;jsessionid=1/x", "';'"), ("/admin%3Bx/x", "';'"), ("/public/..;/admin/x", "';'"),
    ("/public/..%5cadmin/x", "encoded"), ("/public/..\\admin/x", "backslash"),
    ("/ADMIN/x", "case or trailing dots"), ("/admin./x", "case or trailing dots"), ("/docs/x", "case or trailing dots"),
])
def test_the_refusals_say_why(path: str, reason: str) -> None:
    with pytest.raises(AmbiguousPath, match=re.escape(reason)):
        POLICY.select(HOST, path, "GET")


def test_readings_are_what_the_servers_do() -> None:
    """The readings themselves, on the cases the security review found."""
    assert tomcat("/public/..;/api/x") == "/api/x" and tomcat("/admin;jsessionid=1/x") == "/admin/x"
    assert whatwg("/public/..\\api/x") == "/api/x" and whatwg("/public/%2e%2e/api/x") == "/api/x"
    assert iis("/public/..%5capi/x") == "/api/x" and iis("/admin./x") == "/admin/x"
    assert plain("/public/%2e%2e/api/x") == "/api/x" and canonical_path("/a/%C3%A9") == "/a/é"
