"""The auth backend of the browser example: supertokens-python's session recipe on a Flask app.

It serves the SDK's own ``/auth/session/refresh`` and ``/auth/signout`` and, for development
only, ``POST /auth/dev-login {"userId": ..., "roles": [...]}``, which creates a session whose
access token carries the roles as SuperTokens' ``st-role`` claim (no password recipe needed).
The proxy routes ``/auth/`` here with no session check.

    gunicorn --bind 127.0.0.1:3001 'backend:create_app()'

Settings (environment): ``CORE_URL`` (the dev core), ``CORE_API_KEY``, ``API_DOMAIN`` (the
proxy's origin), ``SESSION_EXPIRED_STATUS`` (401, or 440 for the legacy status), ``ANTI_CSRF``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, abort, jsonify, request
from supertokens_python import InputAppInfo, SupertokensConfig, init
from supertokens_python.framework.flask import Middleware
from supertokens_python.recipe import session
from supertokens_python.recipe.session.syncio import create_new_session
from supertokens_python.types import RecipeUserId


def create_app() -> Flask:
    """The Flask app, with the SDK initialised from the environment."""
    origin = os.environ.get("API_DOMAIN", "http://127.0.0.1:8000")
    init(
        app_info=InputAppInfo(app_name="forward-auth browser example", api_domain=origin,
                              website_domain=origin, api_base_path="/auth"),
        supertokens_config=SupertokensConfig(connection_uri=os.environ.get("CORE_URL", "http://127.0.0.1:3567"),
                                             api_key=os.environ.get("CORE_API_KEY") or None),
        framework="flask",
        mode="wsgi",
        telemetry=False,
        recipe_list=[session.init(
            anti_csrf=os.environ.get("ANTI_CSRF", "VIA_CUSTOM_HEADER"),  # type: ignore[arg-type]
            session_expired_status_code=int(os.environ.get("SESSION_EXPIRED_STATUS", "401")),
            cookie_secure=False,
        )],
    )
    app = Flask(__name__)
    Middleware(app)

    @app.post("/auth/dev-login")
    def dev_login() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("userId"), str) or not body["userId"]:
            abort(400, "send {\"userId\": \"...\", \"roles\": [...]}")
        roles = body.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            abort(400, "roles must be a list of strings")
        payload = {"st-role": {"v": roles, "t": int(time.time() * 1000)}}
        created = create_new_session(request, "public", RecipeUserId(body["userId"]), payload)
        return jsonify({"userId": created.get_user_id(), "handle": created.get_handle()})

    return app
