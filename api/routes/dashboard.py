"""The dashboard: `/` and its static files under `/static/` (plain HTML and vanilla JS).

The browser Socket.IO client is not ours: `make install` copies it from the
`socket.io-client` npm package to `api/static/vendor/` (gitignored). The page
says so when it is missing.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory

blueprint = Blueprint("dashboard", __name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


@blueprint.get("/")
async def index() -> Response:
    response = await send_from_directory(STATIC_DIR, "index.html")
    # Small and changes with deployments: always revalidate.
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.get("/static/<path:filename>")
async def static_file(filename: str) -> Response:
    # send_from_directory refuses paths that escape STATIC_DIR (404).
    response = await send_from_directory(STATIC_DIR, filename)
    response.headers["Cache-Control"] = "no-cache"
    return response
