"""Session claim validators with supertokens-python's semantics and exact failure reasons (pure).

Claims live at the root of the access token payload (``userData`` for v2) as
``{"v": value, "t": <ms fetched>}``. Where the SDK would *refetch* a missing or stale claim
through the core and issue a new token, the service cannot (it never mints tokens): the
validator fails with the SDK's own reason, and the 403 body names the claim.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

ROLE, PERMISSION, EMAIL_VERIFIED = "st-role", "st-perm", "st-ev"

_EXPECTED_KEY = {
    "includes": "expectedToInclude",
    "includes_all": "expectedToInclude",
    "excludes": "expectedToNotInclude",
    "excludes_all": "expectedToNotInclude",
    "includes_any": "expectedToIncludeAtLeastOneOf",
    "has_value": "expectedValue",
}


@dataclass(frozen=True)
class Validator:
    """One claim requirement: ``kind`` is one of the SDK validators' names (see ``_EXPECTED_KEY``)."""

    key: str
    kind: str
    value: Any
    max_age_seconds: int | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _EXPECTED_KEY:
            raise ValueError(f"unknown validator kind {self.kind!r}")

    def reason(self, payload: dict[str, Any], now_ms: float) -> dict[str, Any] | None:
        """``None`` when the payload satisfies the validator, else the SDK's reason object."""
        expected = _EXPECTED_KEY[self.kind]
        claim = payload.get(self.key)
        actual = claim.get("v") if isinstance(claim, dict) else None
        if actual is None:
            return {"message": "value does not exist", expected: self.value, "actualValue": None}
        if self.max_age_seconds is not None:
            fetched = claim.get("t") if isinstance(claim, dict) else None
            age = (now_ms - fetched) / 1000 if isinstance(fetched, (int, float)) else float("inf")
            if age > self.max_age_seconds:
                return {"message": "expired", "ageInSeconds": age, "maxAgeInSeconds": self.max_age_seconds}
        if not self._holds(actual):
            return {"message": "wrong value", expected: self.value, "actualValue": actual}
        return None

    def _holds(self, actual: Any) -> bool:
        if self.kind == "has_value":
            return actual == self.value
        if not isinstance(actual, list):
            return False
        present = set(_hashable(actual))
        wanted = self.value if isinstance(self.value, list) else [self.value]
        if self.kind in ("includes", "includes_all"):
            return all(v in present for v in wanted)
        if self.kind == "includes_any":
            return any(v in present for v in wanted)
        return not any(v in present for v in wanted)


def _hashable(values: Iterable[Any]) -> Iterable[Any]:
    return (v for v in values if isinstance(v, (str, int, float, bool)) or v is None)


def failures(validators: Sequence[Validator], payload: dict[str, Any], now_ms: float) -> list[dict[str, Any]]:
    """The ``claimValidationErrors`` list: every failing validator, in order."""
    errors = []
    for validator in validators:
        reason = validator.reason(payload, now_ms)
        if reason is not None:
            errors.append({"id": validator.id or validator.key, "reason": reason})
    return errors
