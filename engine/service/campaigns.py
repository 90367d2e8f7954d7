"""Campaigns as their owners manage them: create, list, edit, delete, duplicate, and
their recipients. Control commands (start, pause, ...) are on `Engine` itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import msgspec
import trio

from engine.actors.account_budget import AccountBudget
from engine.clock import WallClock
from engine.core import tracked_links, variables
from engine.core.campaign_content import unrenderable
from engine.core.campaign_view import campaign_object
from engine.core.error_classes import ErrorClass, classify
from engine.core.rendering import contact_variables, render_payload, request_body
from engine.core.resource_view import recipient_object
from engine.core.retarget import AUDIENCES, Audience
from engine.core.retry import describe, error_code_of
from engine.core.variant_content import variant_problem, with_variant_urls
from engine.gateway import AccountEndpoint, Gateway, OutgoingMessage, SendResult
from engine.service.errors import InvalidInput, InvalidReference, NotFound, TransitionRefused
from engine.service.page import Page
from engine.store import campaigns, contacts
from engine.store.campaigns import CampaignInput, RetargetInput
from engine.store.database import Database, Record

# A campaign's stored settings (column -> value) -> the columns to change. It runs
# under the campaign's row lock and may raise to refuse the edit (nothing is written).
Decide = Callable[[Mapping[str, Any]], dict[str, Any]]


# A test send is no recipient: no recipient row has id 0 (identities start at 1), so
# the statuses WhatsApp posts for it match nothing (they are skipped and counted).
TEST_SEND_RECIPIENT_ID = 0
# How long a test send may wait for a turn of its number's budget before it is refused.
TEST_SEND_TURN_HORIZON_SECONDS = 2.0


class AccountBusy(Exception):
    """The number's send budget has no turn free soon (it sends at its limit, or
    WhatsApp asked it to slow down): a test send is refused rather than queued."""


class Campaigns:
    def __init__(
        self,
        db: Database,
        clock: WallClock,
        throttle_changed: Callable[[str], Awaitable[None]],
        *,
        in_doubt_timeout: float | None = None,
        links_base_url: str | None = None,
        gateway: Gateway | None = None,
        budgets: AccountBudget | None = None,
        default_api_url: str = "",
        throttle_slowdown_seconds: float = 0.0,
    ) -> None:
        self._db = db
        # Test sends go out through the engine's gateway and take a turn of the
        # number's budget, as a campaign's sends do.
        self._gateway = gateway
        self._budgets = budgets
        self._default_api_url = default_api_url
        self._throttle_slowdown = throttle_slowdown_seconds
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
                written["tracked_urls"] = with_variant_urls(
                    _tracked_urls(
                        edited["track_links"],
                        edited["message_type"],
                        edited["message_content"],
                        self._links_base_url,
                    ),
                    edited["track_links"],
                    edited["variants"],
                )
            _check_variants(edited, self._links_base_url)  # A/B: each still renders
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

    async def retarget(
        self,
        owner_id: str,
        campaign_id: str,
        audience: Audience,
        *,
        name: str | None = None,
        message_content: Any = None,
    ) -> dict[str, Any]:
        """A new draft whose recipients are this campaign's in `audience`, frozen now
        (engine/store/retarget.py). `message_content` (None: the campaign's) must
        suit the campaign's message type. NotFound; TransitionRefused for a draft;
        InvalidInput / InvalidReference for a message that cannot be sent."""
        if audience not in AUDIENCES:
            raise InvalidInput("audience", "expected one of " + ", ".join(AUDIENCES))
        tracked: list[str] | None = None
        if message_content is not None:
            source = await campaigns.campaign_row(self._db, campaign_id, owner_id)
            if source is None:
                raise NotFound(campaign_id)
            _check_renders(
                source["message_type"],
                message_content,
                source["media_url"],
                source["template_variables"],
            )
            tracked = _tracked_urls(
                source["track_links"],
                source["message_type"],
                message_content,
                self._links_base_url,
            )
        wanted = RetargetInput(audience, name, message_content, tracked)
        row = await campaigns.retarget_campaign(
            self._db, owner_id, campaign_id, wanted, now=self._clock.now()
        )
        if row is None:
            raise NotFound(campaign_id)
        return campaign_object(row, in_doubt_timeout=self._in_doubt_timeout)

    async def preview(
        self,
        owner_id: str,
        campaign_id: str,
        *,
        contact_id: str | None = None,
        given: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """`{body, variables}`: the Cloud API body the campaign sends to this contact (or
        to one with the `given` variables; neither: defaults only). Its `to` is the
        contact's phone (or the `phone` variable); the per-recipient
        `biz_opaque_callback_data` is left out, and tracked links show as written
        (both are made per recipient). NotFound; InvalidReference for an unknown
        contact; variables.MissingVariables."""
        context = await self._context(owner_id, campaign_id)
        values = await self._variables(owner_id, contact_id, given)
        message = _message(context, values, values.get("phone", ""))
        return {"body": request_body(message, None), "variables": values}

    async def send_test(
        self,
        owner_id: str,
        campaign_id: str,
        phone: str,
        *,
        contact_id: str | None = None,
        given: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send the previewed message once to `phone` through the campaign's account:
        a turn of the number's budget, one request, no retry. It is no recipient and
        changes no stats. Returns `{to, sent, provider_message_id, error}` with
        `error: {code, class, message}` as the engine classifies it. NotFound;
        TransitionRefused when the account is not connected; AccountBusy;
        variables.MissingVariables (nothing is sent)."""
        if self._gateway is None or self._budgets is None:
            raise RuntimeError("this engine was opened without a gateway for test sends")
        context = await self._context(owner_id, campaign_id)
        if context["account_status"] != "connected":
            raise TransitionRefused("account_not_connected", "WhatsApp account is not connected")
        values = await self._variables(owner_id, contact_id, given)
        message = _message(context, values, phone)
        number = context["phone_number_id"]
        rate = float(context["messages_per_second"])
        turns = await self._budgets.reserve(number, rate, 1, TEST_SEND_TURN_HORIZON_SECONDS)
        if not turns:
            raise AccountBusy(number)
        await trio.sleep_until(turns[0])
        endpoint = AccountEndpoint(
            account_id=str(context["account_id"]),
            api_url=(context["api_url"] or self._default_api_url).rstrip("/"),
            phone_number_id=number,
            access_token=context["access_token"],
        )
        async with self._gateway.open_session() as session:
            result = await session.send(endpoint, message)
        error_class = None if result.ok else classify(result.http_status, result.error_code)
        if error_class is ErrorClass.THROTTLED:
            # The number's budget slows down as it does for a campaign's 130429.
            await self._budgets.slow_down(number, self._throttle_slowdown)
        return _test_result(phone, result, error_class)

    async def _context(self, owner_id: str, campaign_id: str) -> Record:
        context = await campaigns.message_context(self._db, owner_id, campaign_id)
        if context is None:
            raise NotFound(campaign_id)
        return context

    async def _variables(
        self, owner_id: str, contact_id: str | None, given: Mapping[str, str] | None
    ) -> dict[str, str]:
        if contact_id is None:
            return dict(given or {})
        contact = await contacts.get_contact(self._db, owner_id, contact_id)
        if contact is None:
            raise InvalidReference("contactId", "contactId: no such contact")
        return contact_variables(
            contact["first_name"],
            contact["last_name"],
            contact["phone"],
            contact["email"],
            contact["company"],
            {str(k): str(v) for k, v in (contact["attributes"] or {}).items()},
        )


def _message(context: Record, values: Mapping[str, str], to: str) -> OutgoingMessage:
    """The message the campaign sends to a contact with `values`, rendered by the
    sender's own renderer; MissingVariables unless the campaign allows them."""
    defaults = {str(k): str(v) for k, v in (context["template_variables"] or {}).items()}
    content = context["message_content"]
    if not context["allow_missing_variables"]:
        found = variables.placeholders(context["message_type"], content)
        lacking = variables.missing(found, values, defaults)
        if lacking:
            raise variables.MissingVariables(found, lacking)
    payload = render_payload(
        context["message_type"], content, values, defaults, media_url=context["media_url"]
    )
    return OutgoingMessage(TEST_SEND_RECIPIENT_ID, to, context["message_type"], payload)


def _test_result(phone: str, result: SendResult, error_class: ErrorClass | None) -> dict[str, Any]:
    if result.ok or error_class is None:
        return {
            "to": phone,
            "sent": True,
            "provider_message_id": result.provider_message_id,
            "error": None,
        }
    kind = (
        "in_doubt"  # it may have arrived: never sent again blindly
        if result.may_have_arrived
        else error_class.value
    )
    return {
        "to": phone,
        "sent": False,
        "provider_message_id": None,
        "error": {"code": error_code_of(result), "class": kind, "message": describe(result)},
    }


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
    too_long = tracked_links.overflow(content, base_url)
    if too_long is not None:
        raise InvalidInput("messageContent", too_long)
    return tracked_links.extract_urls(content)


def _check_variants(edited: Mapping[str, Any], links_base_url: str | None) -> None:
    """InvalidInput when an edit leaves an A/B variant that would not render (its type,
    media or tracked links changed; variants themselves are set at creation)."""
    for index, variant in enumerate(edited["variants"]):
        reason = variant_problem(
            edited["message_type"],
            variant["messageContent"],
            edited["media_url"],
            edited["template_variables"],
            track_links=edited["track_links"],
            links_base_url=links_base_url,
        )
        if reason is not None:
            raise InvalidInput(f"variants[{index}].messageContent", reason)


def _check_renders(
    message_type: str, content: Any, media_url: str | None, defaults: Mapping[str, str]
) -> None:
    reason = unrenderable(message_type, content, media_url, defaults)
    if reason is not None:
        raise InvalidInput("messageContent", reason)


__all__ = ["AccountBusy", "CampaignInput", "Campaigns", "Decide"]
