"""Segments: `/api/v1/segments`, saved audiences by tags and/or contact ids."""

from __future__ import annotations

from quart import Blueprint, Response

from api import context, params
from api.envelope import success, validation_error
from api.schemas import SegmentCreate, decode

blueprint = Blueprint("segments", __name__)


@blueprint.post("/segments")
async def create_segment() -> Response:
    body = decode(await context.body(), SegmentCreate)
    if not body.filter.tags and not body.filter.contactIds:
        raise validation_error("filter", "expected at least one of tags or contactIds, non-empty")
    segment = await context.engine().segments.create(
        context.user_id(),
        name=body.name,
        tags=body.filter.tags or [],
        contact_ids=[str(i) for i in body.filter.contactIds or []],
    )
    return success(segment, "Segment created successfully", status=201)


@blueprint.get("/segments")
async def list_segments() -> Response:
    limit = params.limit()
    page = await context.engine().segments.list(
        context.user_id(), after=params.id_cursor(), limit=limit
    )
    return params.page(page, limit, "Segments retrieved successfully")


@blueprint.get("/segments/<segment_id>")
async def get_segment(segment_id: str) -> Response:
    segment = await context.engine().segments.get(
        context.user_id(), params.resource_id(segment_id, "Segment")
    )
    return success(segment, "Segment retrieved successfully")


@blueprint.delete("/segments/<segment_id>")
async def delete_segment(segment_id: str) -> Response:
    key = params.resource_id(segment_id, "Segment")
    await context.engine().segments.delete(context.user_id(), key)
    return success({"id": key}, "Segment deleted successfully")
