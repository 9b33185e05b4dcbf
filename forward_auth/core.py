"""The SuperTokens core client (CDI 5.4), cores tried in order: ``POST /recipe/session/verify``,
and the session object's calls by handle (information, data, payload, revocation).

Answers are translated at this edge: the core's UNAUTHORISED / TRY_REFRESH_TOKEN become
:class:`Unauthorised` (clearing cookies) / :class:`TryRefreshToken`; no core reachable is
:class:`CoreUnavailable` (503); an answer we cannot use is :class:`CoreError` (502).
OK and UNAUTHORISED answers may be cached briefly, never past the token's expiry.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import cachetools

from . import metrics, tracing
from .blocking import may_block
from .errors import CoreError, CoreUnavailable, TryRefreshToken, Unauthorised
from .transport import Reply, Transport, TransportError
from .verifier import CoreSession, NewAccessToken

CDI_VERSION = "5.4"
_REVOCATION_HIT = metrics.CACHE.labels(cache="revocation", result="hit")
_REVOCATION_MISS = metrics.CACHE.labels(cache="revocation", result="miss")


def _core_session(answer: dict[str, Any]) -> CoreSession:
    """The OK answer's session, or CoreError if its shape is wrong."""
    try:
        session = answer["session"]
        fresh = answer.get("accessToken")
        new = None
        if fresh is not None:
            new = NewAccessToken(str(fresh["token"]), int(fresh["expiry"]), int(fresh["createdTime"]))
        data = session.get("userDataInJWT") or {}
        tenant = session.get("tenantId")
        if not isinstance(data, dict) or not isinstance(session["handle"], str) or not isinstance(
                session["userId"], str) or not isinstance(tenant, (str, type(None))):
            raise TypeError("session fields have the wrong type")
        return CoreSession(
            handle=session["handle"],
            user_id=session["userId"],
            recipe_user_id=str(session.get("recipeUserId") or session["userId"]),
            user_data_in_jwt=data,
            tenant_id=tenant,
            access_token=new,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CoreError(f"core's verify answer is malformed: {exc}", reason="core-bad-answer") from None


@dataclass(frozen=True)
class SessionInformation:
    """The core's answer to ``GET /recipe/session`` (the SDK's ``get_session_information``)."""

    handle: str
    user_id: str
    recipe_user_id: str
    tenant_id: str
    created_ms: int
    expiry_ms: int
    access_token_payload: dict[str, Any]
    session_data: dict[str, Any]


def _session_information(answer: dict[str, Any]) -> SessionInformation:
    try:
        info = SessionInformation(
            handle=answer["sessionHandle"], user_id=answer["userId"],
            recipe_user_id=str(answer.get("recipeUserId") or answer["userId"]),
            tenant_id=answer.get("tenantId") or "public", created_ms=int(answer["timeCreated"]),
            expiry_ms=int(answer["expiry"]), access_token_payload=answer["userDataInJWT"],
            session_data=answer["userDataInDatabase"],
        )
        if not (isinstance(info.handle, str) and isinstance(info.user_id, str) and isinstance(info.tenant_id, str)
                and isinstance(info.access_token_payload, dict) and isinstance(info.session_data, dict)):
            raise TypeError("session fields have the wrong type")
        return info
    except (KeyError, TypeError, ValueError) as exc:
        raise CoreError(f"core's session answer is malformed: {exc}", reason="core-bad-answer") from None


def _status(answer: Any) -> str | None:
    return answer.get("status") if isinstance(answer, dict) else None


def _ok_or_unknown(answer: Any, what: str) -> bool:
    """True for OK, False for UNAUTHORISED (no such session), CoreError for anything else."""
    status = _status(answer)
    if status in ("OK", "UNAUTHORISED"):
        return status == "OK"
    raise CoreError(f"core answered {what} with an unknown status {status!r}", reason="core-bad-answer")


def _revoked(answer: Any) -> list[str]:
    handles = answer.get("sessionHandlesRevoked") if _status(answer) == "OK" else None
    if not isinstance(handles, list) or not all(isinstance(h, str) for h in handles):
        raise CoreError("core's revocation answer is malformed", reason="core-bad-answer")
    return handles


@dataclass(frozen=True)
class _Answer:
    """A cacheable verify answer: a session, or the core's UNAUTHORISED message; valid until ``until`` (s)."""

    until: float
    session: CoreSession | None = None
    revoked: str | None = None


class CoreClient:
    """Talks to one or more cores; connection failures move on to the next core."""

    def __init__(
        self,
        core_urls: Sequence[str],
        transport: Transport,
        *,
        api_key: str | None = None,
        timeout_seconds: float = 2.0,
        revocation_cache_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._urls = tuple(url.rstrip("/") for url in core_urls)
        self._transport = transport
        self._api_key = api_key
        self._timeout = timeout_seconds
        self._cache_seconds = revocation_cache_seconds
        self._clock = clock
        # Entries live revocation_cache_seconds, never past the token's exp (the value's "until").
        self._cache: cachetools.TLRUCache[tuple[Any, ...], _Answer] = cachetools.TLRUCache(
            maxsize=10_000, ttu=lambda _k, answer, now: min(now + self._cache_seconds, answer.until), timer=clock
        )
        self._lock = threading.Lock()

    def verify_session(
        self,
        access_token: str,
        *,
        anti_csrf_token: str | None,
        do_anti_csrf_check: bool,
        enable_anti_csrf: bool,
        check_database: bool,
        token_expiry_ms: float,
    ) -> CoreSession:
        """Ask the core about a session; raise the session error it reports."""
        key = (access_token, anti_csrf_token, do_anti_csrf_check, enable_anti_csrf, check_database)
        answer = self._cached(key)
        if answer is None:
            may_block()
            if self._cache_seconds > 0:
                _REVOCATION_MISS.inc()
            body: dict[str, Any] = {
                "accessToken": access_token,
                "doAntiCsrfCheck": do_anti_csrf_check,
                "enableAntiCsrf": enable_anti_csrf,
                "checkDatabase": check_database,
            }
            if anti_csrf_token is not None:
                body["antiCsrfToken"] = anti_csrf_token
            answer = self._interpret(self._send("POST", "/recipe/session/verify", body), token_expiry_ms / 1000)
            self._remember(key, answer)
        if answer.session is None:
            raise Unauthorised(f"core: {answer.revoked}", clear_tokens=True, reason="revoked")
        return answer.session

    def session_information(self, handle: str) -> SessionInformation | None:
        """``GET /recipe/session``: the session, or None when the core knows no live one."""
        may_block()
        answer = self._send("GET", "/recipe/session", query=urlencode({"sessionHandle": handle}))
        return _session_information(answer) if _ok_or_unknown(answer, "GET /recipe/session") else None

    def update_session_data(self, handle: str, data: dict[str, Any]) -> bool:
        """``PUT /recipe/session/data``: replace the session's data; False when there is no such session."""
        may_block()
        answer = self._send("PUT", "/recipe/session/data", {"sessionHandle": handle, "userDataInDatabase": data})
        return _ok_or_unknown(answer, "PUT /recipe/session/data")

    def update_access_token_payload(self, handle: str, payload: dict[str, Any]) -> bool:
        """``PUT /recipe/jwt/data``: replace the payload later tokens carry; False when there is no such session."""
        may_block()
        answer = self._send("PUT", "/recipe/jwt/data", {"sessionHandle": handle, "userDataInJWT": payload})
        return _ok_or_unknown(answer, "PUT /recipe/jwt/data")

    def revoke_sessions(self, handles: list[str]) -> list[str]:
        """``POST /recipe/session/remove`` by handle: the handles that were live."""
        may_block()
        return _revoked(self._send("POST", "/recipe/session/remove", {"sessionHandles": handles}))

    def revoke_user_sessions(self, user_id: str, tenant_id: str | None) -> list[str]:
        """Every session of a user (and of its linked accounts), in one tenant or in all (None)."""
        may_block()
        path = "/recipe/session/remove" if tenant_id is None else f"/{quote(tenant_id, safe='')}/recipe/session/remove"
        body = {"userId": user_id, "revokeAcrossAllTenants": tenant_id is None, "revokeSessionsForLinkedAccounts": True}
        return _revoked(self._send("POST", path, body))

    def _cached(self, key: tuple[Any, ...]) -> _Answer | None:
        if self._cache_seconds <= 0:
            return None
        with self._lock:
            answer = self._cache.get(key)
        if answer is not None:
            _REVOCATION_HIT.inc()
        return answer

    def _remember(self, key: tuple[Any, ...], answer: _Answer) -> None:
        # Never cache a promotion: the browser gets a new token, and the next request carries it.
        if self._cache_seconds <= 0 or (answer.session is not None and answer.session.access_token):
            return
        with self._lock:
            self._cache[key] = answer

    @staticmethod
    def _interpret(answer: Any, until: float) -> _Answer:
        status = answer.get("status") if isinstance(answer, dict) else None
        message = str(answer.get("message", "")) if isinstance(answer, dict) else ""
        if status == "OK":
            return _Answer(session=_core_session(answer), until=until)
        if status == "UNAUTHORISED":
            return _Answer(revoked=message, until=until)
        if status == "TRY_REFRESH_TOKEN":
            raise TryRefreshToken(f"core: {message}", reason="core-try-refresh")
        raise CoreError(f"core answered an unknown status {status!r}", reason="core-bad-answer")

    def _headers(self, body: bool) -> dict[str, str]:
        headers = {"cdi-version": CDI_VERSION, "rid": "session"}
        if body:
            headers["content-type"] = "application/json; charset=utf-8"
        if self._api_key:
            headers["api-key"] = self._api_key
        return headers

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None, *, query: str = "") -> Any:
        """One request, to the first core that answers; ``path`` (no query) names it in metrics and spans."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        target = f"{path}?{query}" if query else path
        failures = []
        for base in self._urls:
            with tracing.core_span(method, path) as span:
                try:
                    reply = self._transport.request(
                        method, base + target, headers=self._headers(data is not None), body=data,
                        timeout=self._timeout,
                    )
                except TransportError as exc:
                    failures.append(str(exc))
                    metrics.CORE_REQUESTS.labels(endpoint=path, outcome="unreachable").inc()
                    span.set({"forward_auth.outcome": "unreachable"})
                    continue
                span.set({"forward_auth.outcome": str(reply.status)})
            metrics.CORE_REQUESTS.labels(endpoint=path, outcome=str(reply.status)).inc()
            if reply.status >= 500 or reply.status == 429:
                failures.append(f"{base}: HTTP {reply.status}")
                continue
            return self._decode(base, reply)
        raise CoreUnavailable("no SuperTokens core answered: " + "; ".join(failures))

    @staticmethod
    def _decode(base: str, reply: Reply) -> Any:
        if reply.status == 401:
            raise CoreError(f"{base} refused the API key", reason="core-api-key")
        if reply.status != 200:
            text = reply.data[:200].decode("utf-8", "replace")
            raise CoreError(f"{base} answered HTTP {reply.status}: {text}", reason="core-http-error")
        try:
            return reply.json()
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise CoreError(f"{base} answered something that is not JSON", reason="core-bad-answer") from None
