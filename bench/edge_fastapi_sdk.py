"""FastAPI with supertokens-python 0.31.4's ``verify_session()``, for ``bench/edge_bench.py`` under uvicorn.

    CORE_URL=http://127.0.0.1:C API_KEY=K PYTHONPATH=bench/python/site:bench \\
        .venv/bin/python -m uvicorn edge_fastapi_sdk:app --workers 2 --port P --loop uvloop --http httptools

``GET /verify`` answers 200 with ``X-User-Id`` and an empty body (the best case behind nginx
``auth_request``); the SDK's middleware answers its own 401 for a bad or missing token. The SDK is
initialised at import, in each uvicorn worker.
"""

from __future__ import annotations

import os

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from supertokens_python import InputAppInfo, SupertokensConfig, init
from supertokens_python.framework.fastapi import get_middleware
from supertokens_python.recipe import session
from supertokens_python.recipe.session import SessionContainer
from supertokens_python.recipe.session.framework.fastapi import verify_session

init(
    app_info=InputAppInfo(app_name="bench", api_domain="http://127.0.0.1", website_domain="http://127.0.0.1",
                          api_base_path="/auth"),
    supertokens_config=SupertokensConfig(connection_uri=os.environ["CORE_URL"],
                                         api_key=os.environ.get("API_KEY") or None),
    framework="fastapi",
    # The service's default on a same-site http app (effective anti-CSRF NONE), as the other SDK apps.
    recipe_list=[session.init(anti_csrf="NONE")],
    mode="asgi",
    telemetry=False,
)

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
app.add_middleware(get_middleware())


@app.api_route("/verify", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
async def verify(s: SessionContainer = Depends(verify_session())) -> Response:  # noqa: B008
    return Response(status_code=200, headers={"Cache-Control": "no-store", "X-User-Id": s.get_user_id()})


@app.get("/healthz")
async def healthz() -> Response:
    return Response(status_code=200)
