"""SuperTokens access tokens: parsing, structure checks and signature checks (pure, no I/O).

Parsing follows supertokens-python 0.31.x (``recipe/session/jwt.py``) byte for byte, so a
token the SDK would ignore is ignored here too. Signatures are checked with RS256 only, the
algorithm pinned (never taken from the token header), directly with ``cryptography``: v3-v5
under the JWS/JWT rules PyJWT 2.15 applies for the SDK (``tests/test_token_vs_pyjwt.py`` holds
the two to the same answers), v2 in the legacy padded standard-base64 format, which PyJWT >= 2.14
refuses to parse.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from .errors import TryRefreshToken

#: The fixed header of v2 tokens: padded standard base64 of the compact, sorted JSON.
V2_HEADER = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsInZlcnNpb24iOiIyIn0="
DEFAULT_TENANT = "public"
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class MalformedToken(ValueError):
    """The string is not a SuperTokens access token (the SDK ignores such tokens)."""


@dataclass(frozen=True)
class AccessToken:
    """A parsed, structure-checked access token whose signature is not yet checked."""

    raw: str
    version: int
    kid: str | None
    payload: dict[str, Any]

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
    def tenant_id(self) -> str:
        return self.payload["tId"] if self.version >= 4 else DEFAULT_TENANT

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


def parse(raw: str) -> AccessToken:
    """Parse and structure-check a token as the SDK does, or raise :class:`MalformedToken`."""
    try:
        parts = raw.split(".")
        if len(parts) != 3:
            raise MalformedToken("a token has three dot-separated parts")
        header, payload_segment, _ = parts
        version, kid = 2, None
        if header != V2_HEADER:
            parsed_header = json.loads(_lenient_b64decode(header))
            try:
                version = int(parsed_header.get("version", "3"))
            except (TypeError, ValueError):
                raise MalformedToken("header version is not a number") from None
            kid = parsed_header.get("kid")
            if parsed_header["typ"] != "JWT" or version < 3 or kid is None:
                raise MalformedToken("JWT header mismatch")
        payload = json.loads(_lenient_b64decode(payload_segment))
    except MalformedToken:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error, RecursionError):
        raise MalformedToken("token segments are not base64 JSON") from None
    if not isinstance(payload, dict):
        raise MalformedToken("payload is not a JSON object")
    check_structure(payload, version)
    if kid is not None and not isinstance(kid, str):
        kid = str(kid)  # the SDK would crash on it; here it is just an unknown kid
    return AccessToken(raw=raw, version=version, kid=kid, payload=payload)


def check_structure(payload: dict[str, Any], version: int) -> None:
    """Raise :class:`MalformedToken` unless the payload has the claims its version needs."""
    stt = payload.get("stt", 0)
    if "stt" in payload and (isinstance(stt, bool) or stt != 0):
        raise MalformedToken("wrong token type (stt)")
    number = (int, float)
    if version >= 3:
        required = {"sub": str, "exp": number, "iat": number, "sessionHandle": str, "refreshTokenHash1": str}
        if version >= 4:
            required["tId"] = str
        if version >= 5:
            required["rsub"] = str
    else:
        required = {"sessionHandle": str, "userId": str, "refreshTokenHash1": str,
                    "expiryTime": number, "timeCreated": number}
        if payload.get("userData") is None:
            raise MalformedToken("v2 token without userData")
    for claim, kind in required.items():
        if not isinstance(payload.get(claim), kind):
            raise MalformedToken(f"claim {claim} is missing or has the wrong type")


def verify_signature(token: AccessToken, keys: Sequence[RSAPublicKey], *, now: float) -> None:
    """Check the signature (and, for v3+, PyJWT's time and claim rules); raise :class:`TryRefreshToken`.

    ``keys`` are the candidate keys: the one matching the ``kid`` for v3+, every key of the
    JWKS for v2. ``now`` is in seconds. The SDK's own millisecond expiry check is
    :func:`forward_auth.verifier.check_local`'s, run on every request.
    """
    if not keys:
        raise TryRefreshToken("no signing key matches the token", reason="unknown-kid")
    if token.version >= 3:
        _verify_jwt(token, keys[0], now=now)
    else:
        _verify_legacy(token, keys)


def _jws_segment(segment: str) -> bytes:
    """Decode one JWS segment with PyJWT's (>= 2.14) acceptance rules, at C speed.

    Up to two trailing ``=`` (only when the length is a multiple of 4), the base64url
    alphabet only, and the canonical encoding (no stray bits): what the SDK's PyJWT refuses
    is refused here too.
    """
    stripped = segment.rstrip("=")
    padding = len(segment) - len(stripped)
    if padding > 2 or (padding and len(segment) % 4) or len(stripped) % 4 == 1 or not _B64URL.fullmatch(stripped):
        raise TryRefreshToken("token segment is not base64url", reason="invalid-token")
    decoded = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode("ascii") != stripped:
        raise TryRefreshToken("token segment is not canonical base64url", reason="invalid-token")
    return decoded


def _check_jws_header(header: Any) -> None:
    # PyJWT's header rules for a non-detached JWS verified with algorithms=["RS256"].
    if not isinstance(header, dict):
        raise TryRefreshToken("JWS header is not an object", reason="invalid-token")
    if "kid" in header and not isinstance(header["kid"], str):
        raise TryRefreshToken("kid is not a string", reason="invalid-token")
    crit = header.get("crit", None)
    if "crit" in header and (not isinstance(crit, list) or not crit or any(
            not isinstance(ext, str) or ext != "b64" or ext not in header for ext in crit)):
        raise TryRefreshToken("unsupported critical header", reason="invalid-token")
    if header.get("b64", True) is False:
        raise TryRefreshToken("detached payloads are not access tokens", reason="invalid-token")
    if header.get("alg") != "RS256":
        raise TryRefreshToken("token is not signed with RS256", reason="bad-algorithm")


def _verify_jwt(token: AccessToken, key: RSAPublicKey, *, now: float) -> None:
    """RS256 JWS and JWT claim rules as PyJWT 2.15 applies them for the SDK, done directly.

    PyJWT spends most of a decode in a pure-Python alphabet scan; the same rules take a few
    microseconds here. PyJWT stays in charge of JWK parsing (``jwks.py``), which it does well.
    """
    header_segment, payload_segment, signature_segment = token.raw.split(".")
    try:
        header = json.loads(_jws_segment(header_segment))
        _check_jws_header(header)
        payload_bytes = _jws_segment(payload_segment)
        signature = _jws_segment(signature_segment)
    except (ValueError, RecursionError) as exc:
        raise TryRefreshToken(f"token rejected: {exc.__class__.__name__}", reason="invalid-token") from None
    try:
        key.verify(signature, f"{header_segment}.{payload_segment}".encode("ascii"), padding.PKCS1v15(),
                   hashes.SHA256())
    except InvalidSignature:
        raise TryRefreshToken("signature does not verify", reason="bad-signature") from None
    try:
        payload = json.loads(payload_bytes)
    except (ValueError, RecursionError):
        raise TryRefreshToken("payload is not JSON", reason="invalid-token") from None
    if not isinstance(payload, dict):
        raise TryRefreshToken("payload is not a JSON object", reason="invalid-token")
    _check_times(payload, now=now)
    if payload.get("aud"):
        raise TryRefreshToken("an audience is set and none is expected", reason="invalid-token")
    if "sub" in payload and not isinstance(payload["sub"], str) or "jti" in payload and not isinstance(
            payload["jti"], str):
        raise TryRefreshToken("sub and jti must be strings", reason="invalid-token")


def _as_int(payload: dict[str, Any], claim: str) -> int:
    try:
        return int(payload[claim])
    except (TypeError, ValueError, OverflowError):
        raise TryRefreshToken(f"claim {claim} must be an integer", reason="invalid-token") from None


def _check_times(payload: dict[str, Any], *, now: float) -> None:
    # PyJWT's own rules (as the SDK runs them, leeway 0), with an injectable clock: exp <= now
    # is expired; an iat or nbf in the future is refused.
    if "iat" in payload and _as_int(payload, "iat") > now:
        raise TryRefreshToken("token issued in the future (iat)", reason="immature")
    if "nbf" in payload and _as_int(payload, "nbf") > now:
        raise TryRefreshToken("token not yet valid (nbf)", reason="immature")
    if "exp" in payload and _as_int(payload, "exp") <= now:
        raise TryRefreshToken("access token expired", reason="expired")


def _verify_legacy(token: AccessToken, keys: Sequence[RSAPublicKey]) -> None:
    created, expiry = token.payload["timeCreated"], token.payload["expiryTime"]
    if not isinstance(created, int) or not isinstance(expiry, int):
        raise TryRefreshToken("legacy token times are not integers", reason="invalid-token")
    header, payload, signature = token.raw.split(".")
    try:
        signature_bytes = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise TryRefreshToken("legacy signature is not base64", reason="bad-signature") from None
    signed = f"{header}.{payload}".encode("ascii", "replace")
    for key in keys:
        try:
            key.verify(signature_bytes, signed, padding.PKCS1v15(), hashes.SHA256())
            return
        except InvalidSignature:
            continue
    raise TryRefreshToken("signature does not verify", reason="bad-signature")
