"""An in-memory SuperTokens core for development and tests.

It speaks the CDI 5.4 subset that supertokens-python 0.31.4 uses for sessions
(create, verify, refresh with rotation and theft detection, revoke, session data,
access token payload updates, JWKS), closely enough that the official SDK works
against it unchanged. Test-only endpoints under ``/dev/`` rotate keys, mint odd
tokens and create sessions without an SDK.

Nothing is persisted and there is no user store: every user id is unknown to
``/user/id``, so a session's user id is its recipe user id. The ``/appid-<id>``
path prefix is accepted and ignored (one app per :class:`DevCore`). Keys rotate
only on request (``/dev/keys/rotate``), never on a timer. It is a development
tool, not a security boundary: it refuses non-loopback addresses unless told
otherwise.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .access_token import LATEST_VERSION, PUBLIC_TENANT, AccessToken, InvalidAccessToken, read_access_token
from .minter import (
    REQUIRED_CLAIMS,
    V1_HEADER,
    V2_HEADER,
    SigningKey,
    mint_v2,
    mint_v5,
    sha256_hex,
    v2_payload,
    v5_claims,
)

DEFAULT_REFRESH_TOKEN_VALIDITY = 100 * 24 * 3600
"""The core's default refresh token validity (144000 minutes), in seconds."""

_DEV_TOKEN_USER = "dev-user"
_FOREIGN_KID = "d-foreign"
_REQUEST_LOG_SIZE = 1000


@dataclass
class _Session:
    """A stored session: what the core keeps in its session table."""

    handle: str
    user_id: str
    recipe_user_id: str
    tenant_id: str
    user_data_in_jwt: dict[str, Any]
    user_data_in_database: dict[str, Any]
    refresh_token_hash2: str
    created_ms: int
    expiry_ms: int
    use_static_key: bool

    def to_json(self) -> dict[str, Any]:
        """Return the ``session`` object of create, refresh and verify answers."""
        return {
            "handle": self.handle,
            "userId": self.user_id,
            "recipeUserId": self.recipe_user_id,
            "userDataInJWT": self.user_data_in_jwt,
            "tenantId": self.tenant_id,
        }


@dataclass(frozen=True)
class _RefreshToken:
    """What the real core encrypts into a refresh token; kept server-side here."""

    session_handle: str
    parent_hash2: str | None
    anti_csrf_token: str | None


