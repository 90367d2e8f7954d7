"""The OpenAPI 3.1 document, from the app's route table and the request models.

The request schemas are msgspec's own (`schema_components`), so they cannot
drift from what the handlers decode.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from quart import Quart

from api import schemas
from api.routes import in_doubt

# Endpoint -> the model its JSON body is decoded as.
REQUEST_MODELS: dict[str, type[msgspec.Struct]] = {
    "accounts.create_account": schemas.AccountCreate,
    "accounts.update_account": schemas.AccountPatch,
    "contacts.upsert_contacts": schemas.ContactBody,
    "contacts.update_contact": schemas.ContactPatch,
    "segments.create_segment": schemas.SegmentCreate,
    "campaigns.create_campaign": schemas.CampaignCreate,
    "campaigns.update_campaign": schemas.CampaignPatch,
    "campaigns.preview_campaign": schemas.CampaignPreview,
    "campaigns.test_campaign": schemas.CampaignTestSend,
    "campaigns.retarget_campaign": schemas.CampaignRetarget,
    "in_doubt.resolve_in_doubt": in_doubt.InDoubtResolution,
}
# Endpoint -> what its operation does, where the summary cannot say it (risks).
_DESCRIPTIONS: dict[str, str] = {
    "in_doubt.resolve_in_doubt": in_doubt.DESCRIPTION,
    # docs/http-api.md, "Preview and test send" and "Retarget".
    "campaigns.preview_campaign": (
        "The Cloud API body the campaign would send to a contact (`contactId`), to made-up"
        " `variables`, or with defaults only; without the per-recipient"
        " biz_opaque_callback_data. 400 `missing_variable` names a variable with no value."
    ),
    "campaigns.test_campaign": (
        "Send the previewed body once to `phone` through the campaign's account, taking a turn"
        " of the number's budget: `{to, sent, provider_message_id, error: {code, class,"
        " message}}`. No recipient, no stats. 429 `account_busy` when the number has no turn."
    ),
    "campaigns.retarget_campaign": (
        "201: a new draft whose recipients are this campaign's in `audience` (not_delivered:"
        " sent, no delivery; not_read: delivered, not read, no reply; not_replied: delivered"
        " or read, no reply; failed), frozen now, opted-out contacts left out."
    ),
}
_EXTRA_MODELS: tuple[type[msgspec.Struct], ...] = (
    schemas.ContactBatch,
    schemas.TemplateContent,
    schemas.SegmentAudience,
    schemas.TagsAudience,
    schemas.ContactsAudience,
)
_PAGINATED = {
    "accounts.list_accounts",
    "accounts.list_account_events",
    "contacts.list_contacts",
    "segments.list_segments",
    "campaigns.list_campaigns",
    "campaigns.list_recipients",
}
_STATUS_FILTERED = {"campaigns.list_campaigns", "campaigns.list_recipients"}
_PUBLIC_PREFIXES = ("/healthz", "/metrics", "/webhooks", "/openapi.json", "/docs")
_PARAMETER = re.compile(r"<(?:[a-z_]+:)?([a-z_]+)>")

_ENVELOPE = {
    "type": "object",
    "required": ["success", "message", "data"],
    "properties": {
        "success": {"type": "boolean", "const": True},
        "message": {"type": "string"},
        "data": {},
        "pagination": {
            "type": "object",
            "properties": {"next_cursor": {"type": ["string", "null"]}},
        },
    },
}
_ERROR = {
    "type": "object",
    "required": ["success", "message", "error"],
    "properties": {
        "success": {"type": "boolean", "const": False},
        "message": {"type": "string"},
        "error": {
            "type": "object",
            "required": ["code"],
            "properties": {"code": {"type": "string"}, "field": {"type": "string"}},
        },
    },
}


def openapi_document(app: Quart) -> dict[str, Any]:
    models = (*REQUEST_MODELS.values(), *_EXTRA_MODELS)
    _, components = msgspec.json.schema_components(
        models, ref_template="#/components/schemas/{name}"
    )
    components["Envelope"] = _ENVELOPE
    components["Error"] = _ERROR
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        path = _PARAMETER.sub(r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                rule.endpoint, path, method.lower()
            )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Campaign engine",
            "version": "1.0.0",
            "description": "WhatsApp broadcast campaigns: resources, control and monitoring.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


# docs/http-api.md, "Idempotency"; api/idempotency.py.
_IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "A repeat with the same key and body replays the first answer for 24 hours;"
        " the same key with another request answers 409."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _operation(endpoint: str, path: str, method: str) -> dict[str, Any]:
    tag = endpoint.split(".", 1)[0]
    operation: dict[str, Any] = {
        "operationId": endpoint.replace(".", "_"),
        "summary": endpoint.split(".", 1)[-1].replace("_", " ").capitalize(),
        "tags": [tag],
        **({"description": _DESCRIPTIONS[endpoint]} if endpoint in _DESCRIPTIONS else {}),
        "responses": {
            "200": _json_response("Success", "Envelope"),
            "400": _json_response("Invalid request", "Error"),
            "404": _json_response("Not found", "Error"),
        },
    }
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{([a-z_]+)}", path)
    ]
    if endpoint in _PAGINATED:
        parameters += [
            {
                "name": "limit",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
            },
            {"name": "cursor", "in": "query", "schema": {"type": "string"}},
        ]
    if endpoint in _STATUS_FILTERED:
        parameters.append({"name": "status", "in": "query", "schema": {"type": "string"}})
    if path.startswith("/api/v1/") and method == "post":
        parameters.append(_IDEMPOTENCY_KEY)
    if parameters:
        operation["parameters"] = parameters
    model = REQUEST_MODELS.get(endpoint)
    if model is not None:
        schema: dict[str, Any] = {"$ref": f"#/components/schemas/{model.__name__}"}
        if model is schemas.ContactBody:
            schema = {"oneOf": [schema, {"$ref": "#/components/schemas/ContactBatch"}]}
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    if not path.startswith(_PUBLIC_PREFIXES):
        operation["security"] = [{"bearerAuth": []}]
        operation["responses"]["401"] = _json_response("Missing or bad token", "Error")
    return operation


def _json_response(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
