"""Segments: `/api/v1/segments`, saved audiences by tags and/or contact ids."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from api import context, params
from api.envelope import not_found, success, validation_error
from api.representations import segment_object
from api.schemas import SegmentCreate, decode
from engine.store import segments

blueprint = Blueprint("segments", __name__)


@blueprint.post("/segments")
async def create_segment() -> Response:
    body = decode(await context.body(), SegmentCreate)
    if not body.filter.tags and not body.filter.contactIds:
        raise validation_error("filter", "expected at least one of tags or contactIds, non-empty")
    segment_filter: dict[str, Any] = {}
    if body.filter.tags:
        segment_filter["tags"] = body.filter.tags
    if body.filter.contactIds:
        segment_filter["contactIds"] = [str(i) for i in body.filter.contactIds]
    row = await segments.create_segment_sized(
        context.db(), context.user_id(), name=body.name, filter=segment_filter
    )
    return success(
        {"id": str(row["id"]), "name": row["name"], "size": int(row["size"])},
        "Segment created successfully",
        status=201,
    )


@blueprint.get("/segments")
async def list_segments() -> Response:
    limit = params.limit()
    rows = await segments.list_segments(
        context.db(), context.user_id(), after=params.id_cursor(), limit=limit
    )
    return success(
        [segment_object(r) for r in rows],
        "Segments retrieved successfully",
        paginated=True,
        next_cursor=params.next_cursor(rows, limit, str(rows[-1]["id"]) if rows else None),
    )


@blueprint.get("/segments/<segment_id>")
async def get_segment(segment_id: str) -> Response:
    row = await segments.get_segment(
        context.db(), context.user_id(), params.resource_id(segment_id, "Segment")
    )
    if row is None:
        raise not_found("Segment")
    return success(segment_object(row), "Segment retrieved successfully")


@blueprint.delete("/segments/<segment_id>")
async def delete_segment(segment_id: str) -> Response:
    key = params.resource_id(segment_id, "Segment")
    if not await segments.delete_segment(context.db(), context.user_id(), key):
        raise not_found("Segment")
    return success({"id": key}, "Segment deleted successfully")
