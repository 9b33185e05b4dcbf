"""Pure helpers that mint SuperTokens access tokens (no I/O).

The development core signs its tokens with these helpers, and tests use them to
produce real signed tokens. Formats follow the SuperTokens core: v3 to v5 tokens
are RS256 JWTs with a ``kid`` and a string ``version`` header; v2 tokens use the
core's legacy layout (fixed header, padded standard base64 everywhere).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

#: The fixed v2 header: padded standard base64 of
#: ``{"alg":"RS256","typ":"JWT","version":"2"}``.
V2_HEADER = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsInZlcnNpb24iOiIyIn0="
#: The v1 header, the same with ``"version":"1"`` (v1 and v2 payloads are alike).
V1_HEADER = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsInZlcnNpb24iOiIxIn0="

_V3_CLAIMS = frozenset(
    {
        "sub",
        "exp",
        "iat",
        "sessionHandle",
        "refreshTokenHash1",
        "parentRefreshTokenHash1",
        "antiCsrfToken",
    }
)

#: Claims the core requires (and protects) in each JWT access token version.
REQUIRED_CLAIMS: Mapping[int, frozenset[str]] = {
    3: _V3_CLAIMS,
    4: _V3_CLAIMS | {"tId"},
    5: _V3_CLAIMS | {"tId", "rsub"},
}

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair with its key id, as the core keeps its signing keys."""

    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str) -> SigningKey:
        """Create a fresh 2048-bit RSA key (the core's key size)."""
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def public_jwk(self) -> dict[str, str]:
        """Return the public half as a JWK, shaped like the core's JWKS entries."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "kid": self.kid,
            "n": b64url_encode(_int_to_bytes(numbers.n)),
            "e": b64url_encode(_int_to_bytes(numbers.e)),
            "alg": "RS256",
            "use": "sig",
        }

    def sign(self, message: bytes) -> bytes:
        """Sign with SHA256withRSA (RSASSA-PKCS1-v1_5)."""
        return self.private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Return whether ``signature`` is this key's SHA256withRSA signature of ``message``."""
        try:
            self.private_key.public_key().verify(
                signature, message, padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return False
        return True


def mint_v5(
    key: SigningKey,
    claims: Mapping[str, Any],
    *,
    version: str = "5",
    header_overrides: Mapping[str, Any] | None = None,
) -> str:
    """Sign ``claims`` as an RS256 JWT the way the core signs v3+ access tokens.

    Args:
        key: The signing key; its ``kid`` goes into the header.
        claims: The payload, written as compact JSON.
        version: The ``version`` header value ("3", "4" or "5" for real tokens).
        header_overrides: Header entries to set; a ``None`` value removes the entry
            (e.g. ``{"version": None}`` for a token without a version header).

    Returns:
        The compact JWT (base64url segments without padding).
    """
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT", "kid": key.kid, "version": version}
    for name, value in (header_overrides or {}).items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    signing_input = f"{b64url_encode(_compact_json(header))}.{b64url_encode(_compact_json(claims))}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"


def mint_v2(key: SigningKey, payload: Mapping[str, Any], *, header: str = V2_HEADER) -> str:
    """Sign ``payload`` in the core's legacy v2 (or, with :data:`V1_HEADER`, v1) format.

    The header is a fixed string; payload and signature are padded standard base64, and the
    signature covers ``header + "." + payload``.
    """
    signing_input = f"{header}.{base64.b64encode(_compact_json(payload)).decode('ascii')}"
    signature = base64.b64encode(key.sign(signing_input.encode("ascii"))).decode("ascii")
    return f"{signing_input}.{signature}"


def v5_claims(
    *,
    user_id: str,
    session_handle: str,
    refresh_token_hash1: str,
    created_ms: int,
    expiry_ms: int,
    parent_refresh_token_hash1: str | None = None,
    anti_csrf_token: str | None = None,
    tenant_id: str = "public",
    recipe_user_id: str | None = None,
    custom: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the claim set of a v5 access token, custom claims at the root.

    ``exp`` and ``iat`` are whole seconds, floored like the core floors them.
    ``recipe_user_id`` defaults to ``user_id``.

    Raises:
        ValueError: A custom claim uses one of the core's protected names.
    """
    claims: dict[str, Any] = {
        "sub": user_id,
        "exp": expiry_ms // 1000,
        "iat": created_ms // 1000,
        "sessionHandle": session_handle,
        "refreshTokenHash1": refresh_token_hash1,
        "parentRefreshTokenHash1": parent_refresh_token_hash1,
        "antiCsrfToken": anti_csrf_token,
        "tId": tenant_id,
        "rsub": recipe_user_id if recipe_user_id is not None else user_id,
    }
    clashing = sorted(claims.keys() & (custom or {}).keys())
    if clashing:
        raise ValueError(f"custom claims use protected names: {', '.join(clashing)}")
    return {**claims, **(custom or {})}


def v2_payload(
    *,
    user_id: str,
    session_handle: str,
    refresh_token_hash1: str,
    created_ms: int,
    expiry_ms: int,
    parent_refresh_token_hash1: str | None = None,
    anti_csrf_token: str | None = None,
    user_data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a v2 payload in the core's key order; times are in milliseconds.

    Like the current core, ``parentRefreshTokenHash1`` and ``antiCsrfToken`` are
    written only when they are not ``None``.
    """
    payload: dict[str, Any] = {
        "userId": user_id,
        "expiryTime": expiry_ms,
        "timeCreated": created_ms,
        "sessionHandle": session_handle,
        "refreshTokenHash1": refresh_token_hash1,
    }
    if parent_refresh_token_hash1 is not None:
        payload["parentRefreshTokenHash1"] = parent_refresh_token_hash1
    if anti_csrf_token is not None:
        payload["antiCsrfToken"] = anti_csrf_token
    payload["userData"] = dict(user_data or {})
    return payload


def sha256_hex(text: str) -> str:
    """Return the SHA-256 hex digest of ``text``, as used for refresh token hashes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def b64url_encode(data: bytes) -> str:
    """Encode as base64url without padding (JWT segment encoding)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Decode an unpadded base64url segment, rejecting characters outside that alphabet.

    Raises:
        binascii.Error: The segment is not valid base64url.
    """
    if not _BASE64URL.fullmatch(segment):
        raise binascii.Error("not a base64url segment")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _compact_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _int_to_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")
