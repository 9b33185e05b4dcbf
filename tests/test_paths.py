"""Path handling as a property: over generated paths, the policy's choice of rule is never weaker
than the rule any common backend's reading of the same path would get.

A backend reads a path in one of several ways (each function below is one). For every generated
path the gate either refuses it (:class:`AmbiguousPath`, a 400) or picks the very rule that every
reading picks: then no reading can reach a route more protected than the one the gate judged.
"""

from __future__ import annotations

import fnmatch
import re
import time
import unicodedata
from collections.abc import Callable
from urllib.parse import unquote, unquote_to_bytes

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from forward_auth.paths import AmbiguousPath, canonical_path
from forward_auth.policy import PolicySet, Rule, parse_policy

POLICY = parse_policy({
    "default": {"session": "required"},
    "rules": [
        {"name": "public", "match": {"path_prefix": "/public/"}, "session": "public"},
        {"name": "optional", "match": {"path_prefix": "/optional/"}, "session": "optional"},
        {"name": "admin", "match": {"path_prefix": "/admin/"}, "claims": [{"claim": "st-role", "includes": "admin"}]},
        {"name": "reports", "match": {"path_glob": "/reports/*.pdf"}, "session": "public"},
        {"name": "api", "match": {"path_regex": "/api/v[0-9]+/.*"}, "check_database": True},
        {"name": "Docs", "match": {"path_prefix": "/Docs/"}, "session": "public"},
        {"name": "settings", "match": {"path_prefix": "/settings/"}, "claims": [{"claim": "st-role", "includes": "admin"}]},
        {"name": "key", "match": {"path_prefix": "/key/"}, "claims": [{"claim": "st-role", "includes": "admin"}]},
        {"name": "café", "match": {"path_prefix": "/café/"}, "claims": [{"claim": "st-role", "includes": "admin"}]},
        {"name": "strasse", "match": {"path_regex": "/straße/.*"}, "session": "public"},
    ],
})
HOST = "app.example.com"

