"""supertokens-python 0.31.4 as the behavioural oracle: init/reset, and a FastAPI app whose
routes are ``verify_session`` with each per-route option the service offers as a query parameter."""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI
from supertokens_python import InputAppInfo, Supertokens, SupertokensConfig, init
from supertokens_python.framework.fastapi import get_middleware
from supertokens_python.post_init_callbacks import PostSTInitCallbacks
from supertokens_python.process_state import ProcessState
from supertokens_python.recipe import session
from supertokens_python.recipe.accountlinking.recipe import AccountLinkingRecipe
from supertokens_python.recipe.emailverification import EmailVerificationClaim
from supertokens_python.recipe.jwt.recipe import JWTRecipe
from supertokens_python.recipe.multitenancy.recipe import MultitenancyRecipe
from supertokens_python.recipe.oauth2provider.recipe import OAuth2ProviderRecipe
from supertokens_python.recipe.openid.recipe import OpenIdRecipe
from supertokens_python.recipe.session import SessionContainer
from supertokens_python.recipe.session.framework.fastapi import verify_session
from supertokens_python.recipe.session.interfaces import SessionClaimValidator
from supertokens_python.recipe.session.recipe import SessionRecipe
from supertokens_python.recipe.userroles import PermissionClaim, UserRoleClaim

#: Oracle route -> the service's query parameters for the same policy.
ROUTES: dict[str, dict[str, str]] = {
    "required": {},
    "optional": {"sessionRequired": "false"},
    "checkdb": {"checkDatabase": "true"},
    "csrf_on": {"antiCsrf": "true"},
    "csrf_off": {"antiCsrf": "false"},
    "role_admin": {"requireRole": "admin"},
    "roles_admin_editor": {"requireRole": "admin,editor"},
    "perm_edit": {"requirePermission": "edit"},
    "email_verified": {"requireEmailVerified": "true"},
    "roles_all": {"policy": "roles-all"},
    "roles_any": {"policy": "roles-any"},
    "roles_excludes": {"policy": "roles-excludes"},
    "roles_excludes_all": {"policy": "roles-excludes-all"},
    "perm_all_ev_fresh": {"policy": "perm-all-ev-fresh"},
}

#: The policy file the service uses for the ``?policy=`` routes above (same validators as the oracle's);
#: the rules match no real path, so they apply only when named.
POLICY = """
rules:
  - {name: roles-all, match: {path_prefix: /by-name/}, claims: [{claim: st-role, includes_all: [admin, editor]}]}
  - {name: roles-any, match: {path_prefix: /by-name/}, claims: [{claim: st-role, includes_any: [admin, editor]}]}
  - {name: roles-excludes, match: {path_prefix: /by-name/}, claims: [{claim: st-role, excludes: banned}]}
  - {name: roles-excludes-all, match: {path_prefix: /by-name/}, claims: [{claim: st-role, excludes_all: [banned, suspended]}]}
  - name: perm-all-ev-fresh
    match: {path_prefix: /by-name/}
    claims:
      - {claim: st-perm, includes_all: [read, write]}
      - {claim: st-ev, equals: true, max_age_seconds: 3600}
"""
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]


def reset_sdk() -> None:
    """Forget every SDK singleton, as the SDK's own test suite does between tests."""
    os.environ["SUPERTOKENS_ENV"] = "testing"
    Supertokens.reset()
    for recipe in (SessionRecipe, AccountLinkingRecipe, JWTRecipe, OpenIdRecipe, MultitenancyRecipe,
                   OAuth2ProviderRecipe):
        recipe.reset()
    PostSTInitCallbacks.reset()
    ProcessState.get_instance().reset()


def init_sdk(core_url: str, api_key: str | None, **session_options: Any) -> None:
    """A fresh SDK on the given core, same-site http app (cookies: SameSite=lax, not Secure)."""
    reset_sdk()
    init(
        app_info=InputAppInfo(app_name="oracle", api_domain="http://testserver",
                              website_domain="http://testserver", api_base_path="/auth"),
        supertokens_config=SupertokensConfig(connection_uri=core_url, api_key=api_key),
        framework="fastapi",
        recipe_list=[session.init(**session_options)],
        mode="asgi",
        telemetry=False,
    )


def claims(*validators: SessionClaimValidator) -> dict[str, Any]:
    """verify_session options that replace the global claim validators with these."""
    return {"override_global_claim_validators": lambda _globals, _session, _context: list(validators)}


def oracle_app() -> FastAPI:
    """One route per policy, each answering the verified user (or null for no session)."""
    app = FastAPI()
    app.add_middleware(get_middleware())
    options: dict[str, dict[str, Any]] = {
        "required": {},
        "optional": {"session_required": False},
        "checkdb": {"check_database": True},
        "csrf_on": {"anti_csrf_check": True},
        "csrf_off": {"anti_csrf_check": False},
        "role_admin": claims(UserRoleClaim.validators.includes("admin")),
        "roles_admin_editor": claims(UserRoleClaim.validators.includes("admin"),
                                     UserRoleClaim.validators.includes("editor")),
        "perm_edit": claims(PermissionClaim.validators.includes("edit")),
        "email_verified": claims(EmailVerificationClaim.validators.is_verified()),
        "roles_all": claims(UserRoleClaim.validators.includes_all(["admin", "editor"])),
        "roles_any": claims(UserRoleClaim.validators.includes_any(["admin", "editor"])),
        "roles_excludes": claims(UserRoleClaim.validators.excludes("banned")),
        "roles_excludes_all": claims(UserRoleClaim.validators.excludes_all(["banned", "suspended"])),
        "perm_all_ev_fresh": claims(PermissionClaim.validators.includes_all(["read", "write"]),
                                    EmailVerificationClaim.validators.is_verified(max_age_in_seconds=3600)),
    }
    for name, kwargs in options.items():
        async def handler(s: SessionContainer | None = Depends(verify_session(**kwargs))) -> dict[str, Any]:
            if s is None:
                return {"userId": None}
            return {"userId": s.get_user_id(), "tenantId": s.get_tenant_id()}

        app.add_api_route("/" + name, handler, methods=METHODS)
    return app
