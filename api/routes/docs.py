"""`/openapi.json`, and `/docs`: the interactive reference rendered from it.

`/docs` is Swagger UI (the `swagger-ui-dist` npm package, copied to
`api/static/vendor/` by `make install`, gitignored) loaded by a small static
page, `api/static/docs.html`; the page says so when the files are missing.
"""

from __future__ import annotations

from quart import Blueprint, Response, current_app, send_from_directory

from api.envelope import json_response
from api.openapi import openapi_document
from api.routes.dashboard import STATIC_DIR

blueprint = Blueprint("docs", __name__)


@blueprint.get("/openapi.json")
async def openapi_json() -> Response:
    return json_response(openapi_document(current_app))


@blueprint.get("/docs")
async def docs_page() -> Response:
    response = await send_from_directory(STATIC_DIR, "docs.html")
    response.headers["Cache-Control"] = "no-cache"
    return response
