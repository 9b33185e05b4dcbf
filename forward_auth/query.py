"""``/verify``'s query parameters: the rule they name and the policy fields they override."""

from __future__ import annotations

from collections.abc import Mapping

from . import claims, credentials, verifier
from .errors import BadRequest
from .paths import AmbiguousPath, canonical_path
from .policy import PolicyFile, Rule
from .settings import Settings, parse_bool

Params = Mapping[str, "str | list[str]"]
#: The query parameters that override a policy field.
_POLICY_PARAMETERS = frozenset({"sessionRequired", "antiCsrf", "checkDatabase", "requireRole", "requirePermission",
                                "requireEmailVerified"})


def _flag(params: Params, name: str) -> bool | None:
    raw = params.get(name)
    if isinstance(raw, list):
        raw = raw[0]
    if raw is None:
        return None
    value = parse_bool(raw)
    if value is None:
        raise BadRequest(f"query parameter {name}={raw!r} must be true or false", reason="bad-policy")
    return value


def _values(params: Params, name: str) -> list[str]:
    """A repeatable, comma-separable query parameter (``?requireRole=a,b`` or ``?requireRole=a&requireRole=b``)."""
    raw = params.get(name) or []
    return [item.strip() for value in ([raw] if isinstance(raw, str) else raw) for item in value.split(",")
            if item.strip()]


def _claim_validators(params: Params) -> tuple[claims.Validator, ...]:
    """One SDK ``includes`` validator per required role or permission, as ``verify_session`` would run."""
    validators = [claims.Validator(claims.ROLE, "includes", role) for role in _values(params, "requireRole")]
    validators += [claims.Validator(claims.PERMISSION, "includes", perm) for perm in _values(params, "requirePermission")]
    if _flag(params, "requireEmailVerified"):
        validators.append(claims.Validator(claims.EMAIL_VERIFIED, "has_value", True))
    return tuple(validators)


def policy_from(params: Params, settings: Settings, rule: Rule | None = None) -> verifier.Policy:
    """The per-request policy: the matched rule (or the settings), overridden by query parameters."""
    base = rule.to_policy(settings.check_database) if rule else verifier.Policy(check_database=settings.check_database)
    if not params or _POLICY_PARAMETERS.isdisjoint(params):  # ?proxy=nginx alone: nothing to override
        return base
    required, anti_csrf, check_db = (_flag(params, "sessionRequired"), _flag(params, "antiCsrf"),
                                     _flag(params, "checkDatabase"))
    return verifier.Policy(
        session_required=base.session_required if required is None else required,
        anti_csrf_check=base.anti_csrf_check if anti_csrf is None else anti_csrf,
        check_database=base.check_database if check_db is None else check_db,
        claims=base.claims + _claim_validators(params),
    )


def forwarded_session_data(params: Params, rule: Rule | None) -> bool:
    """Whether the answer carries ``X-Session-Data``: the rule's ``session_data``, or ``?sessionData=``."""
    asked = _flag(params, "sessionData")
    return asked if asked is not None else rule is not None and rule.session_data


def rule_for(params: Params, creds: credentials.Credentials, policies: PolicyFile | None) -> Rule | None:
    """``?policy=<name>`` names a rule; otherwise the policy file's first matching rule, if any.

    A path that backends may read in more than one way is refused (400 ``ambiguous-path``) in
    every case, so a proxy may send public routes through the gate as well."""
    name = params.get("policy")
    if isinstance(name, list):
        name = name[0]
    try:
        if name is None and policies is not None:
            return policies.current().select(creds.host, creds.path, creds.method)
        canonical_path(creds.path)
    except AmbiguousPath as exc:
        raise BadRequest(str(exc), reason="ambiguous-path") from None
    if name is None:
        return None
    rule = policies.current().named(name) if policies else None
    if rule is None:
        raise BadRequest(f"no policy rule named {name!r}" + ("" if policies else " (no policy_file is set)"),
                         reason="bad-policy")
    return rule
