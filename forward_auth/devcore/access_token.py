"""How the development core reads an access token it is sent: the header, the signature against
its keys, the claims of each version (the core's rules and its messages); :mod:`.state` answers
with what it reads."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .minter import REQUIRED_CLAIMS, V2_HEADER, SigningKey, b64url_decode

PUBLIC_TENANT = "public"
LATEST_VERSION = 5


class InvalidAccessToken(Exception):
    """The access token is unusable; the core answers TRY_REFRESH_TOKEN (or UNAUTHORISED)."""


@dataclass(frozen=True)
class AccessToken:
    """The fields the core reads from a signature-checked access token."""

    version: int
    session_handle: str
    user_id: str
    recipe_user_id: str
    tenant_id: str
    refresh_token_hash1: str
    parent_refresh_token_hash1: str | None
    anti_csrf_token: str | None
    expiry_ms: float
    custom_claims: dict[str, Any]

    def session_json(self) -> dict[str, Any]:
        """Return the ``session`` object built from the token alone."""
        return {
            "handle": self.session_handle,
            "userId": self.user_id,
            "recipeUserId": self.recipe_user_id,
            "userDataInJWT": self.custom_claims,
            "tenantId": self.tenant_id,
        }


def read_access_token(token: str, keys: Mapping[str, SigningKey]) -> AccessToken:
    """Parse a token and check its signature against ``keys`` (by kid; every key for v2)."""
    header, payload, signature = _split(token)
    try:
        if header == V2_HEADER:
            version, kid = 2, None
            claims = json.loads(base64.b64decode(payload, validate=True))
            signature_bytes = base64.b64decode(signature, validate=True)
        else:
            version, kid = _read_header(json.loads(b64url_decode(header)))
            claims = json.loads(b64url_decode(payload))
            signature_bytes = b64url_decode(signature)
    except (binascii.Error, ValueError) as exc:
        raise InvalidAccessToken("Invalid JWT") from exc
    if kid is None:
        candidates = list(keys.values())
    elif kid in keys:
        candidates = [keys[kid]]
    else:
        raise InvalidAccessToken("Key not found")
    signing_input = f"{header}.{payload}".encode("ascii")
    if not any(key.verify(signature_bytes, signing_input) for key in candidates):
        raise InvalidAccessToken("JWT verification failed")
    if not isinstance(claims, dict):
        raise InvalidAccessToken("Invalid JWT")
    return _read_claims(version, claims)


def _split(token: str) -> tuple[str, str, str]:
    parts = token.split(".")
    if len(parts) != 3 or not token.isascii():
        raise InvalidAccessToken("Invalid JWT")
    return parts[0], parts[1], parts[2]


def _read_header(header: Any) -> tuple[int, str]:
    """Apply the core's header rules: RS256 JWT, string version 3-5 (default 5), a kid."""
    if not isinstance(header, dict) or header.get("typ") != "JWT" or header.get("alg") != "RS256":
        raise InvalidAccessToken("JWT header mismatch")
    version = header.get("version", str(LATEST_VERSION))
    kid = header.get("kid")
    if version not in ("3", "4", "5") or not isinstance(kid, str):
        raise InvalidAccessToken("JWT header mismatch")
    return int(version), kid


def _read_claims(version: int, claims: dict[str, Any]) -> AccessToken:
    """Read the session fields of a verified payload, checking presence and types."""
    if version == 2:
        user_id = _claim(claims, "userId", str)
        return AccessToken(
            version=2,
            session_handle=_claim(claims, "sessionHandle", str),
            user_id=user_id,
            recipe_user_id=user_id,
            tenant_id=PUBLIC_TENANT,
            refresh_token_hash1=_claim(claims, "refreshTokenHash1", str),
            parent_refresh_token_hash1=_claim(claims, "parentRefreshTokenHash1", (str, type(None))),
            anti_csrf_token=_claim(claims, "antiCsrfToken", (str, type(None))),
            expiry_ms=_claim(claims, "expiryTime", (int, float)),
            custom_claims=_claim(claims, "userData", dict),
        )
    required = REQUIRED_CLAIMS[version]
    if not required <= claims.keys():
        raise InvalidAccessToken("Access token does not contain all the required claims")
    user_id = _claim(claims, "sub", str)
    return AccessToken(
        version=version,
        session_handle=_claim(claims, "sessionHandle", str),
        user_id=user_id,
        recipe_user_id=_claim(claims, "rsub", str) if version >= 5 else user_id,
        tenant_id=_claim(claims, "tId", str) if version >= 4 else PUBLIC_TENANT,
        refresh_token_hash1=_claim(claims, "refreshTokenHash1", str),
        parent_refresh_token_hash1=_claim(claims, "parentRefreshTokenHash1", (str, type(None))),
        anti_csrf_token=_claim(claims, "antiCsrfToken", (str, type(None))),
        expiry_ms=_claim(claims, "exp", (int, float)) * 1000,
        custom_claims={name: value for name, value in claims.items() if name not in required},
    )


def _claim(claims: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidAccessToken(f"Access token claim {name!r} is missing or has the wrong type")
    return value
