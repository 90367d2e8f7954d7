"""Each phone number's current sending rate, for the account budgets.

WhatsApp limits a phone number, not an account row: two rows naming the same
`phone_number_id` (two tenants, or one tenant twice) share one budget, at the
lowest `messagesPerSecond` among them. Any insert, delete or change of a rate or
a phone number id is announced on `ACCOUNT_CHANNEL` by a trigger
(migrations/0003_lease_presence.sql), payload the phone number id, so running
campaigns apply a new rate at once whichever daemon or tool changed it.
"""

from __future__ import annotations

from engine.store.database import Database

ACCOUNT_CHANNEL = "campaign_engine_accounts"


async def rate_of_number(db: Database, phone_number_id: str) -> float | None:
    """Messages per second for this phone number (None: no account has it)."""
    rate: int | None = await db.fetchval(
        "SELECT min(messages_per_second) FROM accounts WHERE phone_number_id = $1",
        phone_number_id,
    )
    return None if rate is None else float(rate)
