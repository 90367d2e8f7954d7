"""Contacts: `/api/v1/contacts`, upserted by phone.

A batch is checked item by item: invalid items are reported in `rejected` and
the valid ones are stored, applied in order: a phone that appears twice is
created by its first entry and updated by the later ones.

An import's body (up to `server.max_body_bytes`, ~1 MB per 10,000 contacts) is
released from the request as soon as it is read: the request object itself can
outlive its answer by minutes (asyncpg schedules asyncio timers, up to 300 s,
while serving it, and each timer keeps the context it was made in, which holds
Quart's request context), so a body left on it is memory held per request.
"""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Blueprint, Response, request

from api import context, params
from api.envelope import ApiError, success, validation_error
from api.schemas import ContactBatch, ContactBody, ContactPatch, convert, decode_any
from engine.service import ContactInput
from engine.service.errors import DuplicatePhone

blueprint = Blueprint("contacts", __name__)

_COLUMNS = {
    "phone": "phone",
    "firstName": "first_name",
    "lastName": "last_name",
    "email": "email",
    "company": "company",
    "tags": "tags",
    "attributes": "attributes",
    "optedOut": "opted_out",
}


def _contact_input(body: ContactBody) -> ContactInput:
    return ContactInput(
        phone=body.phone,
        first_name=body.firstName,
        last_name=body.lastName,
        email=body.email,
        company=body.company,
        tags=body.tags,
        attributes=body.attributes,
        opted_out=body.optedOut,
    )


def _batch(items: list[Any]) -> tuple[list[ContactInput], list[dict[str, Any]]]:
    """The valid entries, in order, and the rejected ones with their reason."""
    entries: list[ContactInput] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            entries.append(_contact_input(convert(item, ContactBody, "")))
        except ApiError as error:
            rejected.append({"index": index, "reason": error.message})
    return entries, rejected


def _entries(body: bytes) -> tuple[list[ContactInput], list[dict[str, Any]]]:
    """The body's valid entries and its rejected ones; the decoded JSON is gone once
    this returns, before the upsert waits on the database."""
    payload = decode_any(body)
    if isinstance(payload, dict) and "contacts" in payload:
        items = convert(payload, ContactBatch, "", parts_checked_later=True).contacts
        return _batch(items)
    if isinstance(payload, dict):
        return [_contact_input(convert(payload, ContactBody, ""))], []
    raise validation_error("", 'expected a contact object or {"contacts": [...]}')


async def _body_released() -> bytes:
    """The raw body, cleared from the request (see the module docstring). Read after
    the idempotency hook's fingerprint (api/idempotency.py), its last reader."""
    return await request.get_data(cache=False, as_text=False, parse_form_data=False)


@blueprint.post("/contacts")
async def upsert_contacts() -> Response:
    entries, rejected = _entries(await _body_released())
    saved = await context.engine().contacts.upsert(context.user_id(), entries)
    return success(
        {"created": saved.created, "updated": saved.updated, "rejected": rejected},
        f"{saved.created + saved.updated} contact(s) saved, {len(rejected)} rejected",
    )


@blueprint.get("/contacts")
async def list_contacts() -> Response:
    limit = params.limit()
    tag = request.args.get("tag") or None
    page = await context.engine().contacts.list(
        context.user_id(), after=params.id_cursor(), limit=limit, tag=tag
    )
    return params.page(page, limit, "Contacts retrieved successfully")


@blueprint.get("/contacts/<contact_id>")
async def get_contact(contact_id: str) -> Response:
    contact = await context.engine().contacts.get(
        context.user_id(), params.resource_id(contact_id, "Contact")
    )
    return success(contact, "Contact retrieved successfully")


@blueprint.patch("/contacts/<contact_id>")
async def update_contact(contact_id: str) -> Response:
    key = params.resource_id(contact_id, "Contact")
    patch = convert(decode_any(await context.body()), ContactPatch, "")
    changes = {
        _COLUMNS[name]: value
        for name, value in msgspec.structs.asdict(patch).items()
        if value is not msgspec.UNSET
    }
    try:
        contact = await context.engine().contacts.update(context.user_id(), key, changes)
    except DuplicatePhone as error:
        raise ApiError(
            400, "duplicate_phone", f"phone: another contact already has {error}", "phone"
        ) from None
    return success(contact, "Contact updated successfully")


@blueprint.delete("/contacts/<contact_id>")
async def delete_contact(contact_id: str) -> Response:
    key = params.resource_id(contact_id, "Contact")
    await context.engine().contacts.delete(context.user_id(), key)
    return success({"id": key}, "Contact deleted successfully")
