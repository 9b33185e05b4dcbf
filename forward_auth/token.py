"""SuperTokens access tokens: parsing and structure checks (pure, no I/O); the signature is
:mod:`forward_auth.signature`'s.

Parsing follows supertokens-python 0.31.x (``recipe/session/jwt.py``) byte for byte, so a
token the SDK would ignore is ignored here too; under ``sdk_profile: node`` it follows
supertokens-node 24 (``recipe/session/jwt.js``, ``accessToken.js``) and its verifier, jose 4. A token in canonical JWS form (every issued token)
is decoded once, for both the SDK's parse and PyJWT's rules: for such input the two decodings give
the same bytes; anything else takes the SDK's lenient path and then PyJWT's own checks.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import json.scanner
import math
import re
from typing import Any, NamedTuple

from . import javascript

#: The fixed header of v2 tokens: padded standard base64 of the compact, sorted JSON.
V2_HEADER = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsInZlcnNpb24iOiIyIn0="
#: supertokens-node also takes the v1 header (``"version":"1"``) as a v2 token.
V1_HEADER = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsInZlcnNpb24iOiIxIn0="
DEFAULT_TENANT = "public"
_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Last characters without stray bits, by the unpadded length modulo 4 (2: 4 zero bits, 3: 2).
_CANONICAL_LAST = {2: frozenset(_B64URL_ALPHABET[::16]), 3: frozenset(_B64URL_ALPHABET[::4])}
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = {0: b"", 2: b"==", 3: b"="}
_SCAN_JSON = json.scanner.make_scanner(json.JSONDecoder())
#: Header segments longer than this are decoded every time, not remembered (a core's are ~100).
_MEMO_HEADER_CHARS = 512
#: Claim names every SuperTokens token carries: a payload uses these string objects, not copies (a
#: fixed table: interning whatever a client sends would keep its names forever on Python >= 3.12).
_CLAIM_NAMES = {name: name for name in (
    "sub", "exp", "iat", "nbf", "iss", "aud", "jti", "sessionHandle", "refreshTokenHash1",
    "parentRefreshTokenHash1", "antiCsrfToken", "tId", "rsub", "st-role", "st-perm", "st-ev", "st-mfa", "v", "t")}
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/_-]")


class MalformedToken(ValueError):
    """The string is not a SuperTokens access token (the SDK ignores such tokens)."""


class Jws(NamedTuple):
    """The segments of a v3+ token as PyJWT decodes them (set when they pass its rules)."""

    header: dict[str, Any]
    signing_input: bytes
    signature: bytes


class AccessToken(NamedTuple):
    """A parsed, structure-checked access token whose signature is not yet checked.

    This and the other per-request values are named tuples: one is built for every request,
    and a frozen dataclass costs about six times as much to build.
    """

    raw: str
    version: int
    kid: str | None
    payload: dict[str, Any]
    jws: Jws | None = None

    @property
    def user_id(self) -> str:
        return self.payload["userId"] if self.version < 3 else self.payload["sub"]

    @property
    def expiry_ms(self) -> float:
        if self.version < 3:
            return self.payload["expiryTime"]
        return self.payload["exp"] * 1000

    @property
    def created_ms(self) -> float:
        if self.version < 3:
            return self.payload["timeCreated"]
        return self.payload["iat"] * 1000

    @property
    def valid_until(self) -> float:
        """The first second (epoch) at which the token counts as expired, by the SDK's rules."""
        if self.version < 3:
            return self.payload["expiryTime"] / 1000
        return float(int(self.payload["exp"]))  # PyJWT: expired once int(exp) <= now

    @property
    def tenant_id(self) -> str | None:
        """``tId`` (``None`` when supertokens-node accepted a v4+ token without one), or public."""
        if self.version < 4:
            return DEFAULT_TENANT
        tenant = self.payload.get("tId")
        return tenant if isinstance(tenant, str) else None

    @property
    def recipe_user_id(self) -> str:
        rsub = self.payload.get("rsub", self.user_id)
        return rsub if isinstance(rsub, str) else self.user_id

    @property
    def session_handle(self) -> str:
        return self.payload["sessionHandle"]

    @property
    def parent_refresh_token_hash(self) -> str | None:
        value = self.payload.get("parentRefreshTokenHash1")
        return value if isinstance(value, str) else None

    @property
    def anti_csrf_token(self) -> str | None:
        value = self.payload.get("antiCsrfToken")
        return value if isinstance(value, str) else None

    @property
    def custom_claims(self) -> dict[str, Any]:
        """The claims the application put in the token (v2: ``userData``; v3+: the root)."""
        if self.version < 3:
            data = self.payload.get("userData")
            return data if isinstance(data, dict) else {}
        return self.payload


