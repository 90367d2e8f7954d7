"""`/openapi.json` and a `/docs` page rendering it."""

from __future__ import annotations

from quart import Blueprint, Response, current_app

from api.envelope import json_response
from api.openapi import openapi_document

blueprint = Blueprint("docs", __name__)

_DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Campaign engine API</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}
code{background:#f3f3f3;padding:0 .2rem}li{margin:.2rem 0}</style></head>
<body><h1>Campaign engine API</h1>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).
Every <code>/api/v1</code> route needs <code>Authorization: Bearer &lt;token&gt;</code>.</p>
<ul id="ops"></ul>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const ops = document.getElementById('ops');
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const li = document.createElement('li');
      li.innerHTML = '<code>' + method.toUpperCase() + ' ' + path + '</code> ' + op.summary;
      ops.appendChild(li);
    }
  }
});
</script></body></html>"""


@blueprint.get("/openapi.json")
async def openapi_json() -> Response:
    return json_response(openapi_document(current_app))


@blueprint.get("/docs")
async def docs_page() -> Response:
    return Response(_DOCS_PAGE, content_type="text/html; charset=utf-8")
