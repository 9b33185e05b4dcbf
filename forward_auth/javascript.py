"""What JavaScript's built-ins do, where supertokens-node's decisions rest on them (pure)."""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import unquote

#: The white space ``String.prototype.trim`` and ``parseInt`` skip, as supertokens-node meets it.
WHITESPACE = " \t\n\v\f\r\xa0\ufeff\u2028\u2029"
_URI_ESCAPES = re.compile(r"(?:[^%]|%[0-9A-Fa-f]{2})*", re.DOTALL)
_INT_PREFIX = re.compile(rf"[{WHITESPACE}]*([+-]?)(0[xX][0-9a-fA-F]+|[0-9]+)")


def decode_uri_component(text: str) -> str | None:
    """``decodeURIComponent``; ``None`` where it throws."""
    if not _URI_ESCAPES.fullmatch(text):
        return None
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        return None


def parse_int(text: str) -> float:
    """``Number.parseInt(text)``: the leading integer (``"5abc"`` is 5), NaN without one."""
    match = _INT_PREFIX.match(text)
    if match is None:
        return math.nan
    sign, digits = match.groups()
    value = int(digits, 16) if digits[1:2] in ("x", "X") else int(digits)
    try:
        return float(-value if sign == "-" else value)
    except OverflowError:
        return -math.inf if sign == "-" else math.inf


def json_parse(text: str) -> Any:
    """``JSON.parse``: as ``json.loads``, but ``NaN`` and ``Infinity`` are not JSON (ValueError)."""
    return json.loads(text, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def trim(text: str) -> str:
    """``String.prototype.trim``."""
    return text.strip(WHITESPACE)
