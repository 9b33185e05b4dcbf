"""The signature of a SuperTokens access token (pure, no I/O).

Signatures are checked with RS256 only, the algorithm pinned (never taken from the token
header), directly with ``cryptography``: v3-v5 under the JWS/JWT rules PyJWT 2.15 applies for the
SDK (``tests/test_token_vs_pyjwt.py`` holds the two to the same answers), v2 in the legacy padded
standard-base64 format, which PyJWT >= 2.14 refuses to parse.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from .errors import TryRefreshToken
from .token import AccessToken, is_number

_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def verify_signature(token: AccessToken, keys: Sequence[RSAPublicKey], *, now: float, skew: float = 0.0,
                     sdk_profile: str = "python") -> None:
    """Check the signature (and, for v3+, the JWT rules of PyJWT or, under the node profile,
    jose); raise :class:`TryRefreshToken`. ``skew`` (seconds) is how far ``iat`` and ``nbf`` may
    lie in the future.

    ``keys`` are the candidate keys: the one matching the ``kid`` for v3+, every key of the
    JWKS for v2. ``now`` is in seconds. The SDK's own millisecond expiry check is
    :func:`forward_auth.verifier.check_local`'s, run on every request.
    """
    if not keys:
        raise TryRefreshToken("no signing key matches the token", reason="unknown-kid")
    if token.version >= 3:
        _verify_jwt(token, keys[0], now=now, skew=skew, jose=sdk_profile == "node")
    else:
        _verify_legacy(token, keys)


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


def _verify_jwt(token: AccessToken, key: RSAPublicKey, *, now: float, skew: float = 0.0, jose: bool = False) -> None:
    """RS256 JWS and JWT claim rules as PyJWT 2.15 applies them for supertokens-python (or, with
    ``jose``, as jose 4's ``jwtVerify`` does for supertokens-node), done directly.

    PyJWT spends most of a decode in a pure-Python alphabet scan; the same rules take a few
    microseconds here, on segments :func:`parse` already decoded. PyJWT stays in charge of JWK
    parsing (``jwks.py``), which it does well.
    """
    jws = token.jws
    if jws is None:  # a segment PyJWT refuses to decode
        raise TryRefreshToken("token segments are not canonical base64url JSON", reason="invalid-token")
    _check_jws_header(jws.header)
    try:
        key.verify(jws.signature, jws.signing_input, _PKCS1V15, _SHA256)
    except InvalidSignature:
        raise TryRefreshToken("signature does not verify", reason="bad-signature") from None
    payload = token.payload
    if not isinstance(payload, dict):
        raise TryRefreshToken("payload is not a JSON object", reason="invalid-token")
    if jose:  # jwt_claims_set.js without options: no iat, aud, sub or jti rule; whole seconds
        _check_times_jose(payload, now=math.floor(now), skew=skew)
        return
    _check_times(payload, now=now, skew=skew)
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


def _check_times(payload: dict[str, Any], *, now: float, skew: float) -> None:
    # PyJWT's own rules (as the SDK runs them, leeway 0), with an injectable clock: exp <= now
    # is expired; an iat or nbf in the future (beyond the configured skew) is refused.
    if "iat" in payload and _as_int(payload, "iat") > now + skew:
        raise TryRefreshToken("token issued in the future (iat): is the gate's clock behind the core's?",
                              reason="future-iat")
    if "nbf" in payload and _as_int(payload, "nbf") > now + skew:
        raise TryRefreshToken("token not yet valid (nbf)", reason="immature")
    if "exp" in payload and _as_int(payload, "exp") <= now:
        raise TryRefreshToken("access token expired", reason="expired")


def _check_times_jose(payload: dict[str, Any], *, now: int, skew: float) -> None:
    # jose 4: nbf > now is refused (beyond the skew), exp <= now is expired; each a number if set.
    for claim in ("iat", "nbf", "exp"):
        if claim in payload and not is_number(payload[claim]):
            raise TryRefreshToken(f"claim {claim} must be a number", reason="invalid-token")
    if "nbf" in payload and payload["nbf"] > now + skew:
        raise TryRefreshToken("token not yet valid (nbf)", reason="immature")
    if "exp" in payload and payload["exp"] <= now:
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
            key.verify(signature_bytes, signed, _PKCS1V15, _SHA256)
            return
        except InvalidSignature:
            continue
    raise TryRefreshToken("signature does not verify", reason="bad-signature")
