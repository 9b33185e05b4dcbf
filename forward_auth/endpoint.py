"""``/verify`` without a web framework: the request a proxy sent in, the answer out.

One implementation serves every edge. Falcon's :class:`~forward_auth.resources.VerifyResource`
(gunicorn, ``/verify/<path>``) and the ASGI adapter (the built-in server's and granian's ``/verify``, no Falcon at all:
:mod:`forward_auth.asgi`) both hand an :class:`Incoming` to :class:`VerifyEndpoint` and send
the :class:`Answer` back as it is. The endpoint maps every error to its answer, records the
decision and, for ``?proxy=nginx``, says in headers what nginx cannot pass on.
"""

from __future__ import annotations

import json
import json.encoder
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from falcon.util.uri import parse_query_string

from . import credentials, navigation, pages, redirects, verifier
from .answers import ErrorAnswers, compact_json, internal_error
from .decisions import Decision
from .errors import ForwardAuthError
from .gate import Gate
from .headers import apply_headers, header_value, reuse_until, session_headers
from .peers import TrustedPeers
from .policy import PolicyFile, Rule
from .query import Params, forwarded_session_data, policy_from, rule_for
from .session_data import SessionData
from .settings import Settings

log = logging.getLogger("forward_auth")
_json_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
JSON = "application/json"


class Incoming(NamedTuple):
    """A request to ``/verify`` as any server hands it over."""

    method: str
    path: str                   # ``/verify``, or ``/verify/<original path>`` (that path as sent, %-encoded)
    query: str                  # as sent
    headers: Mapping[str, str]  # lower-case names in arrival order; repeats joined as PEP 3333 does
    peer: str                   # the TCP peer's address; "" on a unix socket (a local peer)


class Answer(NamedTuple):
    """What to send: the status, the headers (lower-case names) and the body. ``cacheable`` holds
    the decision's log fields and ``until`` (the token's exp, epoch seconds) when the answer cannot
    change before then (:mod:`forward_auth.decision_cache` may replay it)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    cacheable: dict[str, Any] | None = None


#: A ``/verify`` endpoint: :class:`VerifyEndpoint`, or the decision cache in front of it.
Verify = Callable[[Incoming], Answer]


class Reply:
    """An answer being built, with the part of Falcon's response that the error answers and
    :func:`~forward_auth.headers.apply_headers` use."""

    __slots__ = ("status", "media", "data", "content_type", "_headers", "cookies", "navigation")

    def __init__(self) -> None:
        self.status = 200
        self.navigation: redirects.Navigation | None = None  # a person's browser waits: where it goes if denied
        self.media: Any = None
        self.data = b""
        self.content_type = JSON
        self._headers: dict[str, str] = {}  # by lower-case name, as the answer sends them
        self.cookies: list[str] = []

    def set_header(self, name: str, value: str) -> None:
        self._headers[name.lower()] = value

    def append_header(self, name: str, value: str) -> None:
        if name.lower() == "set-cookie":
            self.cookies.append(value)
        else:
            old = self._headers.get(name.lower())
            self.set_header(name, value if old is None else f"{old},{value}")

    def get_header(self, name: str) -> str | None:
        return self._headers.get(name.lower())

    def delete_header(self, name: str) -> None:
        self._headers.pop(name.lower(), None)

    def answer(self, head: bool, cacheable: dict[str, Any] | None) -> Answer:
        """The answer, its media written as compact ASCII JSON; a HEAD request's without its body,
        its ``content-length`` the body's (as Falcon answers HEAD)."""
        body = self.data if self.media is None else compact_json(self.media).encode("ascii")
        headers = list(self._headers.items())
        headers.append(("content-type", self.content_type))
        headers += [("set-cookie", cookie) for cookie in self.cookies]
        if head:
            headers.append(("content-length", str(len(body))))
            body = b""
        return Answer(self.status, headers, body, cacheable)


