"""WhatsApp accounts of an owner, as the engine's interface offers them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from engine.core.api_url import api_url_allowed
from engine.core.campaign_view import iso
from engine.core.resource_view import account_object
from engine.service.errors import InvalidInput, NotFound
from engine.service.page import Page
from engine.settings import WhatsAppSettings
from engine.store import accounts, portfolio_reach
from engine.store.database import Database


class NewAccount(msgspec.Struct, frozen=True):
    name: str
    phone_number_id: str
    access_token: str
    api_url: str | None = None
    status: str = "connected"
    messages_per_second: int = 80
    business_account_id: str | None = None  # the WABA id, which signals name
    # WhatsApp's messaging limit, shared by the portfolio's accounts (portfolio_reach).
    portfolio_id: str | None = None
    messaging_limit: int | None = None


class Accounts:
    def __init__(self, db: Database, whatsapp: WhatsAppSettings) -> None:
        self._db = db
        self._whatsapp = whatsapp

    async def create(self, owner_id: str, account: NewAccount) -> dict[str, Any]:
        """InvalidInput when its api_url is not allowed (engine/core/api_url.py)."""
        self._check_api_url(account.api_url)
        row = await accounts.create_account(self._db, owner_id, **msgspec.structs.asdict(account))
        return account_object(row)

    async def list(self, owner_id: str, *, after: str | None, limit: int) -> Page:
        rows = await accounts.list_accounts(self._db, owner_id, after=after, limit=limit)
        return Page([account_object(r) for r in rows], str(rows[-1]["id"]) if rows else None)

    async def get(self, owner_id: str, account_id: str) -> dict[str, Any]:
        """With `messaging_window`: how much of its portfolio's 24 hours is used."""
        row = await accounts.get_account(self._db, owner_id, account_id)
        if row is None:
            raise NotFound(account_id, "Account")
        use = await portfolio_reach.window_use(self._db, account_id, now=datetime.now(UTC))
        return account_object(row) | {"messaging_window": messaging_window(use)}

    async def update(
        self, owner_id: str, account_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """`changes`: field of NewAccount -> new value. InvalidInput as `create`."""
        self._check_api_url(changes.get("api_url"))
        row = await accounts.update_account(self._db, owner_id, account_id, changes)
        if row is None:
            raise NotFound(account_id, "Account")
        return account_object(row)

    def _check_api_url(self, api_url: str | None) -> None:
        prefixes = self._whatsapp.api_url_prefixes()
        if api_url is not None and not api_url_allowed(api_url, prefixes):
            raise InvalidInput("apiUrl", "must start with one of " + ", ".join(prefixes))

    async def delete(self, owner_id: str, account_id: str) -> None:
        """NotFound, or InUse while campaigns use it."""
        if not await accounts.delete_account(self._db, owner_id, account_id):
            raise NotFound(account_id, "Account")


def messaging_window(use: portfolio_reach.WindowUse) -> dict[str, Any]:
    """`{limit, used, resets_at}`: unique users reached in the moving 24 hours, and
    when the oldest of them leaves the window (null: nobody is in it)."""
    return {"limit": use.limit, "used": use.used, "resets_at": iso(use.resets_at)}
