"""The session decision of supertokens-python's ``get_session`` (or, under ``sdk_profile: node``,
supertokens-node's), as pure functions.

No I/O here: keys arrive as arguments, the core's answer arrives as a
:class:`CoreSession`. :mod:`forward_auth.gate` does the fetching and calls these in order:
:func:`select` -> signature (:mod:`forward_auth.token`) -> :func:`check_local` -> (maybe the
core) -> a :class:`Session`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import javascript
from . import token as tokens
from .claims import Validator
from .credentials import Credentials
from .errors import TryRefreshToken, Unauthorised
from .settings import Settings


class Policy(NamedTuple):
    """Per-request choices: the SDK's ``session_required``, ``anti_csrf_check``, ``check_database``
    and the claim validators (``override_global_claim_validators``)."""

    session_required: bool = True
    anti_csrf_check: bool | None = None
    check_database: bool = False
    claims: tuple[Validator, ...] = ()


class Selection(NamedTuple):
    """The access token chosen from a request and whether anti-CSRF must still be checked."""

    token: tokens.AccessToken
    transfer_method: str
    anti_csrf_check: bool


@dataclass(frozen=True)
class NewAccessToken:
    """A fresh access token minted by the core during verification (refresh promotion)."""

    token: str
    expiry_ms: int
    created_ms: int


@dataclass(frozen=True)
class CoreSession:
    """The core's OK answer to ``/recipe/session/verify``."""

    handle: str
    user_id: str
    recipe_user_id: str
    user_data_in_jwt: dict[str, Any]
    tenant_id: str | None
    access_token: NewAccessToken | None = None


class Session(NamedTuple):
    """A verified session: everything the token (or the core) proved (a named tuple, as
    :class:`~forward_auth.token.AccessToken`: built on every request)."""

    user_id: str
    recipe_user_id: str
    handle: str
    tenant_id: str | None  # None: supertokens-node accepted a v4+ token without tId
    expiry_ms: int
    created_ms: int
    payload: dict[str, Any]
    transfer_method: str
    new_access_token: NewAccessToken | None = None
    from_core: bool = False  # the core decided it (revocation check, refreshed token): it may decide otherwise next
    trusted_until: float = float("inf")  # (epoch s) when its remembered signature must be checked again


def _parsed(raw: str | None, parse: Callable[[str], tokens.AccessToken]) -> tokens.AccessToken | None:
    if raw is None:
        return None
    try:
        return parse(raw)
    except tokens.MalformedToken:
        return None


def _legacy_gate(creds: Credentials, policy: Policy) -> bool:
    """Legacy (v1.0.X) rules on ``sIdRefreshToken``; False means "no session" (optional)."""
    if creds.id_refresh_token is None:
        if not policy.session_required:
            return False
        raise Unauthorised("no sIdRefreshToken: the session has ended", clear_tokens=True, reason="no-id-refresh-token")
    if creds.cookie_token is None and creds.bearer_token is None and policy.session_required:
        raise TryRefreshToken("sIdRefreshToken without an access token", reason="no-access-token")
    return True


def select(
    creds: Credentials, policy: Policy, settings: Settings, *, parse: Callable[[str], tokens.AccessToken] = tokens.parse
) -> Selection | None:
    """Choose the access token as the SDK does; ``None`` means no session (optional only).

    ``parse`` turns a raw token into an :class:`~forward_auth.token.AccessToken` (the gate's
    own also answers from its memory of verified tokens).
    """
    if creds.method in ("OPTIONS", "TRACE") and (not policy.session_required or settings.sdk_profile == "node"):
        return None  # verifySession's own shortcut (node's even when required), before any token is looked at
    if settings.legacy:
        if not _legacy_gate(creds, policy):
            return None
    elif creds.id_refresh_token is not None:
        raise TryRefreshToken("using legacy session, please call the refresh API", reason="legacy-session")
    header_token = _parsed(creds.bearer_token, parse)
    cookie_token = _parsed(creds.cookie_token, parse)
    if header_token is not None:
        chosen, method = header_token, "header"
    elif cookie_token is not None:
        if creds.duplicate_access_cookie:
            raise TryRefreshToken("Multiple access tokens present in the request cookies.", reason="duplicate-cookie")
        chosen, method = cookie_token, "cookie"
    else:
        if not policy.session_required:
            return None
        reason = "malformed-token" if creds.bearer_token or creds.cookie_token else "no-token"
        raise Unauthorised("no usable access token in the request", clear_tokens=False, reason=reason)
    mode = settings.effective_anti_csrf
    check = policy.anti_csrf_check
    if check is None:
        check = creds.method.upper() != "GET"
    check = check and method == "cookie" and mode != "NONE"
    if check and mode == "VIA_CUSTOM_HEADER":
        if creds.rid is None:
            raise TryRefreshToken("anti-csrf check failed: no rid header", reason="csrf-rid-missing")
        check = False
    return Selection(token=chosen, transfer_method=method, anti_csrf_check=check)