class VerifyEndpoint:
    """``/verify``: any method; the original request comes in the proxy's headers."""

    def __init__(self, gate: Gate, policies: PolicyFile | None = None) -> None:
        self._gate = gate
        self._policies = policies
        self._trusted_peer = TrustedPeers(gate.settings.trusted_proxies)
        self._session_data = SessionData(gate.core, gate.settings.session_data_cache_seconds)
        self._errors = ErrorAnswers(gate.settings)

    def __call__(self, incoming: Incoming) -> Answer:
        route = "/verify/{path}" if incoming.path.startswith("/verify/") else "/verify"
        decision = Decision(incoming.headers.get, f"{incoming.method} {route}", incoming.path)
        params = parse_query_string(incoming.query, keep_blank=True) if incoming.query else {}
        reply, cacheable = Reply(), None
        try:
            cacheable = self._answer(incoming, params, reply, decision)
        except ForwardAuthError as exc:
            self._errors.apply(reply, exc, reply.navigation)
            decision.detail = exc.detail  # logged, never sent
        except Exception:  # our own bug: fail closed with a 500, log the traceback (never a token)
            log.exception("internal error on %s", incoming.path)
            reply = Reply()
            internal_error(reply)
        except BaseException:  # WouldBlock: decided again on the core pool, in a span of its own
            decision.abandon()
            raise
        decision.finish(reply.status, reply.get_header("X-Forward-Auth-Reason"), reply.get_header("X-Forward-Auth-Rule"))
        reply.set_header("X-Request-Id", decision.request_id)
        proxy = params.get("proxy") if incoming.path == "/verify" else None  # /verify/<path>: the client's query
        if (proxy[-1] if isinstance(proxy, list) else proxy) == "nginx":  # the last, as Falcon's get_param
            _for_nginx(reply)
        return reply.answer(incoming.method == "HEAD", cacheable)

    def _answer(self, incoming: Incoming, params: Params, reply: Reply, decision: Decision) -> dict[str, Any] | None:
        """Decide into ``reply``; the cacheable fields of an allowed answer that cannot change, if so."""
        profile = self._gate.settings.sdk_profile
        if incoming.path == "/verify":
            trusted = self._trusted_peer(incoming.peer)  # a unix socket ("") is a local peer
            uri = f"/verify?{incoming.query}" if incoming.query else "/verify"
            creds = credentials.from_headers(incoming.headers.get, method=incoming.method, uri=uri, trusted=trusted,
                                             sdk_profile=profile)
            # A redirect names the original URI only when a trusted proxy said what it was (else
            # redirectToPath would be /verify and its policy query).
            return self._decide(creds, params, reply, decision, proxied=creds.proxied, header=incoming.headers.get,
                                navigable=creds.proxied and trusted)
        # /verify/<original path> (Envoy ext_authz): the request *is* the original one, so its
        # method and path are the original ones (no forwarded header is read), and its query
        # string is the client's: it never chooses the policy (the policy file does). The path
        # is as sent: the policy decodes it once, as a forwarded URI.
        raw = incoming.path[len("/verify"):]
        header = credentials.without_forwarding(incoming.headers.get)
        creds = credentials.from_headers(header, method=incoming.method,
                                         uri=raw + (f"?{incoming.query}" if incoming.query else ""),
                                         trusted=False, sdk_profile=profile)
        return self._decide(creds, {}, reply, decision, proxied=True, header=header, navigable=True)

    def _decide(self, creds: credentials.Credentials, params: Params, reply: Reply, decision: Decision, *,
                proxied: bool, header: credentials.HeaderGetter, navigable: bool) -> dict[str, Any] | None:
        """Decide; an allowed answer to a proxy is its headers only, to a person (curl) also JSON.
        A browser navigation's denial is a redirect or a page, when targets are set."""
        settings = self._gate.settings
        decision.original = f"{header_value(creds.method)} {header_value(creds.path)}"  # no query, no forged lines
        reply.set_header("Cache-Control", "no-store")
        if settings.cors_preflight and creds.method == "OPTIONS" and header("access-control-request-method"):
            return _allow(reply, decision, "preflight", proxied)
        rule = rule_for(params, creds, self._policies)
        if rule is not None:
            reply.set_header("X-Forward-Auth-Rule", header_value(rule.name))
            if rule.session == "public":
                return _allow(reply, decision, "public", proxied)
        policy = policy_from(params, settings, rule)
        try:
            session = self._gate.verify(creds, policy)
        except ForwardAuthError:  # only a denial asks whether a person's browser is waiting
            reply.navigation = _navigation(settings, rule, creds, header) if navigable else None
            raise
        if session is None:
            return _allow(reply, decision, "no-session", proxied)
        decision.user_id, decision.tenant_id = session.user_id, session.tenant_id
        forwarded = self._forwarded(params, rule, creds, session)
        apply_headers(reply, session_headers(settings, rule, session, creds.anti_csrf, forwarded))
        _allow(reply, decision, "ok", proxied, session)
        if not verifier.replayable(session, policy) or "X-Session-Data" in forwarded:  # the core's data may change
            return None
        # Whole seconds: PyJWT (the python profile) counts a token expired once int(exp) <= now;
        # and never past the trust in its remembered signature (a withdrawn key shows no later).
        replay_until = min(math.floor(session.expiry_ms / 1000), session.trusted_until)
        until = reuse_until(settings, session, time.time()) if settings.proxy_cache_seconds else None
        if until is not None:  # nginx reads X-Accel-Expires only when it comes before the no-store
            reply.delete_header("Cache-Control")
            reply.set_header("X-Accel-Expires", f"@{until}")
            reply.set_header("Cache-Control", "no-store")
            replay_until = min(replay_until, until)  # a replayed X-Accel-Expires is never in the past
        return {"until": replay_until, "request": decision.original, "user_id": session.user_id,  # as logged:
                "tenant_id": session.tenant_id, "rule": header_value(rule.name) if rule is not None else None}

    def _forwarded(self, params: Params, rule: Rule | None, creds: credentials.Credentials,
                   session: verifier.Session) -> dict[str, str | None]:
        """The session object's opt-in headers: ``X-Session-Data`` (may wait on the core) and
        ``X-Access-Token`` (the token the request carried, or the one the core just minted)."""
        forwarded: dict[str, str | None] = {}
        if forwarded_session_data(params, rule):
            forwarded["X-Session-Data"] = self._session_data.header_value(session)
        if rule is not None and rule.access_token:
            fresh = session.new_access_token
            raw = fresh.token if fresh else creds.bearer_token if session.transfer_method == "header" else creds.cookie_token
            forwarded["X-Access-Token"] = header_value(raw or "")
        return forwarded


