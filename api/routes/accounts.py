"""WhatsApp accounts: `/api/v1/accounts`."""

from __future__ import annotations

from typing import Annotated

import msgspec
from quart import Blueprint, Response

from api import context, params
from api.envelope import ApiError, success
from api.schemas import AccountCreate, AccountPatch, decode
from engine.service import NewAccount
from engine.service.errors import InUse

blueprint = Blueprint("accounts", __name__)

# The id of the last event of the previous page (event ids are bigints).
EventCursor = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]

# Request field -> NewAccount field.
_FIELDS = {
    "name": "name",
    "phoneNumberId": "phone_number_id",
    "accessToken": "access_token",
    "apiUrl": "api_url",
    "status": "status",
    "messagesPerSecond": "messages_per_second",
    "businessAccountId": "business_account_id",
    "portfolioId": "portfolio_id",
    "messagingLimit": "messaging_limit",
}


@blueprint.post("/accounts")
async def create_account() -> Response:
    body = decode(await context.body(), AccountCreate)
    account = await context.engine().accounts.create(
        context.user_id(),
        NewAccount(
            name=body.name,
            phone_number_id=body.phoneNumberId,
            access_token=body.accessToken,
            api_url=body.apiUrl,
            status=body.status,
            messages_per_second=body.messagesPerSecond,
            business_account_id=body.businessAccountId,
            portfolio_id=body.portfolioId,
            messaging_limit=body.messagingLimit,
        ),
    )
    return success(account, "Account created successfully", status=201)


@blueprint.get("/accounts")
async def list_accounts() -> Response:
    limit = params.limit()
    page = await context.engine().accounts.list(
        context.user_id(), after=params.id_cursor(), limit=limit
    )
    return params.page(page, limit, "Accounts retrieved successfully")


@blueprint.get("/accounts/<account_id>")
async def get_account(account_id: str) -> Response:
    account = await context.engine().accounts.get(
        context.user_id(), params.resource_id(account_id, "Account")
    )
    return success(account, "Account retrieved successfully")


@blueprint.patch("/accounts/<account_id>")
async def update_account(account_id: str) -> Response:
    key = params.resource_id(account_id, "Account")
    patch = decode(await context.body(), AccountPatch)
    changes = {
        _FIELDS[name]: value
        for name, value in msgspec.structs.asdict(patch).items()
        if value is not msgspec.UNSET
    }
    account = await context.engine().accounts.update(context.user_id(), key, changes)
    return success(account, "Account updated successfully")


@blueprint.delete("/accounts/<account_id>")
async def delete_account(account_id: str) -> Response:
    key = params.resource_id(account_id, "Account")
    try:
        await context.engine().accounts.delete(context.user_id(), key)
    except InUse as error:
        raise ApiError(400, "account_in_use", str(error)) from None
    return success({"id": key}, "Account deleted successfully")


@blueprint.get("/accounts/<account_id>/events")
async def list_account_events(account_id: str) -> Response:
    """The account event log (docs/webhooks.md, "Signals"), newest first."""
    limit = params.limit()
    page = await context.engine().account_events.list(
        context.user_id(),
        params.resource_id(account_id, "Account"),
        before=params.cursor(EventCursor),
        limit=limit,
    )
    return params.page(page, limit, "Account events retrieved successfully")