#: Segments that paths are built from: route names in several spellings, and every trick that
#: backends read differently (dots, path parameters, backslashes, fragments, encodings, raw
#: UTF-8 bytes as a header carries them (latin-1 text), case, Unicode lookalikes, trailing dots).
SEGMENTS = (
    "admin", "ADMIN", "Admin", "public", "optional", "api", "v1", "reports", "x.pdf", "X.PDF", "docs", "Docs", "x",
    "..", ".", "", "..;", ";a=1", "admin;jsessionid=1", "a;b", "%2e%2e", "%2E", ".%2e", "%2e.", "%2f", "%2F", "%5c",
    "\\", "..\\admin", "%3b", "%3B", "admin.", "admin..", "admin%20", "admin. ", "%61dmin", "%41dmin", "a%2fb", "%25",
    "%252e%252e", "é", "%C3%A9", "v1.2", "..x", "a..b", "...", "x#.pdf", "#", "adm%C4%B1n", "adm\xc4\xb1n",
    "\xc5\xbfettings", "%E2%84%AAey", "%EF%BC%8E%EF%BC%8E", "%C0%AE%C0%AE", "caf\xc3\xa9", "caf%C3%A9", "cafe%CC%81",
    "%C3%9F", "stra%C3%9Fe", "%FF",
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


def text(path: str) -> str:
    """What a UTF-8 server routes on: the bytes (header text is latin-1) percent-decoded once."""
    return unquote_to_bytes(path.encode("latin-1")).decode("utf-8", "replace")


def plain(path: str) -> str:
    """Decoded once, dot segments removed (Flask, Django, Express, Go's ServeMux after Clean)."""
    return remove_dot_segments(text(path))


def url(path: str) -> str:
    """A URL parser's path (Node's URL, parseurl): the fragment cut off, then as plain."""
    return plain(path.partition("#")[0])


def tomcat(path: str) -> str:
    """Path parameters dropped from every raw segment, then decoded, then dot segments removed."""
    return remove_dot_segments(text(re.sub(r";[^/]*", "", path)))


def whatwg(path: str) -> str:
    """WHATWG URL: ``\\`` is ``/``, ``%2e`` spells a dot in a dot segment; decoded afterwards."""
    path = path.partition("#")[0].replace("\\", "/")
    dots = "/".join(re.sub(r"(?i)^(\.|%2e)$", ".", re.sub(r"(?i)^(\.|%2e)(\.|%2e)$", "..", s))
                    for s in path.split("/"))
    return text(remove_dot_segments(dots))


def iis(path: str) -> str:
    """IIS: decoded (twice, as double-escaping does), ``\\`` is ``/``, compatibility forms
    folded (best fit), dot segments removed, trailing dots and spaces dropped."""
    decoded = unicodedata.normalize("NFKC", unquote(text(path))).replace("\\", "/")
    return "/".join(s.rstrip(". ") or s for s in remove_dot_segments(decoded).split("/"))


def java_ignore_case(s: str) -> str:
    """``equalsIgnoreCase``: characters equal when their upper case, or its lower case, are."""
    return "".join(c.upper().lower() if len(c.upper()) == 1 else c for c in s)


#: A reading: how a backend turns the path into the one it routes on, and how it folds case
#: (on the path and on the route alike; None: not at all).
Fold = Callable[[str], str] | None
READINGS: tuple[tuple[str, Callable[[str], str], Fold], ...] = (
    ("plain", plain, None), ("merged", lambda p: merged(plain(p)), None), ("url", url, None),
    ("tomcat", tomcat, None), ("whatwg", whatwg, None), ("iis", iis, str.lower), ("express", url, str.lower),
    ("python re.I", plain, str.casefold), ("java equalsIgnoreCase", plain, java_ignore_case),
    ("nfc", lambda p: unicodedata.normalize("NFC", plain(p)), None),
)


def matches(rule: Rule, path: str, fold: Fold) -> bool:
    """The rule's match as a backend reads it (the test's own, so that the gate's is under test)."""
    match, f = rule.match, fold or (lambda s: s)
    if match.path_prefix is not None:
        return f(path).startswith(f(match.path_prefix))
    if match.path_glob is not None:
        return fnmatch.fnmatchcase(f(path), f(match.path_glob))
    if match.path_regex is not None:
        return re.fullmatch(f(match.path_regex.pattern), f(path)) is not None
    return True


def rule_of_reading(policy: PolicySet, path: str, read: Callable[[str], str], fold: Fold) -> Rule:
    routed = read(path)
    return next((r for r in policy.rules if matches(r, routed, fold)), policy.default)


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
            for name, read, fold in READINGS
            if (other := rule_of_reading(policy, path, read, fold)) is not rule]


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
@example("/account/settings#.pdf")   # the review's: a URL parser reads /account/settings
@example("/caf\xc3\xa9/x")             # raw UTF-8, as nginx passes it on
@example("/\xc5\xbfettings/x")         # raw long s: upper-cases to S
@example("/adm%C4%B1n/x")            # dotless i: Java's equalsIgnoreCase reads admin
@example("/adm%C4%B0n/x")            # capital I with a dot
@example("/%E2%84%AAey/x")           # the Kelvin sign: lower-cases to k
@example("/public/%252e%252e/admin/x")
@example("/public/%C0%AE%C0%AE/admin/x")
@example("/public/%EF%BC%8E%EF%BC%8E/admin/x")
@example("/cafe%CC%81/x")            # decomposed: NFC reads /café/
@example("/stra%C3%9Fe/x")
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
    ("/public/..%5cadmin/x", "encoded"), ("/public/..\\admin/x", "backslash"), ("/public/%252e/x", "encoded '%'"),
    ("/ADMIN/x", "case or trailing dots"), ("/admin./x", "case or trailing dots"), ("/docs/x", "case or trailing dots"),
    ("/a/settings#.pdf", "'#'"), ("/public/%C0%AE%C0%AE/x", "not UTF-8"), ("/adm%C4%B1n/x", "read as another"),
    ("/public/%EF%BC%8E%EF%BC%8E/x", "read as another"), ("/cafe%CC%81/x", "read as another"),
    ("/x" * 4097, "longer than 8192"),
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
    assert url("/a/settings#.pdf") == "/a/settings" and java_ignore_case("/adm\u0131n") == "/admin"
    assert iis("/public/%252e%252e/api/x") == "/api/x" and iis("/public/%EF%BC%8E%EF%BC%8E/api/x") == "/api/x"
    assert canonical_path("/caf\xc3\xa9/x") == canonical_path("/caf%C3%A9/x") == "/café/x"
    assert POLICY.select(HOST, "/stra%C3%9Fe/x", "GET").name == "strasse"  # ß has no simple upper case


def test_long_runs_of_trailing_dots_cost_a_linear_pass() -> None:
    """The review's input (spaces and dots at MAX_PATH) was quadratic: 0.1 s a request."""
    path = "/a" + "%20." * 2040 + "x"
    started = time.perf_counter()
    for _ in range(50):
        POLICY.select(HOST, path, "GET")
    assert time.perf_counter() - started < 1.0  # ~5 s before; a 40x margin for a noisy machine
