"""Claim validators: the SDK's semantics and reason objects, on plain payloads."""

from __future__ import annotations

import pytest

from forward_auth.claims import Validator, failures

NOW = 1_700_000_000_000
ROLES = {"st-role": {"v": ["admin", "user"], "t": NOW - 5000}}


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        ("includes", "admin", True), ("includes", "root", False),
        ("excludes", "root", True), ("excludes", "user", False),
        ("includes_all", ["admin", "user"], True), ("includes_all", ["admin", "root"], False),
        ("includes_any", ["root", "user"], True), ("includes_any", ["root", "x"], False),
        ("excludes_all", ["root", "x"], True), ("excludes_all", ["root", "admin"], False),
    ],
)
def test_array_validators(kind: str, value: object, ok: bool) -> None:
    reason = Validator("st-role", kind, value).reason(ROLES, NOW)
    assert (reason is None) is ok
    if not ok:
        assert reason is not None and reason["message"] == "wrong value" and reason["actualValue"] == ["admin", "user"]


def test_expected_key_names_follow_the_sdk() -> None:
    assert "expectedToNotInclude" in Validator("st-role", "excludes", "user").reason(ROLES, NOW)
    assert "expectedToIncludeAtLeastOneOf" in Validator("st-role", "includes_any", ["x"]).reason(ROLES, NOW)
    assert "expectedValue" in Validator("st-ev", "has_value", True).reason({"st-ev": {"v": False, "t": NOW}}, NOW)


def test_missing_value() -> None:
    assert Validator("st-perm", "includes", "edit").reason(ROLES, NOW) == {
        "message": "value does not exist", "expectedToInclude": "edit", "actualValue": None}


def test_max_age_expires_a_stale_claim() -> None:
    reason = Validator("st-role", "includes", "admin", max_age_seconds=2).reason(ROLES, NOW)
    assert reason == {"message": "expired", "ageInSeconds": 5.0, "maxAgeInSeconds": 2}
    assert Validator("st-role", "includes", "admin", max_age_seconds=10).reason(ROLES, NOW) is None


def test_claim_that_is_not_an_object_does_not_exist() -> None:
    assert Validator("st-role", "includes", "a").reason({"st-role": ["a"]}, NOW)["message"] == "value does not exist"


def test_failures_list_every_failing_validator_with_its_id() -> None:
    validators = [Validator("st-role", "includes", "admin"), Validator("st-role", "includes", "root", id="must-root"),
                  Validator("st-perm", "includes", "edit")]
    assert [e["id"] for e in failures(validators, ROLES, NOW)] == ["must-root", "st-perm"]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        Validator("st-role", "contains", "x")


@pytest.mark.parametrize(
    ("validator", "payload", "ok"),
    [
        (Validator("plan", "at_least", 2), {"plan": 2}, True),
        (Validator("plan", "at_least", 2), {"plan": 1.5}, False),
        (Validator("plan", "at_least", 2), {"plan": True}, False),
        (Validator("plan", "at_least", 2), {"plan": "9"}, False),
        (Validator("email", "exists"), {"email": ""}, True),
        (Validator("email", "exists"), {}, False),
        (Validator("verified", "has_value", True), {"verified": True}, True),
        (Validator("groups", "includes", "a"), {"groups": ["a"]}, True),
        (Validator("groups", "includes", "a"), {"groups": {"v": ["a"], "t": 1}}, True),
    ],
)
def test_generic_validators_compare_application_claims_as_they_are(validator: Validator, payload: dict,
                                                                   ok: bool) -> None:
    assert (validator.reason(payload, NOW) is None) is ok


def test_generic_failure_reasons() -> None:
    assert Validator("plan", "at_least", 2).reason({"plan": 1}, NOW) == {
        "message": "wrong value", "expectedAtLeast": 2, "actualValue": 1}
    assert Validator("email", "exists").reason({}, NOW) == {
        "message": "value does not exist", "expectedToExist": True, "actualValue": None}