def check_local(selection: Selection, creds: Credentials, settings: Settings, *, now: float) -> None:
    """After the signature: expiry, signing-key kind and VIA_TOKEN anti-CSRF; raises TryRefreshToken."""
    token = selection.token
    if token.expiry_ms < now * 1000:
        raise TryRefreshToken("access token expired", reason="expired")
    if token.version >= 3:
        dynamic = token.kid is not None and token.kid.startswith("d-")
        if dynamic == settings.use_static_signing_key:
            raise TryRefreshToken("the token's signing key kind is not accepted", reason="key-kind")
    if selection.anti_csrf_check:
        if token.anti_csrf_token is None:
            raise TryRefreshToken("Access token does not contain the anti-csrf token", reason="csrf-no-claim")
        if creds.anti_csrf is None:
            raise TryRefreshToken("Provided antiCsrfToken is undefined", reason="csrf-header-missing")
        if creds.anti_csrf != token.anti_csrf_token:
            raise TryRefreshToken("anti-csrf check failed", reason="csrf-mismatch")


def needs_core(token: tokens.AccessToken, policy: Policy) -> bool:
    """The SDK asks the core when told to, or to promote a just-refreshed token."""
    return policy.check_database or token.parent_refresh_token_hash is not None


def replayable(session: Session, policy: Policy) -> bool:
    """An allowed answer that cannot change before the token's ``exp``: the core was not asked
    (a revocation check, a promotion, or a refreshed token the core answers without a new one,
    which it is asked about again next time) and no claim has a maximum age."""
    return not session.from_core and not any(validator.max_age_seconds is not None for validator in policy.claims)


def _trimmed(value: Any) -> Any:
    """supertokens-node's ``sanitizeStringInput``: a string trimmed, anything else undefined."""
    return javascript.trim(value) if isinstance(value, str) else None


def session_from_token(selection: Selection, *, sdk_profile: str = "python") -> Session:
    """A session proved by the token alone (node trims the identity claims)."""
    token = selection.token
    if sdk_profile == "node":
        user_id = _trimmed(token.user_id)
        return Session(user_id=user_id, recipe_user_id=_trimmed(token.payload.get("rsub")) or user_id,
                       handle=_trimmed(token.session_handle), tenant_id=_trimmed(token.tenant_id),
                       expiry_ms=int(token.expiry_ms), created_ms=int(token.created_ms),
                       payload=token.custom_claims, transfer_method=selection.transfer_method)
    return Session(
        user_id=token.user_id,
        recipe_user_id=token.recipe_user_id,
        handle=token.session_handle,
        tenant_id=token.tenant_id,  # type: ignore[arg-type]  # a python-profile token always has one
        expiry_ms=int(token.expiry_ms),
        created_ms=int(token.created_ms),
        payload=token.custom_claims,
        transfer_method=selection.transfer_method,
    )


def session_from_core(selection: Selection, core: CoreSession, new_payload: dict[str, Any] | None) -> Session:
    """A session as the core described it; a new access token's payload wins."""
    token = selection.token
    fresh = core.access_token
    if token.version < 3:
        payload = core.user_data_in_jwt
    else:
        payload = new_payload if new_payload is not None else token.payload
    return Session(
        user_id=core.user_id,
        recipe_user_id=core.recipe_user_id,
        handle=core.handle,
        tenant_id=core.tenant_id or token.tenant_id,
        expiry_ms=fresh.expiry_ms if fresh else int(token.expiry_ms),
        created_ms=fresh.created_ms if fresh else int(token.created_ms),
        payload=payload,
        transfer_method=selection.transfer_method,
        new_access_token=fresh,
        from_core=True,
    )
