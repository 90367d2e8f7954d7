"""Campaigns as their owners manage them: create, list, edit, delete, duplicate, and
their recipients. Control commands (start, pause, ...) are on `Engine` itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from engine.clock import WallClock
from engine.core import tracked_links
from engine.core.campaign_content import unrenderable
from engine.core.campaign_view import campaign_object
from engine.core.resource_view import recipient_object
from engine.service.errors import InvalidInput, NotFound
from engine.service.page import Page
from engine.store import campaigns
from engine.store.campaigns import CampaignInput
from engine.store.database import Database

# A campaign's stored settings (column -> value) -> the columns to change. It runs
# under the campaign's row lock and may raise to refuse the edit (nothing is written).
Decide = Callable[[Mapping[str, Any]], dict[str, Any]]


class Campaigns:
    def __init__(
        self,
        db: Database,
        clock: WallClock,
        throttle_changed: Callable[[str], Awaitable[None]],
        *,
        in_doubt_timeout: float | None = None,
        links_base_url: str | None = None,
    ) -> None:
        self._db = db
        self._links_base_url = links_base_url  # links.base_url: tracked links need it
        self._clock = clock
        self._throttle_changed = throttle_changed
        self._in_doubt_timeout = in_doubt_timeout  # for each object's in_doubt.resolves_at

    async def create(self, owner_id: str, campaign: CampaignInput) -> dict[str, Any]:
        """InvalidReference when the account (or segment) is not the owner's;
        InvalidInput when its message would not render."""
        _check_renders(
            campaign.message_type,
            campaign.message_content,
            campaign.media_url,
            campaign.template_variables,
        )
        urls = _tracked_urls(
            campaign.track_links,
            campaign.message_type,
            campaign.message_content,
            self._links_base_url,
        )
        campaign = msgspec.structs.replace(campaign, tracked_urls=urls)
        row = await campaigns.create_owned_campaign(
            self._db, owner_id, campaign, now=self._clock.now()
        )
        return campaign_object(row, in_doubt_timeout=self._in_doubt_timeout)

    async def list(
        self,
        owner_id: str,
        *,
        status: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> Page:
        """Newest first; `last` is `(created_at, id)`."""
        rows = await campaigns.list_campaigns(
            self._db, owner_id, status=status, after=after, limit=limit
        )
        last = (rows[-1]["created_at"], str(rows[-1]["id"])) if rows else None
        objects = [campaign_object(r, in_doubt_timeout=self._in_doubt_timeout) for r in rows]
        return Page(objects, last)

    async def update(self, owner_id: str, campaign_id: str, decide: Decide) -> dict[str, Any]:
        """Edit under the row lock; a new throttleConfig reaches a running campaign at once.
        InvalidInput when the edited message would not render (nothing is written)."""
        written: dict[str, Any] = {}

        def changes(current: Any) -> dict[str, Any]:
            stored = dict(current)
            written.update(decide(stored))
            edited = stored | written
            _check_renders(
                edited["message_type"],
                edited["message_content"],
                edited["media_url"],
                edited["template_variables"],
            )
            if {"track_links", "message_type", "message_content"} & written.keys():
                written["tracked_urls"] = _tracked_urls(
                    edited["track_links"],
                    edited["message_type"],
                    edited["message_content"],
                    self._links_base_url,
                )
            return written

        row = await campaigns.update_campaign(self._db, owner_id, campaign_id, changes)
        if row is None:
            raise NotFound(campaign_id)
        if "throttle_config" in written and row["status"] == "running":
            await self._throttle_changed(campaign_id)
        return campaign_object(row, in_doubt_timeout=self._in_doubt_timeout)

    async def delete(self, owner_id: str, campaign_id: str) -> None:
        """NotFound, or TransitionRefused while it runs."""
        if not await campaigns.delete_campaign(self._db, owner_id, campaign_id):
            raise NotFound(campaign_id)

    async def duplicate(self, owner_id: str, campaign_id: str) -> dict[str, Any]:
        """A new draft with the same settings: `{id, name, status, total_recipients}`,
        the last being the audience it would have now."""
        result = await campaigns.duplicate_campaign(
            self._db, owner_id, campaign_id, now=self._clock.now()
        )
        if result is None:
            raise NotFound(campaign_id)
        row, audience_size = result
        return {
            "id": str(row["id"]),
            "name": row["name"],
            "status": row["status"],
            "total_recipients": audience_size,
        }

    async def recipients(
        self, owner_id: str, campaign_id: str, *, status: str | None, after: int, limit: int
    ) -> Page:
        """In id order; `last` is the last recipient's id."""
        rows = await campaigns.list_recipients(
            self._db, owner_id, campaign_id, status=status, after=after, limit=limit
        )
        if rows is None:
            raise NotFound(campaign_id)
        return Page([recipient_object(r) for r in rows], int(rows[-1]["id"]) if rows else None)


def _tracked_urls(
    track_links: bool, message_type: str, content: Any, base_url: str | None
) -> list[str]:
    """The URLs a campaign tracks (none without trackLinks); InvalidInput when it cannot
    track them: no links.base_url, not a text, or a body that could outgrow Meta's limit."""
    if not track_links:
        return []
    if base_url is None:
        raise InvalidInput(
            "trackLinks", "needs the links.base_url setting (the address recipients reach)"
        )
    if message_type != "text" or not isinstance(content, str):
        raise InvalidInput("trackLinks", 'only a messageType "text" can track links')
    urls = tracked_links.extract_urls(content)
    longest = tracked_links.longest_rewritten(content, urls, base_url)
    if longest > tracked_links.MAX_TEXT_BODY:
        raise InvalidInput(
            "messageContent",
            f"with tracked links it may reach {longest} characters; "
            f"expected at most {tracked_links.MAX_TEXT_BODY}",
        )
    return urls


def _check_renders(
    message_type: str, content: Any, media_url: str | None, defaults: Mapping[str, str]
) -> None:
    reason = unrenderable(message_type, content, media_url, defaults)
    if reason is not None:
        raise InvalidInput("messageContent", reason)


__all__ = ["CampaignInput", "Campaigns", "Decide"]