def _lenient_b64decode(segment: str) -> str:
    # The SDK's own decoding: URL-safe alphabet, extra padding, invalid characters dropped.
    return base64.urlsafe_b64decode(segment.encode("utf-8") + b"==").decode("utf-8")


def parse(raw: str, *, sdk_profile: str = "python") -> AccessToken:
    """Parse and structure-check a token as the profile's SDK does, or raise :class:`MalformedToken`."""
    if sdk_profile == "node":
        return parse_node(raw)
    parts = raw.split(".")
    if len(parts) != 3:
        raise MalformedToken("a token has three dot-separated parts")
    canonical = None if parts[0] == V2_HEADER else decode_jws(parts)
    if canonical is not None:
        return _checked(raw, *canonical)
    try:
        header = None if parts[0] == V2_HEADER else json.loads(_lenient_b64decode(parts[0]))
        payload = json.loads(_lenient_b64decode(parts[1]))
    except (ValueError, RecursionError):
        raise MalformedToken("token segments are not base64 JSON") from None
    return _checked(raw, header, payload, None)


def decode_jws(parts: list[str]) -> tuple[Any, Any, Jws] | None:
    """Header, payload and :class:`Jws` of three segments PyJWT would decode, else ``None``."""
    header = _jws_header(parts[0])
    payload_bytes, signature = _b64url_canonical(parts[1]), _b64url_canonical(parts[2])
    if header is None or payload_bytes is None or signature is None:
        return None
    try:
        payload = _json(payload_bytes.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if isinstance(payload, dict):  # one copy of the usual claim names for every token a gate remembers
        payload = {_CLAIM_NAMES.get(name, name): value for name, value in payload.items()}
    return header, payload, Jws(header, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def _jws_header(segment: str) -> Any:
    """A decoded header segment, else ``None``; a core's own (short) headers are remembered, as it
    signs with one per key. Callers never change the returned object."""
    if len(segment) > _MEMO_HEADER_CHARS:  # a client's giant header is never kept
        return _decoded_header(segment)
    return _remembered_header(segment)


def _decoded_header(segment: str) -> Any:
    decoded = _b64url_canonical(segment)
    if decoded is None:
        return None
    try:
        return _json(decoded.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


_remembered_header = functools.lru_cache(maxsize=64)(_decoded_header)


def _json(text: str) -> Any:
    """``json.loads(text)``; a text that is exactly one JSON object goes straight to the decoder's
    C scanner, skipping ``loads``' Python wrapper (about a third of the cost)."""
    if text[:1] == "{":
        try:
            value, end = _SCAN_JSON(text, 0)
        except StopIteration:
            return json.loads(text)  # raises the usual error
        if end == len(text):
            return value
    return json.loads(text)


def _checked(raw: str, header: Any, payload: Any, jws: Jws | None) -> AccessToken:
    """The SDK's checks of a decoded header (``None`` for v2) and payload."""
    version, kid = 2, None
    if header is not None:
        if not isinstance(header, dict):
            raise MalformedToken("JWT header is not an object")
        try:
            version = int(header.get("version", "3"))
        except (TypeError, ValueError, OverflowError):  # "version": 1e400 is infinity
            raise MalformedToken("header version is not a number") from None
        kid = header.get("kid")
        if header.get("typ") != "JWT" or version < 3 or kid is None:
            raise MalformedToken("JWT header mismatch")
    if not isinstance(payload, dict):
        raise MalformedToken("payload is not a JSON object")
    check_structure(payload, version)
    if kid is not None and not isinstance(kid, str):
        kid = str(kid)  # the SDK would crash on it; here it is just an unknown kid
    return AccessToken(raw=raw, version=version, kid=kid, payload=payload, jws=jws)


def _node_b64decode(segment: str) -> bytes:
    """Node's ``Buffer.from(segment, "base64")``: either alphabet, other characters skipped,
    everything from the first ``=`` ignored, stray bits dropped."""
    data = _NOT_BASE64.sub("", segment.partition("=")[0]).encode("ascii").translate(_URLSAFE_TO_STANDARD)
    rest = len(data) % 4
    if rest == 1:
        data, rest = data[:-1], 0
    return binascii.a2b_base64(data + _PADDING[rest])


def _node_json(segment: str) -> Any:
    """``JSON.parse(decodeBase64(segment))`` as supertokens-node and jose decode a segment."""
    return javascript.json_parse(_node_b64decode(segment).decode("utf-8", "replace"))


def parse_node(raw: str) -> AccessToken:
    """supertokens-node 24's ``parseJWTWithoutSignatureVerification`` and
    ``validateAccessTokenStructure``: the v1 header is a v2 token; ``version`` must be a JSON
    string read with ``parseInt``; ``kid`` may be null but not missing; v4+ need no ``tId``."""
    parts = raw.split(".")
    if len(parts) != 3:
        raise MalformedToken("a token has three dot-separated parts")
    version, kid, jws = 2, None, None
    try:
        if parts[0] not in (V1_HEADER, V2_HEADER):
            header = _node_json(parts[0])
            if not isinstance(header, dict):
                raise MalformedToken("JWT header is not an object")
            parsed = javascript.parse_int(header["version"]) if isinstance(header.get("version"), str) else (
                3.0 if "version" not in header else math.nan)
            if (header.get("typ") != "JWT" or not math.isfinite(parsed) or parsed != int(parsed) or parsed < 3
                    or "kid" not in header):
                raise MalformedToken("JWT header mismatch")
            version, kid = int(parsed), header["kid"]
            jws = Jws(header, f"{parts[0]}.{parts[1]}".encode("utf-8", "surrogatepass"), _node_b64decode(parts[2]))
        payload = _node_json(parts[1])
    except (ValueError, RecursionError, binascii.Error):
        raise MalformedToken("token segments are not base64 JSON") from None
    if not isinstance(payload, dict):
        raise MalformedToken("payload is not a JSON object")
    _check_structure_node(payload, version)
    if kid is not None and not isinstance(kid, str):
        kid = str(kid)  # no key has such an id: jose finds none for it
    return AccessToken(raw=raw, version=version, kid=kid, payload=payload, jws=jws)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_NODE_V3_CLAIMS = (("sub", str), ("exp", None), ("iat", None), ("sessionHandle", str), ("refreshTokenHash1", str))


def _check_structure_node(payload: dict[str, Any], version: int) -> None:
    """supertokens-node's ``validateAccessTokenStructure`` (``None``: a JavaScript number)."""
    stt = payload.get("stt", 0)
    if not is_number(stt) or stt != 0:
        raise MalformedToken("wrong token type (stt)")
    if version < 3:
        if "userData" not in payload:
            raise MalformedToken("v2 token without userData")
        required: tuple[tuple[str, type | None], ...] = (
            ("sessionHandle", str), ("userId", str), ("refreshTokenHash1", str), ("expiryTime", None),
            ("timeCreated", None))
    else:
        required = (*_NODE_V3_CLAIMS, ("rsub", str)) if version >= 5 else _NODE_V3_CLAIMS
    for claim, kind in required:
        value = payload.get(claim)
        if not (is_number(value) if kind is None else isinstance(value, kind)):
            raise MalformedToken(f"claim {claim} is missing or has the wrong type")


_NUMBER = (int, float)
_V3_CLAIMS = (("sub", str), ("exp", _NUMBER), ("iat", _NUMBER), ("sessionHandle", str), ("refreshTokenHash1", str))
#: The claims each token version must carry, with their JSON types (the SDK's ``validate_access_token_structure``).
_REQUIRED_CLAIMS = {
    2: (("sessionHandle", str), ("userId", str), ("refreshTokenHash1", str), ("expiryTime", _NUMBER),
        ("timeCreated", _NUMBER)),
    3: _V3_CLAIMS,
    4: (*_V3_CLAIMS, ("tId", str)),
    5: (*_V3_CLAIMS, ("tId", str), ("rsub", str)),
}


def check_structure(payload: dict[str, Any], version: int) -> None:
    """Raise :class:`MalformedToken` unless the payload has the claims its version needs."""
    if "stt" in payload:
        stt = payload["stt"]
        if isinstance(stt, bool) or stt != 0:
            raise MalformedToken("wrong token type (stt)")
    if version < 3 and payload.get("userData") is None:
        raise MalformedToken("v2 token without userData")
    for claim, kind in _REQUIRED_CLAIMS[min(version, 5)]:
        if not isinstance(payload.get(claim), kind):
            raise MalformedToken(f"claim {claim} is missing or has the wrong type")


def _b64url_canonical(segment: str) -> bytes | None:
    """One JWS segment decoded with PyJWT's (>= 2.14) acceptance rules at C speed, else ``None``.

    Up to two trailing ``=`` (only when the length is a multiple of 4), the base64url
    alphabet only, and the canonical encoding (no stray bits in the last character): what the
    SDK's PyJWT refuses is refused here too.
    """
    stripped = segment.rstrip("=")
    padded = len(segment) - len(stripped)
    rest = len(stripped) % 4
    if padded and (padded > 2 or len(segment) % 4) or rest == 1:
        return None
    if rest and stripped[-1] not in _CANONICAL_LAST[rest] or not stripped.isascii():
        return None
    data = stripped.encode("ascii")
    standard = data.translate(_URLSAFE_TO_STANDARD, b"+/")  # '+' and '/' are not base64url
    if len(standard) != len(data):
        return None
    try:
        return binascii.a2b_base64(standard + _PADDING[rest], strict_mode=True)
    except binascii.Error:
        return None
