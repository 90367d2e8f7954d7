"""/openapi.json is valid OpenAPI 3 and describes every route of the contract."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from openapi_spec_validator import validate

from tests.api_helpers import Harness, api, gateway

__all__ = ["api", "gateway"]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

CONTRACT_ROUTES = {
    ("post", "/api/v1/accounts"),
    ("get", "/api/v1/accounts"),
    ("get", "/api/v1/accounts/{account_id}"),
    ("patch", "/api/v1/accounts/{account_id}"),
    ("delete", "/api/v1/accounts/{account_id}"),
    ("post", "/api/v1/contacts"),
    ("get", "/api/v1/contacts"),
    ("get", "/api/v1/contacts/{contact_id}"),
    ("patch", "/api/v1/contacts/{contact_id}"),
    ("delete", "/api/v1/contacts/{contact_id}"),
    ("post", "/api/v1/segments"),
    ("get", "/api/v1/segments"),
    ("get", "/api/v1/segments/{segment_id}"),
    ("delete", "/api/v1/segments/{segment_id}"),
    ("post", "/api/v1/campaigns"),
    ("get", "/api/v1/campaigns"),
    ("get", "/api/v1/campaigns/{campaign_id}"),
    ("patch", "/api/v1/campaigns/{campaign_id}"),
    ("delete", "/api/v1/campaigns/{campaign_id}"),
    ("post", "/api/v1/campaigns/{campaign_id}/start"),
    ("post", "/api/v1/campaigns/{campaign_id}/pause"),
    ("post", "/api/v1/campaigns/{campaign_id}/resume"),
    ("post", "/api/v1/campaigns/{campaign_id}/duplicate"),
    ("post", "/api/v1/campaigns/{campaign_id}/cancel"),
    ("get", "/api/v1/campaigns/{campaign_id}/recipients"),
    ("get", "/api/v1/queue"),
    ("get", "/webhooks/whatsapp"),
    ("post", "/webhooks/whatsapp"),
    ("get", "/healthz"),
    ("get", "/metrics"),
}


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


async def test_openapi_lists_every_route(api: Harness) -> None:
    with trio.fail_after(20):
        reply = await api.request("GET", "/openapi.json", user=None)
        assert reply.status == 200
        doc = reply.json()
        validate(doc)  # raises with the offending path if the document is not OpenAPI 3
        assert doc["openapi"].startswith("3.")
        assert {"title", "version"} <= set(doc["info"])
        listed = {(method, path) for path, item in doc["paths"].items() for method in item}
        assert CONTRACT_ROUTES <= listed, CONTRACT_ROUTES - listed
        schemas = doc["components"]["schemas"]
        for ref in refs(doc):
            assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
        operation_ids = []
        for path, item in doc["paths"].items():
            for method, operation in item.items():
                assert method in {"get", "post", "patch", "delete", "put"}
                assert operation["responses"], (method, path)
                operation_ids.append(operation["operationId"])
                declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
                assert declared == {part[1:-1] for part in path.split("/") if part.startswith("{")}
                if path.startswith("/api/v1"):
                    assert operation["security"] == [{"bearerAuth": []}]
        assert len(operation_ids) == len(set(operation_ids))
        create = doc["paths"]["/api/v1/campaigns"]["post"]["requestBody"]["content"]
        schema = schemas[create["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
        assert {"accountId", "name", "messageType", "audienceType", "scheduleType"} <= set(
            schema["required"]
        )
        throttle = schemas["ThrottleConfig"]["properties"]["messagesPerMinute"]
        assert (throttle["minimum"], throttle["maximum"]) == (1, 60000)

        docs = await api.request("GET", "/docs", user=None)
        assert docs.status == 200 and b"/openapi.json" in docs.body


async def test_openapi_documents_the_contact_size_limits(api: Harness) -> None:
    with trio.fail_after(20):
        schemas = (await api.request("GET", "/openapi.json", user=None)).json()["components"][
            "schemas"
        ]
        contact = schemas["ContactBody"]["properties"]
        attributes = contact["attributes"]
        assert attributes["maxProperties"] == 100
        assert attributes["propertyNames"] == {"minLength": 1, "maxLength": 64}
        assert attributes["additionalProperties"]["maxLength"] == 1024
        assert "64" in attributes["description"] and "1,024" in attributes["description"]
        tags = contact["tags"]
        assert (tags["maxItems"], tags["items"]["maxLength"]) == (50, 64)
        assert "50" in tags["description"]
        for name, limit in (("firstName", 100), ("lastName", 100), ("company", 200)):
            text = next(t for t in contact[name]["anyOf"] if t.get("type") == "string")
            assert text["maxLength"] == limit
            assert str(limit) in contact[name]["description"]
        batch = schemas["ContactBatch"]["properties"]["contacts"]
        assert batch["maxItems"] == 10_000 and "10,000" in batch["description"]
        # PATCH takes the same fields with the same rules.
        patch = schemas["ContactPatch"]["properties"]
        assert patch["attributes"]["maxProperties"] == 100