def _navigation(settings: Settings, rule: Rule | None, creds: credentials.Credentials,
                header: credentials.HeaderGetter) -> redirects.Navigation | None:
    """Where a denied browser navigation goes, or ``None``: an API call, or no target for it (no
    ``login_url``, a host not allowed)."""
    if not navigation.is_navigation(header, rule.on_denied if rule else None):
        return None
    targets = redirects.targets_for(settings, rule, creds.host)
    return None if targets is None else redirects.Navigation(targets, creds.method, creds.uri)


#: The ``message`` of an allowed answer's JSON, by its reason.
_MESSAGES = {"ok": "ok", "no-session": "no session", "public": "public", "preflight": "preflight"}


def _allow(reply: Reply, decision: Decision, reason: str, proxied: bool,
           session: verifier.Session | None = None) -> None:
    """An allowed answer: to a proxy its headers only (nginx keeps an upstream connection only
    after an empty answer); to a person (a direct ``curl``) also JSON: the session, or the reason."""
    decision.allow_reason = reason
    if proxied:
        return
    if session is not None:  # compact, from json's C string encoder
        reply.data = (f'{{"message":"ok","userId":{_json_string(session.user_id)},"sessionHandle":'
                      f'{_json_string(session.handle)},"tenantId":{json.dumps(session.tenant_id)}}}').encode("ascii")
    else:
        reply.media = {"message": _MESSAGES[reason]}


def _for_nginx(reply: Reply) -> None:
    """``?proxy=nginx``: what nginx ``auth_request`` cannot pass on, said in headers.

    nginx turns an auth status other than 2xx/401/403 into a 500, drops the body and copies
    only the first ``Set-Cookie``; its config re-emits these headers (see nginx.conf.example),
    and turns a navigation's redirect (401 + ``X-Forward-Auth-Location``) into the browser's 302
    or 303. The body itself is left empty: nginx closes its upstream connection after any
    answer with a body.
    """
    status = reply.status
    reply.set_header("X-Forward-Auth-Status", str(status))
    if status >= 400 and reply.media is not None:
        reply.set_header("X-Forward-Auth-Body", compact_json(reply.media))
    elif status >= 400 and reply.content_type == pages.HTML:  # a navigation's page (one ASCII line)
        reply.set_header("X-Forward-Auth-Body", reply.data.decode("ascii"))
        reply.set_header("X-Forward-Auth-Content-Type", pages.HTML)
    if 300 <= status < 400:  # a navigation's redirect
        reply.set_header("X-Forward-Auth-Location", reply.get_header("Location") or "")
        reply.delete_header("Location")
    if 300 <= status < 500 and status not in (401, 403):
        reply.status = 401
    for index, cookie in enumerate(reply.cookies, start=1):
        reply.set_header(f"X-Forward-Auth-Set-Cookie-{index}", cookie)
    reply.media, reply.data = None, b""
