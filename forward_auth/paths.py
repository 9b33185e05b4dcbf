"""Paths as a policy rule is matched on them: decoded once, and refused when backends would read
them as another route (pure)."""

from __future__ import annotations

import functools
import re
import unicodedata
from urllib.parse import unquote_to_bytes


class AmbiguousPath(ValueError):
    """A path that applications may read in more than one way, so no rule can be picked safely."""


#: Longest path judged; longer ones are refused (no legitimate link is near it; nginx's
#: request line stops at 8 KiB by default).
MAX_PATH = 8192
_ENCODED_SEPARATOR = re.compile(r"%(2[5eEfF]|5[cC])")
_DOT_SEGMENT = re.compile(r"\.\.?")
#: Characters that Windows' best-fit conversion turns into a separator, and the capital I with
#: a dot, which simple lower-casing (Java's, .NET's) makes an ASCII ``i``.
_ASCII_LOOKALIKES = frozenset("\u00a5\u20a9\u2044\u2215\u2216\ufe68\u0130")


#: Paths up to this long are remembered once judged fine (real traffic repeats a few routes).
_REMEMBERED_PATH = 256


def canonical_path(path: str) -> str:
    """The path a rule is matched on: percent-decoded once (UTF-8), and refused when ambiguous.

    Applications and proxies disagree on ``//``, ``.``/``..`` segments, backslashes (WHATWG URL
    parsers and IIS read them as ``/``), ``;`` (Tomcat, Jetty and Spring drop path parameters:
    ``/admin;x/y`` is ``/admin/y`` there, ``/public/..;/admin`` is ``/admin``), ``#`` (URL
    parsers cut a fragment there), encoded ``%``, ``.``, ``/`` or ``\\``, bytes that are not
    UTF-8 (overlong ``%C0%AE`` too), and letters that case mappings or compatibility forms turn
    into ASCII (``ı``, ``ſ``, the Kelvin sign, fullwidth forms): resolving them one way lets a
    request reach a path the other way reads as protected. Such paths raise
    :class:`AmbiguousPath` (a 400) instead of being guessed at.
    """
    return _remembered(path) if len(path) <= _REMEMBERED_PATH else _canonical(path)


def _canonical(path: str) -> str:
    if len(path) > MAX_PATH:
        raise AmbiguousPath(f"path longer than {MAX_PATH} bytes")
    if _ENCODED_SEPARATOR.search(path):
        raise AmbiguousPath("encoded '%', '.', '/' or '\\' in the path")
    if "#" in path:
        raise AmbiguousPath("'#' in the path (URL parsers cut a fragment there)")
    try:  # header text is the bytes as latin-1: raw UTF-8 and %-escapes then decode alike
        decoded = unquote_to_bytes(_as_bytes(path)).decode("utf-8")
    except UnicodeDecodeError:
        raise AmbiguousPath("the path is not UTF-8") from None
    if "\\" in decoded:
        raise AmbiguousPath("backslash in the path")
    if ";" in decoded:
        raise AmbiguousPath("';' in the path (servlet containers drop path parameters)")
    if not decoded.isascii() and (not unicodedata.is_normalized("NFC", decoded)
                                  or any(_ascii_lookalike(ch) for ch in decoded if not ch.isascii())):
        raise AmbiguousPath("a character in the path that servers may read as another (case, compatibility form)")
    segments = decoded.split("/")
    if any(_DOT_SEGMENT.fullmatch(segment) for segment in segments):
        raise AmbiguousPath("dot segment in the path")
    if "" in segments[1:-1]:
        raise AmbiguousPath("empty segment ('//') in the path")
    return decoded or "/"


#: The last 4096 short paths judged fine (at most ~1 MB); an ambiguous one raises and is not kept.
_remembered = functools.lru_cache(maxsize=4096)(_canonical)


def _as_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # already decoded text (a direct request's own path)
        return text.encode("utf-8", "surrogatepass")


@functools.lru_cache(maxsize=1024)
def _ascii_lookalike(ch: str) -> bool:
    """A non-ASCII character that a simple case mapping turns into an ASCII letter (``ı``, ``ſ``,
    the Kelvin sign), that NFKC turns into ASCII (fullwidth forms, ligatures) or that best-fit
    conversion reads as a separator. (``ß`` stays: only full case mappings make it ``SS``.)"""
    if ch in _ASCII_LOOKALIKES or any(c.isascii() for c in unicodedata.normalize("NFKC", ch)):
        return True
    return any(len(mapped) == 1 and mapped.isascii() for mapped in (ch.upper(), ch.lower(), ch.casefold()))


def without_trailing_dots(path: str) -> str:
    """The path as IIS reads it: trailing dots and spaces of each segment dropped."""
    return "/".join(segment.rstrip(". ") or segment for segment in path.split("/"))
