"""Session claim validators with supertokens-python's semantics and exact failure reasons (pure).

SuperTokens claims (``st-role``, ``st-perm``, ``st-ev``, any ``st-*`` key) live at the root of
the access token payload (``userData`` for v2) as ``{"v": value, "t": <ms fetched>}``; other
keys are the application's own claims and are compared as they are. Where the SDK would
*refetch* a missing or stale claim through the core and issue a new token, the service cannot
(it never mints tokens): the validator fails with the SDK's own reason, and the 403 body names
the claim.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

ROLE, PERMISSION, EMAIL_VERIFIED = "st-role", "st-perm", "st-ev"

#: Validator kind -> the key naming the expected value in a failure reason (the SDK's names;
#: ``exists`` and ``at_least`` are the service's generic validators for application claims).
EXPECTED_KEY = {
    "includes": "expectedToInclude",
    "includes_all": "expectedToInclude",
    "excludes": "expectedToNotInclude",
    "excludes_all": "expectedToNotInclude",
    "includes_any": "expectedToIncludeAtLeastOneOf",
    "has_value": "expectedValue",
    "exists": "expectedToExist",
    "at_least": "expectedAtLeast",
}


def claim_value(payload: dict[str, Any], key: str) -> tuple[Any, Any]:
    """(value, fetched-at ms) of a claim; SuperTokens claims must have their ``{"v","t"}`` shape."""
    claim = payload.get(key)
    if isinstance(claim, dict) and "v" in claim:
        return claim.get("v"), claim.get("t")
    if key.startswith("st-"):
        return None, None
    return claim, None


@dataclass(frozen=True)
class Validator:
    """One claim requirement: ``kind`` is one of :data:`EXPECTED_KEY`'s names."""

    key: str
    kind: str
    value: Any = True
    max_age_seconds: int | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXPECTED_KEY:
            raise ValueError(f"unknown validator kind {self.kind!r}")

    def reason(self, payload: dict[str, Any], now_ms: float) -> dict[str, Any] | None:
        """``None`` when the payload satisfies the validator, else the SDK's reason object."""
        expected = EXPECTED_KEY[self.kind]
        actual, fetched = claim_value(payload, self.key)
        if actual is None:
            return {"message": "value does not exist", expected: self.value, "actualValue": None}
        if self.max_age_seconds is not None:
            age = (now_ms - fetched) / 1000 if isinstance(fetched, (int, float)) else float("inf")
            if age > self.max_age_seconds:
                return {"message": "expired", "ageInSeconds": age, "maxAgeInSeconds": self.max_age_seconds}
        if not self._holds(actual):
            return {"message": "wrong value", expected: self.value, "actualValue": actual}
        return None

    def _holds(self, actual: Any) -> bool:
        if self.kind == "exists":
            return True
        if self.kind == "has_value":
            return actual == self.value
        if self.kind == "at_least":
            return isinstance(actual, (int, float)) and not isinstance(actual, bool) and actual >= self.value
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


def failures(validators: Sequence[Validator], payload: dict[str, Any], now_ms: float, *,
             sdk_profile: str = "python") -> list[dict[str, Any]]:
    """The ``claimValidationErrors`` list: every failing validator, in order (supertokens-node's
    JSON leaves out an ``actualValue`` that is undefined: a missing value)."""
    errors = []
    for validator in validators:
        reason = validator.reason(payload, now_ms)
        if reason is not None:
            if sdk_profile == "node" and reason["message"] == "value does not exist":
                del reason["actualValue"]
            errors.append({"id": validator.id or validator.key, "reason": reason})
    return errors
