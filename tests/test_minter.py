"""Tests for the token minting helpers, cross-checked with PyJWT and the SDK's parser."""

from __future__ import annotations

import base64
import binascii
import json

import jwt
import pytest
from jwt.types import Options
from supertokens_python.recipe.session.jwt import parse_jwt_without_signature_verification

from forward_auth.devcore.minter import (
    V2_HEADER,
    SigningKey,
    b64url_decode,
    b64url_encode,
    mint_v2,
    mint_v5,
    sha256_hex,
    v2_payload,
    v5_claims,
)

CREATED_MS = 1_700_000_000_999
EXPIRY_MS = CREATED_MS + 3_600_000
NO_EXPIRY_CHECK: Options = {"verify_exp": False}  # the fixed times above are in the past


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate("d-1700000000000")


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.generate("d-1700000000001")


def _claims(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "user_id": "user-1",
        "session_handle": "handle-1",
        "refresh_token_hash1": "rth1",
        "created_ms": CREATED_MS,
        "expiry_ms": EXPIRY_MS,
    }
    return v5_claims(**{**fields, **overrides})  # type: ignore[arg-type]


def _segment_json(segment: str) -> dict[str, object]:
    return json.loads(b64url_decode(segment))


def test_public_jwk_has_the_core_shape(key: SigningKey) -> None:
    jwk = key.public_jwk()

    assert set(jwk) == {"kty", "kid", "n", "e", "alg", "use"}
    assert (jwk["kty"], jwk["kid"], jwk["alg"], jwk["use"], jwk["e"]) == (
        "RSA",
        "d-1700000000000",
        "RS256",
        "sig",
        "AQAB",
    )
    assert "=" not in jwk["n"]
    assert len(b64url_decode(jwk["n"])) == 256  # 2048-bit modulus


def test_mint_v5_verifies_with_pyjwt_against_the_jwk(key: SigningKey) -> None:
    claims = _claims(custom={"st-role": {"v": ["admin"], "t": 1}})
    token = mint_v5(key, claims)

    decoded = jwt.decode(
        token, jwt.PyJWK.from_dict(key.public_jwk()), algorithms=["RS256"], options=NO_EXPIRY_CHECK
    )

    assert decoded == claims
    assert jwt.get_unverified_header(token) == {
        "alg": "RS256",
        "typ": "JWT",
        "kid": "d-1700000000000",
        "version": "5",
    }
    assert "=" not in token


def test_mint_v5_is_rejected_for_another_key(key: SigningKey, other_key: SigningKey) -> None:
    token = mint_v5(key, _claims())

    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            token,
            jwt.PyJWK.from_dict(other_key.public_jwk()),
            algorithms=["RS256"],
            options=NO_EXPIRY_CHECK,
        )


def test_mint_v5_version_and_header_overrides(key: SigningKey) -> None:
    v3 = mint_v5(key, _claims(), version="3")
    without_version = mint_v5(key, _claims(), header_overrides={"version": None})
    numeric = mint_v5(key, _claims(), header_overrides={"version": 5, "kid": "s-x"})

    assert _segment_json(v3.split(".")[0])["version"] == "3"
    assert "version" not in _segment_json(without_version.split(".")[0])
    numeric_header = _segment_json(numeric.split(".")[0])
    assert numeric_header == {"alg": "RS256", "typ": "JWT", "kid": "s-x", "version": 5}


def test_the_sdk_parses_minted_tokens(key: SigningKey) -> None:
    v5 = parse_jwt_without_signature_verification(mint_v5(key, _claims()))
    v2 = parse_jwt_without_signature_verification(mint_v2(key, {"userId": "u"}))

    assert (v5.version, v5.kid, v5.payload["sub"]) == (5, "d-1700000000000", "user-1")
    assert (v2.version, v2.kid, v2.payload) == (2, None, {"userId": "u"})


def test_mint_v2_uses_the_legacy_layout(key: SigningKey) -> None:
    payload = v2_payload(
        user_id="user-2",
        session_handle="handle-2",
        refresh_token_hash1="rth1",
        created_ms=CREATED_MS,
        expiry_ms=EXPIRY_MS,
    )
    token = mint_v2(key, payload)
    header, body, signature = token.split(".")

    assert header == V2_HEADER
    assert base64.b64decode(V2_HEADER) == b'{"alg":"RS256","typ":"JWT","version":"2"}'
    assert json.loads(base64.b64decode(body, validate=True)) == payload
    assert signature.endswith("==")  # 256 bytes in padded standard base64
    assert key.verify(base64.b64decode(signature, validate=True), f"{header}.{body}".encode())


def test_mint_v2_payload_is_compact_standard_base64(key: SigningKey) -> None:
    payload = {"userId": "~~~>>>???", "userData": {}}
    body = mint_v2(key, payload).split(".")[1]

    assert base64.b64decode(body) == b'{"userId":"~~~>>>???","userData":{}}'
    assert "+" in body or "/" in body  # the standard alphabet, not base64url


def test_v5_claims_floor_times_and_default_rsub() -> None:
    claims = _claims(custom={"role": "admin"})

    assert claims == {
        "sub": "user-1",
        "exp": 1_700_003_600,
        "iat": 1_700_000_000,
        "sessionHandle": "handle-1",
        "refreshTokenHash1": "rth1",
        "parentRefreshTokenHash1": None,
        "antiCsrfToken": None,
        "tId": "public",
        "rsub": "user-1",
        "role": "admin",
    }


def test_v5_claims_carry_refresh_lineage_tenant_and_recipe_user() -> None:
    claims = _claims(
        parent_refresh_token_hash1="parent",
        anti_csrf_token="csrf",
        tenant_id="tenant1",
        recipe_user_id="recipe-user",
    )

    assert (claims["parentRefreshTokenHash1"], claims["antiCsrfToken"]) == ("parent", "csrf")
    assert (claims["tId"], claims["rsub"], claims["sub"]) == ("tenant1", "recipe-user", "user-1")


def test_v5_claims_refuse_protected_custom_names() -> None:
    with pytest.raises(ValueError, match="sub, tId"):
        _claims(custom={"tId": "x", "sub": "y", "fine": 1})


def test_v2_payload_order_and_optional_fields() -> None:
    bare = v2_payload(
        user_id="u", session_handle="h", refresh_token_hash1="r", created_ms=1, expiry_ms=2
    )
    full = v2_payload(
        user_id="u",
        session_handle="h",
        refresh_token_hash1="r",
        created_ms=1,
        expiry_ms=2,
        parent_refresh_token_hash1="p",
        anti_csrf_token="a",
        user_data={"role": "admin"},
    )

    assert list(bare) == [
        "userId",
        "expiryTime",
        "timeCreated",
        "sessionHandle",
        "refreshTokenHash1",
        "userData",
    ]
    assert bare["userData"] == {}
    assert list(full)[5:] == ["parentRefreshTokenHash1", "antiCsrfToken", "userData"]
    assert full["userData"] == {"role": "admin"}


def test_sha256_hex() -> None:
    assert sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_base64url_round_trip_and_strictness() -> None:
    data = bytes(range(256))

    assert b64url_decode(b64url_encode(data)) == data
    for bad in ("ab+c", "ab/c", "abc=", "a"):
        with pytest.raises(binascii.Error):
            b64url_decode(bad)


def test_verify_rejects_tampered_messages(key: SigningKey, other_key: SigningKey) -> None:
    signature = key.sign(b"message")

    assert key.verify(signature, b"message")
    assert not key.verify(signature, b"messagE")
    assert not other_key.verify(signature, b"message")
