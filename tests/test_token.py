"""Token parsing and signature checks, with real signed tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import jwt
import pytest
from conftest import v2, v5
from cryptography.hazmat.primitives import serialization

from forward_auth import token as tokens
from forward_auth.devcore.minter import SigningKey, mint_v5
from forward_auth.errors import TryRefreshToken
from forward_auth.signature import verify_signature

# The only pre-made v2 token upstream (supertokens-python tests; its key is unknown).
UPSTREAM_V2 = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsInZlcnNpb24iOiIyIn0=.eyJzZXNzaW9uSGFuZGxlIjoiZWI3ZjBkNTUtNjgwNy00NDFkLTlhNjEt"
    "M2VhM2IyNmZiNWQwIiwidXNlcklkIjoiNmZiNGRkY2UtODkxMS00MDU4LTkyYWMtYzc2MDU3ZmRhYWU4IiwicmVmcmVzaFRva2VuSGFzaDEiOiJj"
    "OTA0OTk2YzEzZmFjMzc2ZjllMmI2MTM0OTg4MjUyYTc1NjAzNGY0ZTAzYmYxMGQ3NGUyOTA0MjE2OWQzZjkxIiwicGFyZW50UmVmcmVzaFRva2Vu"
    "SGFzaDEiOm51bGwsInVzZXJEYXRhIjp7fSwiYW50aUNzcmZUb2tlbiI6bnVsbCwiZXhwaXJ5VGltZSI6MTY4MzIwNzE2NDM2NSwidGltZUNyZWF0"
    "ZWQiOjE2ODMyMDM1NjQzNjUsImxtcnQiOjE2ODMyMDM1NjQzNjV9.MYtsq8yc3/gAymFd148oDdHvH1p6T67lNhnSEUJ+Kroxx4Lv2sdFrvpyQ4m8"
    "fHfN0g1C6nOSqMArQarj4hDqykFR9YbpUPdKyEg/rnPhoRR7BtgYg05fQ46EURkItnHNCywBC/vyvJLyG2tzGYWPzXchbr7DySxp+mBsu9AeFTUU"
    "qCw9W2bJ5VWIILhqlR7S/QH2yl3bRbwb0VaqUe+Ekc/68tKCpOnsg2ukWDSBVOWxXxr8/odYLdVyu8xyyH71GTol62jqrCkSDyQ0pnhyGspAaaT3"
    "98QOYCwOV98ztrrvVNtoFLs8TW/aVj3kBHHUT29OY8yEs2odksIaL48J2w=="
)


def public(key: SigningKey):  # noqa: ANN201 - an RSAPublicKey
    return key.private_key.public_key()


def test_upstream_v2_fixture_parses_as_version_2() -> None:
    token = tokens.parse(UPSTREAM_V2)
    assert (token.version, token.kid, token.user_id) == (2, None, "6fb4ddce-8911-4058-92ac-c76057fdaae8")
    assert token.parent_refresh_token_hash is None and token.anti_csrf_token is None


def test_upstream_v2_fixture_is_refused_by_pyjwt_which_is_why_v2_has_its_own_check(key: SigningKey) -> None:
    with pytest.raises(jwt.DecodeError):
        jwt.decode(UPSTREAM_V2, public(key), algorithms=["RS256"])


def test_v5_fields(key: SigningKey) -> None:
    token = tokens.parse(v5(key, tId="tenant-a", rsub="recipe-1"))
    assert (token.version, token.kid, token.user_id) == (5, key.kid, "user-1")
    assert (token.tenant_id, token.recipe_user_id, token.session_handle) == ("tenant-a", "recipe-1", "handle-1")


@pytest.mark.parametrize(
    ("header", "version"),
    [({"version": None}, 3), ({"version": 5}, 5), ({"version": "4"}, 4)],
)
def test_version_header_rules_follow_the_sdk(key: SigningKey, header: dict, version: int) -> None:
    assert tokens.parse(v5(key, header=header)).version == version


@pytest.mark.parametrize(
    "raw",
    [
        "", "a.b", "a.b.c.d", "!!!.???.###", "eyJhIjoxfQ.eyJhIjoxfQ.sig",
        "\udcff.x.y", "x" * 20000,
    ],
)
def test_garbage_is_malformed_not_a_crash(raw: str) -> None:
    with pytest.raises(tokens.MalformedToken):
        tokens.parse(raw)


@pytest.mark.parametrize(
    ("changes", "header"),
    [
        ({"tId": None}, None),
        ({"rsub": None}, None),
        ({"stt": 1}, None),
        ({"stt": True}, None),
        ({"sub": 42}, None),
        ({"exp": "soon"}, None),
        ({}, {"typ": None}),
        ({}, {"version": "abc"}),
        ({}, {"version": "2"}),
        ({}, {"version": [5]}),
        ({}, {"kid": None}),
    ],
)
def test_structure_failures_are_malformed(key: SigningKey, changes: dict, header: dict | None) -> None:
    with pytest.raises(tokens.MalformedToken):
        tokens.parse(v5(key, header=header, **changes))


def test_v1_header_is_not_accepted_as_the_sdk_does(key: SigningKey) -> None:
    v1_header = base64.b64encode(b'{"alg":"RS256","typ":"JWT","version":"1"}').decode()
    _, payload, signature = v2(key).split(".")
    with pytest.raises(tokens.MalformedToken):
        tokens.parse(f"{v1_header}.{payload}.{signature}")


def test_an_infinite_header_version_is_malformed_not_a_crash(key: SigningKey) -> None:
    raw = v5(key, header={"version": 1e400})  # serialised as Infinity
    with pytest.raises(tokens.MalformedToken):
        tokens.parse(raw)


def test_a_client_sized_header_is_decoded_but_never_remembered(key: SigningKey) -> None:
    before = tokens._remembered_header.cache_info()
    raw = v5(key, header={"padding": "x" * 2000})
    assert tokens.parse(raw).kid == key.kid
    assert tokens._remembered_header.cache_info().currsize == before.currsize
    tokens.parse(v5(key))
    assert tokens._remembered_header.cache_info().hits + tokens._remembered_header.cache_info().misses > (
        before.hits + before.misses)


def test_payload_must_be_an_object(key: SigningKey) -> None:
    header = base64.urlsafe_b64encode(json.dumps({"typ": "JWT", "kid": "k", "version": "5"}).encode()).decode()
    with pytest.raises(tokens.MalformedToken):
        tokens.parse(f"{header}.{base64.urlsafe_b64encode(b'[1,2]').decode()}.sig")


def test_valid_v5_verifies(key: SigningKey) -> None:
    verify_signature(tokens.parse(v5(key)), [public(key)], now=time.time())


@pytest.mark.parametrize("edit", [lambda seg: seg[:8] + "!" + seg[8:], lambda seg: seg + " "])
@pytest.mark.parametrize("segment", [0, 1])
def test_what_only_the_sdks_lenient_decoding_reads_parses_and_then_fails_pyjwts_rules(
        key: SigningKey, segment: int, edit: Callable[[str], str]) -> None:
    parts = v5(key).split(".")
    parts[segment] = edit(parts[segment])
    raw = ".".join(parts)
    assert tokens.decode_jws(parts) is None  # not canonical: the decode-once path does not apply
    token = tokens.parse(raw)  # the SDK's own parse reads it all the same
    assert token.kid == key.kid and token.payload["sub"] == "user-1"
    with pytest.raises(TryRefreshToken) as refused:
        verify_signature(token, [public(key)], now=time.time())
    assert refused.value.reason == "invalid-token"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": "now"}, "expired"),
        ({"iat": "future"}, "future-iat"),
        ({"nbf": "future"}, "immature"),
        ({"aud": "someone"}, "invalid-token"),
        ({"jti": 7}, "invalid-token"),
    ],
)
def test_time_and_claim_rules_of_pyjwt_give_try_refresh(key: SigningKey, changes: dict, reason: str) -> None:
    now = int(time.time())
    values = {"now": now, "future": now + 5}
    claims = {k: values.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    with pytest.raises(TryRefreshToken) as info:
        verify_signature(tokens.parse(v5(key, **claims)), [public(key)], now=now)
    assert info.value.reason == reason


def test_wrong_key_and_tampering_are_bad_signatures(key: SigningKey, foreign_key: SigningKey) -> None:
    with pytest.raises(TryRefreshToken, match="signature"):
        verify_signature(tokens.parse(v5(key)), [public(foreign_key)], now=time.time())
    header, payload, signature = v5(key).split(".")
    claims = tokens.parse(v5(key)).payload | {"sub": "admin"}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(TryRefreshToken) as refused:
        verify_signature(tokens.parse(f"{header}.{forged}.{signature}"), [public(key)], now=time.time())
    assert refused.value.reason == "bad-signature"


def test_hs256_signed_with_the_public_key_is_refused(key: SigningKey) -> None:
    """Algorithm confusion: the public key PEM used as an HMAC secret."""
    pem = public(key).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = tokens.parse(v5(key)).payload
    forged = _hs256(claims, pem, key.kid)
    with pytest.raises(TryRefreshToken) as info:
        verify_signature(tokens.parse(forged), [public(key)], now=time.time())
    assert info.value.reason == "bad-algorithm"


def _hs256(claims: dict, secret: bytes, kid: str) -> str:
    def seg(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing = seg(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid, "version": "5"}).encode()) + "." + seg(
        json.dumps(claims).encode())
    return signing + "." + seg(hmac.new(secret, signing.encode(), hashlib.sha256).digest())


def test_alg_none_is_refused(key: SigningKey) -> None:
    token = mint_v5(key, tokens.parse(v5(key)).payload, header_overrides={"alg": "none"})
    unsigned = token.rsplit(".", 1)[0] + "."
    with pytest.raises(TryRefreshToken):
        verify_signature(tokens.parse(unsigned), [public(key)], now=time.time())


def test_no_candidate_key_is_unknown_kid(key: SigningKey) -> None:
    with pytest.raises(TryRefreshToken) as info:
        verify_signature(tokens.parse(v5(key)), [], now=time.time())
    assert info.value.reason == "unknown-kid"


def test_v2_verifies_locally_against_any_key(key: SigningKey, foreign_key: SigningKey) -> None:
    token = tokens.parse(v2(key))
    assert token.version == 2 and token.custom_claims == {"role": "admin"}
    verify_signature(token, [public(foreign_key), public(key)], now=time.time())
    with pytest.raises(TryRefreshToken):
        verify_signature(token, [public(foreign_key)], now=time.time())


def test_valid_until_follows_the_sdks_expiry_rules(key: SigningKey) -> None:
    assert tokens.parse(v5(key, exp=1000)).valid_until == 1000.0
    assert tokens.parse(v5(key, exp=1000.7)).valid_until == 1000.0  # PyJWT: int(exp) <= now is expired
    assert tokens.parse(v2(key, expiryTime=1_000_500)).valid_until == 1000.5


def test_v2_with_float_times_is_refused_as_the_sdk_does(key: SigningKey) -> None:
    token = tokens.parse(v2(key, expiryTime=time.time() * 1000 + 60000.5))
    with pytest.raises(TryRefreshToken):
        verify_signature(token, [public(key)], now=time.time())


@pytest.mark.parametrize("text", [
    '{"a":1}', ' {"a":1}', '{"a":1} ', '{"a":1}\n', '{"a":1}x', '{"a":1}{}', '{"a":', '{', '{}', '[1]', '"s"', '',
    '{"a":NaN,"b":Infinity}', '{"a":1,"a":2}', '{"a":1e400}', '{"a":"\\ud800"}', '{"a":"\x00"}', '{"a":[' * 5 + ']' * 5,
])
def test_json_fast_path_matches_json_loads(text: str) -> None:
    try:
        expected: object = json.loads(text)
    except ValueError as exc:
        expected = type(exc)
    try:
        got: object = tokens._json(text)
    except ValueError as exc:
        got = type(exc)
    assert repr(got) == repr(expected)