class DevCore:
    """In-memory core state and the CDI 5.4 session operations.

    Public methods return the JSON bodies the real core sends and raise
    ``ValueError`` for input the real core rejects with HTTP 400. One lock
    guards all state, so a threaded server can share the instance.

    Args:
        access_token_validity: Access token lifetime in seconds.
        refresh_token_validity: Refresh token (session) lifetime in seconds.
        api_key: When set, every endpoint but the JWKS and ``/hello`` needs it.
        clock: Returns the current time in seconds since the epoch.
    """

    def __init__(
        self,
        access_token_validity: int = 3600,
        refresh_token_validity: int = DEFAULT_REFRESH_TOKEN_VALIDITY,
        api_key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if access_token_validity <= 0 or refresh_token_validity <= 0:
            raise ValueError("token validities must be positive numbers of seconds")
        self.access_token_validity = access_token_validity
        self.refresh_token_validity = refresh_token_validity
        self._api_key = api_key
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._refresh_tokens: dict[str, _RefreshToken] = {}  # keyed by refreshTokenHash2
        self._static_key = SigningKey.generate(f"s-{uuid.uuid4()}")
        self._dynamic_keys: list[SigningKey] = []
        self._keys: dict[str, SigningKey] = {self._static_key.kid: self._static_key}
        self._foreign_key: SigningKey | None = None
        self._requests: deque[tuple[str, str]] = deque(maxlen=_REQUEST_LOG_SIZE)
        self._request_counts: Counter[str] = Counter()
        self._add_dynamic_key()

    # -- keys, API key, request log -------------------------------------------------

    def jwks(self) -> list[dict[str, str]]:
        """Return every verification key: dynamic keys newest first, then the static key."""
        with self._lock:
            keys = [*reversed(self._dynamic_keys), self._static_key]
        return [key.public_jwk() for key in keys]

    def rotate_keys(self) -> str:
        """Add a dynamic key that signs from now on; older keys keep verifying. Returns its kid."""
        with self._lock:
            return self._add_dynamic_key()

    def accepts_api_key(self, presented: str | None) -> bool:
        """Return whether a request presenting ``presented`` may use the core."""
        if self._api_key is None:
            return True
        return presented is not None and hmac.compare_digest(
            presented.encode("utf-8"), self._api_key.encode("utf-8")
        )

    def record_request(self, method: str, path: str) -> None:
        """Remember a request (the last 1000 are kept) for tests to inspect."""
        with self._lock:
            self._requests.append((method, path))
            self._request_counts[f"{method} {path}"] += 1

    def request_counts(self) -> dict[str, int]:
        """Every request since start, counted by ``"METHOD path"`` (never forgets, unlike the log)."""
        with self._lock:
            return dict(self._request_counts)

    def request_log(self) -> list[tuple[str, str]]:
        """Return the remembered ``(method, path)`` pairs, oldest first."""
        with self._lock:
            return list(self._requests)

    # -- session lifecycle ----------------------------------------------------------

    def create_session(
        self,
        tenant_id: str,
        user_id: str,
        user_data_in_jwt: Mapping[str, Any],
        user_data_in_database: Mapping[str, Any],
        *,
        use_dynamic_key: bool = True,
        enable_anti_csrf: bool = False,
    ) -> dict[str, Any]:
        """Create a session (``POST /<tenant>/recipe/session``)."""
        _check_user_payload(user_data_in_jwt)
        suffix = "" if tenant_id == PUBLIC_TENANT else f"_{tenant_id}"
        anti_csrf_token = str(uuid.uuid4()) if enable_anti_csrf else None
        with self._lock:
            now = self._now_ms()
            handle = f"{uuid.uuid4()}{suffix}"
            refresh_token = self._new_refresh_token(handle, None, anti_csrf_token)
            session = _Session(
                handle=handle,
                user_id=user_id,
                recipe_user_id=user_id,
                tenant_id=tenant_id,
                user_data_in_jwt=dict(user_data_in_jwt),
                user_data_in_database=dict(user_data_in_database),
                refresh_token_hash2=_hash2(refresh_token),
                created_ms=now,
                expiry_ms=now + self.refresh_token_validity * 1000,
                use_static_key=not use_dynamic_key,
            )
            self._sessions[handle] = session
            return self._new_tokens_answer(session, refresh_token, None, anti_csrf_token)

    def verify_session(
        self,
        access_token: str,
        *,
        anti_csrf_token: str | None,
        do_anti_csrf_check: bool,
        enable_anti_csrf: bool,
        check_database: bool,
    ) -> dict[str, Any]:
        """Verify an access token with the CDI <= 5.4 rules (``POST /recipe/session/verify``).

        A token minted by a refresh (``parentRefreshTokenHash1`` set) promotes its
        refresh token to the current one; a promoted token, or one whose payload is
        older than the stored payload, is answered with a fresh access token.
        """
        with self._lock:
            try:
                token = read_access_token(access_token, self._keys)
            except InvalidAccessToken as exc:
                return _failure("TRY_REFRESH_TOKEN", str(exc))
            if token.expiry_ms < self._now_ms():
                return _failure("TRY_REFRESH_TOKEN", "Access token expired")
            if enable_anti_csrf and do_anti_csrf_check and (
                token.anti_csrf_token is None or token.anti_csrf_token != anti_csrf_token
            ):
                return _failure("TRY_REFRESH_TOKEN", "anti-csrf check failed")
            session = self._live_session(token.session_handle)
            payload_outdated = False
            if check_database:
                if session is None:
                    return _failure(
                        "UNAUTHORISED", "Either the session has ended or has been blacklisted"
                    )
                payload_outdated = session.user_data_in_jwt != token.custom_claims
            if token.parent_refresh_token_hash1 is None and not payload_outdated:
                return {"status": "OK", "session": token.session_json()}
            if session is None:
                return _failure("UNAUTHORISED", "Session missing in db")
            return self._promote(session, token, payload_outdated)

    def refresh_session(
        self,
        refresh_token: str,
        *,
        anti_csrf_token: str | None = None,
        enable_anti_csrf: bool = False,
        use_dynamic_key: bool | None = None,
    ) -> dict[str, Any]:
        """Rotate a refresh token with the CDI <= 5.4 rules (``POST /recipe/session/refresh``).

        The stored hash moves to a new refresh token lazily: when the new access token
        is verified, or when the new refresh token is used. Presenting a refresh token
        that is neither the stored one nor its child is token theft.
        """
        presented_hash2 = _hash2(refresh_token)
        with self._lock:
            record = self._refresh_tokens.get(presented_hash2)
            if record is None:
                return _failure("UNAUTHORISED", "Invalid refresh token")
            if (
                enable_anti_csrf
                and record.anti_csrf_token is not None
                and record.anti_csrf_token != anti_csrf_token
            ):
                return _failure("UNAUTHORISED", "Anti CSRF token missing, or not matching")
            session = self._live_session(record.session_handle)
            if session is None:
                return _failure("UNAUTHORISED", "Session missing in db or has expired")
            if use_dynamic_key is not None:
                session.use_static_key = not use_dynamic_key
            if record.parent_hash2 is not None and record.parent_hash2 == session.refresh_token_hash2:
                self._make_current(session, presented_hash2)
            if session.refresh_token_hash2 != presented_hash2:
                return {
                    "status": "TOKEN_THEFT_DETECTED",
                    "message": "Token theft detected",
                    "session": {
                        "handle": session.handle,
                        "userId": session.user_id,
                        "recipeUserId": session.recipe_user_id,
                    },
                }
            new_anti_csrf_token = str(uuid.uuid4()) if enable_anti_csrf else None
            child = self._new_refresh_token(session.handle, presented_hash2, new_anti_csrf_token)
            return self._new_tokens_answer(
                session, child, sha256_hex(refresh_token), new_anti_csrf_token
            )

    def regenerate_access_token(
        self, access_token: str, user_data_in_jwt: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Store a new payload and re-sign the token with it (``POST /recipe/session/regenerate``).

        The new token keeps the old one's expiry and refresh hashes; an expired
        token only updates the stored payload.
        """
        if user_data_in_jwt is not None:
            _check_user_payload(user_data_in_jwt)
        with self._lock:
            try:
                token = read_access_token(access_token, self._keys)
            except InvalidAccessToken as exc:
                return _failure("UNAUTHORISED", str(exc))
            session = self._live_session(token.session_handle)
            if session is None:
                return _failure("UNAUTHORISED", "Session does not exist.")
            if user_data_in_jwt is not None:
                session.user_data_in_jwt = dict(user_data_in_jwt)
            answer: dict[str, Any] = {"status": "OK", "session": session.to_json()}
            if token.expiry_ms >= self._now_ms():
                answer["accessToken"] = self._issue_access_token(
                    session,
                    version=token.version,
                    refresh_token_hash1=token.refresh_token_hash1,
                    parent_refresh_token_hash1=token.parent_refresh_token_hash1,
                    anti_csrf_token=token.anti_csrf_token,
                    expiry_ms=int(token.expiry_ms),
                )
            return answer

    def remove_sessions(self, session_handles: Iterable[str]) -> dict[str, Any]:
        """Revoke sessions by handle; answers with the handles that existed."""
        with self._lock:
            revoked = [
                handle
                for handle in dict.fromkeys(session_handles)
                if self._live_session(handle) is not None
            ]
            self._drop_sessions(revoked)
        return {"status": "OK", "sessionHandlesRevoked": revoked}

    def remove_user_sessions(self, user_id: str, tenant_id: str | None) -> dict[str, Any]:
        """Revoke a user's sessions in one tenant, or in all tenants when ``tenant_id`` is None."""
        with self._lock:
            revoked = self._handles_for_user(user_id, tenant_id)
            self._drop_sessions(revoked)
        return {"status": "OK", "sessionHandlesRevoked": revoked}

    def session_handles_for_user(self, user_id: str, tenant_id: str | None) -> dict[str, Any]:
        """List a user's live session handles in one tenant, or in all when ``tenant_id`` is None."""
        with self._lock:
            return {"status": "OK", "sessionHandles": self._handles_for_user(user_id, tenant_id)}

    def session_information(self, session_handle: str) -> dict[str, Any]:
        """Describe a live session (``GET /recipe/session``)."""
        with self._lock:
            session = self._live_session(session_handle)
            if session is None:
                return _failure("UNAUTHORISED", "Session does not exist.")
            return {
                "status": "OK",
                "sessionHandle": session.handle,
                "userId": session.user_id,
                "recipeUserId": session.recipe_user_id,
                "userDataInDatabase": session.user_data_in_database,
                "expiry": session.expiry_ms,
                "userDataInJWT": session.user_data_in_jwt,
                "timeCreated": session.created_ms,
                "tenantId": session.tenant_id,
            }

    def update_session_data(self, session_handle: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a session's database data (``PUT /recipe/session/data``)."""
        with self._lock:
            session = self._live_session(session_handle)
            if session is None:
                return _failure("UNAUTHORISED", "Session does not exist.")
            session.user_data_in_database = dict(data)
            return {"status": "OK"}

    def update_access_token_payload(
        self, session_handle: str, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Replace a session's stored access token payload (``PUT /recipe/jwt/data``).

        Tokens already issued keep their payload until a ``checkDatabase`` verify,
        a regenerate or a refresh replaces them.
        """
        _check_user_payload(payload)
        with self._lock:
            session = self._live_session(session_handle)
            if session is None:
                return _failure("UNAUTHORISED", "Session does not exist.")
            session.user_data_in_jwt = dict(payload)
            return {"status": "OK"}

    def mint_token(
        self,
        *,
        version: int = LATEST_VERSION,
        claim_overrides: Mapping[str, Any] | None = None,
        key: str = "dynamic",
        header_overrides: Mapping[str, Any] | None = None,
        session_handle: str | None = None,
    ) -> str:
        """Mint an arbitrary access token for tests (``POST /dev/tokens``).

        Args:
            version: Token version, 1 to 5 (1: a v2 token under the v1 header).
            claim_overrides: Claims (or v2 payload fields) to set; ``None`` removes one.
            key: "dynamic" (the current signing key), "static" (the ``s-`` key in the
                JWKS) or "foreign" (a key absent from the JWKS).
            header_overrides: JWT header entries to set or (with ``None``) remove; not
                allowed for v2 tokens, whose header is a fixed string.
            session_handle: Take user, tenant and payload from this live session.
                Otherwise the token names user ``dev-user`` and an unstored handle.
        """
        if version not in (1, 2, 3, 4, 5):
            raise ValueError("version must be 1, 2, 3, 4 or 5")
        if version <= 2 and header_overrides:
            raise ValueError("header overrides do not apply to v2 tokens")
        with self._lock:
            signing_key = self._dev_key(key)
            session = None
            if session_handle is not None:
                session = self._live_session(session_handle)
                if session is None:
                    raise ValueError(f"unknown session handle {session_handle!r}")
            claims = self._dev_claims(max(version, 2), session)
        for name, value in (claim_overrides or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        if version <= 2:
            return mint_v2(signing_key, claims, header=V1_HEADER if version == 1 else V2_HEADER)
        return mint_v5(signing_key, claims, version=str(version), header_overrides=header_overrides)

    # -- internals (callers hold the lock) ------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _add_dynamic_key(self) -> str:
        created_ms = self._now_ms()
        while f"d-{created_ms}" in self._keys:
            created_ms += 1
        key = SigningKey.generate(f"d-{created_ms}")
        self._dynamic_keys.append(key)
        self._keys[key.kid] = key
        return key.kid

    def _dev_key(self, kind: str) -> SigningKey:
        if kind == "dynamic":
            return self._dynamic_keys[-1]
        if kind == "static":
            return self._static_key
        if kind == "foreign":
            if self._foreign_key is None:
                self._foreign_key = SigningKey.generate(_FOREIGN_KID)
            return self._foreign_key
        raise ValueError('key must be "dynamic", "static" or "foreign"')

    def _dev_claims(self, version: int, session: _Session | None) -> dict[str, Any]:
        """Claims of a fresh dev token for ``session``, or for an unstored ``dev-user`` one."""
        now = self._now_ms()
        if session is None:
            session = _Session(
                handle=str(uuid.uuid4()),
                user_id=_DEV_TOKEN_USER,
                recipe_user_id=_DEV_TOKEN_USER,
                tenant_id=PUBLIC_TENANT,
                user_data_in_jwt={},
                user_data_in_database={},
                refresh_token_hash2="",
                created_ms=now,
                expiry_ms=now,
                use_static_key=False,
            )
        return _token_claims(
            session,
            version=version,
            refresh_token_hash1=secrets.token_hex(32),
            parent_refresh_token_hash1=None,
            anti_csrf_token=None,
            created_ms=now,
            expiry_ms=now + self.access_token_validity * 1000,
        )

    def _live_session(self, handle: str) -> _Session | None:
        session = self._sessions.get(handle)
        if session is not None and session.expiry_ms < self._now_ms():
            self._drop_sessions([handle])
            return None
        return session

    def _handles_for_user(self, user_id: str, tenant_id: str | None) -> list[str]:
        return [
            session.handle
            for session in list(self._sessions.values())
            if user_id in (session.user_id, session.recipe_user_id)
            and tenant_id in (None, session.tenant_id)
            and self._live_session(session.handle) is not None
        ]

    def _drop_sessions(self, handles: Iterable[str]) -> None:
        gone = set(handles)
        if not gone:
            return
        for handle in gone:
            self._sessions.pop(handle, None)
        self._refresh_tokens = {
            hash2: record
            for hash2, record in self._refresh_tokens.items()
            if record.session_handle not in gone
        }

    def _make_current(self, session: _Session, refresh_token_hash2: str) -> None:
        session.refresh_token_hash2 = refresh_token_hash2
        session.expiry_ms = self._now_ms() + self.refresh_token_validity * 1000

    def _new_refresh_token(
        self, session_handle: str, parent_hash2: str | None, anti_csrf_token: str | None
    ) -> str:
        token = secrets.token_urlsafe(48)
        self._refresh_tokens[_hash2(token)] = _RefreshToken(
            session_handle, parent_hash2, anti_csrf_token
        )
        return token

    def _promote(
        self, session: _Session, token: AccessToken, payload_outdated: bool
    ) -> dict[str, Any]:
        """Finish a verify that needs the session table (step 5 of spec §6.3)."""
        parent = token.parent_refresh_token_hash1
        promoted = parent is not None and sha256_hex(parent) == session.refresh_token_hash2
        if promoted:
            self._make_current(session, sha256_hex(token.refresh_token_hash1))
        is_current = session.refresh_token_hash2 == sha256_hex(token.refresh_token_hash1)
        if not (promoted or is_current or payload_outdated):
            return {"status": "OK", "session": token.session_json()}
        access_token = self._issue_access_token(
            session,
            version=token.version,
            refresh_token_hash1=token.refresh_token_hash1,
            parent_refresh_token_hash1=None,
            anti_csrf_token=token.anti_csrf_token,
        )
        return {"status": "OK", "session": session.to_json(), "accessToken": access_token}

    def _new_tokens_answer(
        self,
        session: _Session,
        refresh_token: str,
        parent_refresh_token_hash1: str | None,
        anti_csrf_token: str | None,
    ) -> dict[str, Any]:
        """Build the answer of create and refresh, with a v5 token for ``refresh_token``."""
        now = self._now_ms()
        answer: dict[str, Any] = {
            "status": "OK",
            "session": session.to_json(),
            "accessToken": self._issue_access_token(
                session,
                version=LATEST_VERSION,
                refresh_token_hash1=sha256_hex(refresh_token),
                parent_refresh_token_hash1=parent_refresh_token_hash1,
                anti_csrf_token=anti_csrf_token,
            ),
            "refreshToken": {
                "token": refresh_token,
                "expiry": now + self.refresh_token_validity * 1000,
                "createdTime": now,
            },
        }
        if anti_csrf_token is not None:
            answer["antiCsrfToken"] = anti_csrf_token
        return answer

    def _issue_access_token(
        self,
        session: _Session,
        *,
        version: int,
        refresh_token_hash1: str,
        parent_refresh_token_hash1: str | None,
        anti_csrf_token: str | None,
        expiry_ms: int | None = None,
    ) -> dict[str, Any]:
        """Sign a token for ``session`` with its key kind; returns the core's TokenInfo."""
        now = self._now_ms()
        expiry = expiry_ms if expiry_ms is not None else now + self.access_token_validity * 1000
        key = self._static_key if session.use_static_key else self._dynamic_keys[-1]
        claims = _token_claims(
            session,
            version=version,
            refresh_token_hash1=refresh_token_hash1,
            parent_refresh_token_hash1=parent_refresh_token_hash1,
            anti_csrf_token=anti_csrf_token,
            created_ms=now,
            expiry_ms=expiry,
        )
        if version == 2:
            token = mint_v2(key, claims)
        else:
            token = mint_v5(key, claims, version=str(version))
        return {"token": token, "expiry": expiry, "createdTime": now}


def _token_claims(
    session: _Session,
    *,
    version: int,
    refresh_token_hash1: str,
    parent_refresh_token_hash1: str | None,
    anti_csrf_token: str | None,
    created_ms: int,
    expiry_ms: int,
) -> dict[str, Any]:
    """Build the payload of a ``version`` token for ``session``."""
    if version == 2:
        return v2_payload(
            user_id=session.user_id,
            session_handle=session.handle,
            refresh_token_hash1=refresh_token_hash1,
            created_ms=created_ms,
            expiry_ms=expiry_ms,
            parent_refresh_token_hash1=parent_refresh_token_hash1,
            anti_csrf_token=anti_csrf_token,
            user_data=session.user_data_in_jwt,
        )
    claims = v5_claims(
        user_id=session.user_id,
        session_handle=session.handle,
        refresh_token_hash1=refresh_token_hash1,
        created_ms=created_ms,
        expiry_ms=expiry_ms,
        parent_refresh_token_hash1=parent_refresh_token_hash1,
        anti_csrf_token=anti_csrf_token,
        tenant_id=session.tenant_id,
        recipe_user_id=session.recipe_user_id,
        custom=session.user_data_in_jwt,
    )
    for name in REQUIRED_CLAIMS[LATEST_VERSION] - REQUIRED_CLAIMS[version]:
        del claims[name]
    return claims


def _check_user_payload(payload: Mapping[str, Any]) -> None:
    clashing = sorted(payload.keys() & REQUIRED_CLAIMS[LATEST_VERSION])
    if clashing:
        raise ValueError(f"The user payload contains protected fields: {', '.join(clashing)}")


def _hash2(refresh_token: str) -> str:
    return sha256_hex(sha256_hex(refresh_token))


def _failure(status: str, message: str) -> dict[str, Any]:
    return {"status": status, "message": message}


# -- HTTP app and servers -------------------------------------------------------------
