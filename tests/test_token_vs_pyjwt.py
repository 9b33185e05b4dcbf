"""The direct RS256 check accepts exactly what PyJWT 2.15 (the SDK's verifier) accepts.

Thousands of deterministic mutations of real tokens (segments re-padded, characters flipped,
alphabets swapped, headers and claims changed, re-signed or not) go through both.
"""

from __future__ import annotations

import base64
import json
import random
import time

import jwt
import pytest
from conftest import v5

from forward_auth import signature
from forward_auth import token as tokens
from forward_auth.devcore.minter import SigningKey, mint_v5
from forward_auth.errors import TryRefreshToken

NOW = time.time()
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SEGMENT_EDITS = ["", "=", "==", "===", "A", "AA", "AAA", "+", "/", "-", "_", "!", " ", "é", "Ag", "Ah"]
HEADER_VARIANTS = [{"alg": "RS512"}, {"alg": "none"}, {"alg": None}, {"kid": 7}, {"crit": ["b64"], "b64": True},
                   {"crit": ["b64"]}, {"crit": []}, {"crit": ["exp"]}, {"b64": False, "crit": ["b64"]},
                   {"typ": "JWT"}, {"jku": "http://evil"}, {"x5u": "http://evil"}]
CLAIM_VARIANTS = [{"aud": "a"}, {"aud": ""}, {"aud": []}, {"aud": ["x"]}, {"sub": 1}, {"jti": 5}, {"jti": "ok"},
                  {"exp": "1e20"}, {"exp": 2**70}, {"iat": "soon"}, {"iat": int(NOW) + 1000}, {"nbf": int(NOW) + 1000},
                  {"nbf": None}, {"exp": int(NOW) + 0.5}, {"exp": float("1e308")}, {"iss": "anything"}]


def pyjwt_accepts(raw: str, key: SigningKey) -> bool:
    try:
        jwt.decode(raw, key.private_key.public_key(), algorithms=["RS256"],
                   options={"verify_signature": True, "verify_exp": True})
    except Exception:  # noqa: BLE001 - any failure is a refusal, as the SDK treats it
        return False
    return True


def ours_accepts(raw: str, key: SigningKey) -> bool:
    parts = raw.split(".")
    decoded = tokens.decode_jws(parts) if len(parts) == 3 else None
    if decoded is None:
        return False
    _, payload, jws = decoded
    try:
        signature._verify_jwt(tokens.AccessToken(raw, 5, key.kid, payload, jws=jws), key.private_key.public_key(),
                           now=time.time())
    except TryRefreshToken:
        return False
    return True


def segment_mutations(raw: str, rng: random.Random) -> list[str]:
    parts = raw.split(".")
    out = []
    for index in range(3):
        for edit in SEGMENT_EDITS:
            for where in ("end", "start", "middle"):
                changed = list(parts)
                seg = changed[index]
                middle = len(seg) // 2
                changed[index] = {"end": seg + edit, "start": edit + seg, "middle": seg[:middle] + edit + seg[middle:]}[
                    where]
                out.append(".".join(changed))
        changed = list(parts)
        changed[index] = changed[index].replace("-", "+").replace("_", "/")
        out.append(".".join(changed))
        for last in ALPHABET:  # stray low bits in the last character: same bytes, non-canonical text
            changed = list(parts)
            changed[index] = changed[index][:-1] + last
            out.append(".".join(changed))
        flipped = list(parts)
        pos = rng.randrange(len(flipped[index])) if flipped[index] else 0
        if flipped[index]:
            ch = flipped[index][pos]
            flipped[index] = flipped[index][:pos] + ("A" if ch != "A" else "B") + flipped[index][pos + 1:]
            out.append(".".join(flipped))
    return out


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.fixture(scope="module")
def corpus(key: SigningKey) -> list[str]:
    rng = random.Random(20261123)
    base = [v5(key) for _ in range(3)]
    raws: list[str] = []
    for raw in base:
        raws.append(raw)
        raws += segment_mutations(raw, rng)
    claims = tokens.parse(base[0]).payload
    for header in HEADER_VARIANTS:
        raws.append(mint_v5(key, claims, header_overrides=header))
    for change in CLAIM_VARIANTS:
        raws.append(mint_v5(key, {**claims, **change}))
    # payloads that are not objects, or not JSON, correctly signed
    for body in (b"[1,2]", b"not json", b'"x"', b"\xff\xfe{}", b"{" * 5000 + b"}" * 5000):
        header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": key.kid, "version": "5"}).encode())
        signing = f"{header}.{b64(body)}"
        raws.append(f"{signing}.{b64(key.sign(signing.encode()))}")
    return raws


def test_the_corpus_is_large_and_mixed(corpus: list[str], key: SigningKey) -> None:
    verdicts = [pyjwt_accepts(raw, key) for raw in corpus]
    assert len(corpus) > 400 and 5 < sum(verdicts) < len(corpus) - 100


def test_same_verdict_as_pyjwt_for_every_variant(corpus: list[str], key: SigningKey) -> None:
    differing = [raw for raw in corpus if pyjwt_accepts(raw, key) != ours_accepts(raw, key)]
    assert differing == []
