"""WhatsApp accounts: `/api/v1/accounts`."""

from __future__ import annotations

import msgspec
from quart import Blueprint, Response

from api import context, params
from api.envelope import ApiError, not_found, success
from api.representations import account_object
from api.schemas import AccountCreate, AccountPatch, decode
from engine.store import accounts, errors

blueprint = Blueprint("accounts", __name__)

_COLUMNS = {
    "name": "name",
    "phoneNumberId": "phone_number_id",
    "accessToken": "access_token",
    "apiUrl": "api_url",
    "status": "status",
    "messagesPerSecond": "messages_per_second",
}


@blueprint.post("/accounts")
async def create_account() -> Response:
    body = decode(await context.body(), AccountCreate)
    row = await accounts.create_account(
        context.db(),
        context.user_id(),
        name=body.name,
        phone_number_id=body.phoneNumberId,
        access_token=body.accessToken,
        api_url=body.apiUrl,
        status=body.status,
        messages_per_second=body.messagesPerSecond,
    )
    return success(account_object(row), "Account created successfully", status=201)


@blueprint.get("/accounts")
async def list_accounts() -> Response:
    limit = params.limit()
    rows = await accounts.list_accounts(
        context.db(), context.user_id(), after=params.id_cursor(), limit=limit
    )
    return success(
        [account_object(r) for r in rows],
        "Accounts retrieved successfully",
        paginated=True,
        next_cursor=params.next_cursor(rows, limit, str(rows[-1]["id"]) if rows else None),
    )


@blueprint.get("/accounts/<account_id>")
async def get_account(account_id: str) -> Response:
    row = await accounts.get_account(
        context.db(), context.user_id(), params.resource_id(account_id, "Account")
    )
    if row is None:
        raise not_found("Account")
    return success(account_object(row), "Account retrieved successfully")


@blueprint.patch("/accounts/<account_id>")
async def update_account(account_id: str) -> Response:
    key = params.resource_id(account_id, "Account")
    patch = decode(await context.body(), AccountPatch)
    changes = {
        _COLUMNS[name]: value
        for name, value in msgspec.structs.asdict(patch).items()
        if value is not msgspec.UNSET
    }
    row = await accounts.update_account(context.db(), context.user_id(), key, changes)
    if row is None:
        raise not_found("Account")
    return success(account_object(row), "Account updated successfully")


@blueprint.delete("/accounts/<account_id>")
async def delete_account(account_id: str) -> Response:
    key = params.resource_id(account_id, "Account")
    try:
        deleted = await accounts.delete_account(context.db(), context.user_id(), key)
    except errors.InUse as error:
        raise ApiError(400, "account_in_use", str(error)) from None
    if not deleted:
        raise not_found("Account")
    return success({"id": key}, "Account deleted successfully")
