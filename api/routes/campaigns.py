"""Campaigns: `/api/v1/campaigns`, their control commands and recipients."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import msgspec
from quart import Blueprint, Response

from api import context, params
from api.envelope import ApiError, success, validation_error
from api.schemas import (
    CampaignCreate,
    CampaignPatch,
    CampaignPreview,
    CampaignRetarget,
    CampaignSettings,
    CampaignTestSend,
    check_campaign,
    check_variants,
    decode,
    send_window_json,
    throttle_json,
)
from engine.core import lifecycle
from engine.service import CampaignInput
from engine.service.campaigns import AccountBusy

blueprint = Blueprint("campaigns", __name__)

RecipientCursor = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
RECIPIENT_STATUSES = ("pending", "sending", "sent", "delivered", "read", "failed", "in_doubt")

# PATCH field -> the column it writes.
_COLUMNS = {
    "accountId": "account_id",
    "name": "name",
    "messageType": "message_type",
    "messageContent": "message_content",
    "mediaUrl": "media_url",
    "audienceType": "audience_type",
    "audienceConfig": "audience_config",
    "scheduleType": "schedule_type",
    "scheduledAt": "scheduled_at",
    "throttleConfig": "throttle_config",
    "templateVariables": "template_variables",
    "trackLinks": "track_links",
    "allowMissingVariables": "allow_missing_variables",
    "sendWindow": "send_window",
}
# Fixed once the campaign leaves draft: its recipients and its schedule were set then.
_DRAFT_ONLY = ("audienceType", "audienceConfig", "scheduleType", "scheduledAt")
_AUDIENCE = ("audienceType", "audienceConfig")


@blueprint.post("/campaigns")
async def create_campaign() -> Response:
    body = decode(await context.body(), CampaignCreate)
    checked = check_campaign(
        account_id=str(body.accountId),
        name=body.name,
        message_type=body.messageType,
        message_content=body.messageContent,
        media_url=body.mediaUrl,
        audience_type=body.audienceType,
        audience_config=body.audienceConfig,
        schedule_type=body.scheduleType,
        scheduled_at=body.scheduledAt,
        throttle_config=throttle_json(body.throttleConfig),
        template_variables=body.templateVariables,
        track_links=body.trackLinks,
    )
    # A/B variants and test: api/schemas.check_variants.
    ab = check_variants(
        body.variants, body.abTest, checked, links_base_url=context.settings().links.base_url
    )
    settings = msgspec.structs.replace(
        _campaign_input(checked),
        allow_missing_variables=body.allowMissingVariables,
        send_window=send_window_json(body.sendWindow),
        **ab,
    )
    campaign = await context.engine().campaigns.create(context.user_id(), settings)
    return success(campaign, "Campaign created successfully", status=201)


@blueprint.get("/campaigns")
async def list_campaigns() -> Response:
    limit = params.limit()
    status = params.choice("status", lifecycle.ALL_STATUSES)
    after = params.cursor(tuple[datetime, uuid.UUID])
    page = await context.engine().campaigns.list(
        context.user_id(),
        status=status,
        after=(after[0], str(after[1])) if after else None,
        limit=limit,
    )
    return params.page(page, limit, "Campaigns retrieved successfully")


@blueprint.get("/campaigns/<campaign_id>")
async def get_campaign(campaign_id: str) -> Response:
    campaign = await context.engine().campaign(_key(campaign_id), context.user_id())
    return success(campaign, "Campaign retrieved successfully")


@blueprint.patch("/campaigns/<campaign_id>")
async def update_campaign(campaign_id: str) -> Response:
    key = _key(campaign_id)
    patch = decode(await context.body(), CampaignPatch)
    given = {
        name: value
        for name, value in msgspec.structs.asdict(patch).items()
        if value is not msgspec.UNSET
    }
    campaign = await context.engine().campaigns.update(
        context.user_id(), key, lambda current: _changes(current, given)
    )
    return success(campaign, "Campaign updated successfully")


@blueprint.delete("/campaigns/<campaign_id>")
async def delete_campaign(campaign_id: str) -> Response:
    key = _key(campaign_id)
    await context.engine().campaigns.delete(context.user_id(), key)
    return success({"id": key}, "Campaign deleted successfully")


@blueprint.post("/campaigns/<campaign_id>/start")
async def start_campaign(campaign_id: str) -> Response:
    c = await context.engine().start(_key(campaign_id), context.user_id())
    return success(
        {"id": c["id"], "status": c["status"], "scheduled_at": c["scheduled_at"]},
        "Campaign started successfully",
    )


@blueprint.post("/campaigns/<campaign_id>/pause")
async def pause_campaign(campaign_id: str) -> Response:
    c = await context.engine().pause(_key(campaign_id), context.user_id())
    return success(
        {"id": c["id"], "status": c["status"], "paused_at": c["paused_at"]},
        "Campaign paused successfully",
    )


@blueprint.post("/campaigns/<campaign_id>/resume")
async def resume_campaign(campaign_id: str) -> Response:
    c = await context.engine().resume(_key(campaign_id), context.user_id())
    return success({"id": c["id"], "status": c["status"]}, "Campaign resumed successfully")


@blueprint.post("/campaigns/<campaign_id>/cancel")
async def cancel_campaign(campaign_id: str) -> Response:
    c = await context.engine().cancel(_key(campaign_id), context.user_id())
    return success(
        {"id": c["id"], "status": c["status"], "cancelled_at": c["cancelled_at"]},
        "Campaign cancelled successfully",
    )


@blueprint.post("/campaigns/<campaign_id>/duplicate")
async def duplicate_campaign(campaign_id: str) -> Response:
    copy = await context.engine().campaigns.duplicate(context.user_id(), _key(campaign_id))
    return success(copy, "Campaign duplicated successfully", status=201)


@blueprint.post("/campaigns/<campaign_id>/retarget")
async def retarget_campaign(campaign_id: str) -> Response:
    key = _key(campaign_id)
    body = decode(await context.body(), CampaignRetarget)
    engine = context.engine()
    content = None
    if body.messageContent is not None:
        # Checked as a create or an edit checks it, for the campaign's message type.
        source = await engine.campaign(key, context.user_id())
        content = _checked_content(source, body.messageContent)
    draft = await engine.campaigns.retarget(
        context.user_id(), key, body.audience, name=body.name, message_content=content
    )
    return success(draft, "Campaign retargeted successfully", status=201)


@blueprint.post("/campaigns/<campaign_id>/preview")
async def preview_campaign(campaign_id: str) -> Response:
    key = _key(campaign_id)
    body = decode(await context.body(), CampaignPreview)
    contact_id, given = _render_for(body.contactId, body.variables)
    preview = await context.engine().campaigns.preview(
        context.user_id(), key, contact_id=contact_id, given=given
    )
    return success(preview, "Campaign preview rendered")


@blueprint.post("/campaigns/<campaign_id>/test")
async def test_campaign(campaign_id: str) -> Response:
    key = _key(campaign_id)
    body = decode(await context.body(), CampaignTestSend)
    contact_id, given = _render_for(body.contactId, body.variables)
    try:
        result = await context.engine().campaigns.send_test(
            context.user_id(), key, body.phone, contact_id=contact_id, given=given
        )
    except AccountBusy:
        raise ApiError(
            429,
            "account_busy",
            "The account's phone number has no free send turn right now (it sends at its"
            " messagesPerSecond, or WhatsApp asked it to slow down); try again shortly",
        ) from None
    if result["sent"]:
        return success(result, "Test message sent")
    error = result["error"]
    return success(
        result, f"WhatsApp did not accept the test message ({error['class']}): {error['message']}"
    )


@blueprint.get("/campaigns/<campaign_id>/recipients")
async def list_recipients(campaign_id: str) -> Response:
    key = _key(campaign_id)
    limit = params.limit()
    status = params.choice("status", RECIPIENT_STATUSES)
    after = params.cursor(RecipientCursor) or 0
    page = await context.engine().campaigns.recipients(
        context.user_id(), key, status=status, after=after, limit=limit
    )
    return params.page(page, limit, "Recipients retrieved successfully")


def _key(campaign_id: str) -> str:
    return params.resource_id(campaign_id, "Campaign")


def _render_for(
    contact_id: uuid.UUID | None, variables: dict[str, str] | None
) -> tuple[str | None, dict[str, str] | None]:
    if contact_id is not None and variables is not None:
        raise validation_error("variables", "give contactId or variables, not both")
    return (str(contact_id) if contact_id is not None else None), variables


def _checked_content(source: Mapping[str, Any], content: Any) -> Any:
    """A new messageContent for `source`, checked by the create rules and in stored form."""
    checked = check_campaign(
        account_id=source["account_id"],
        name=source["name"],
        message_type=source["message_type"],
        message_content=content,
        media_url=source["media_url"],
        audience_type="all",  # the audience is not what is checked here
        audience_config={},
        schedule_type="manual",
        scheduled_at=None,
        throttle_config=source["throttle_config"],
        template_variables=source["template_variables"],
    )
    return checked.message_content


def _campaign_input(checked: CampaignSettings) -> CampaignInput:
    return CampaignInput(
        account_id=checked.account_id,
        name=checked.name,
        message_type=checked.message_type,
        message_content=checked.message_content,
        audience_type=checked.audience_type,
        audience_config=checked.audience_config,
        schedule_type=checked.schedule_type,
        throttle_config=checked.throttle_config,
        template_variables=checked.template_variables,
        media_url=checked.media_url,
        scheduled_at=checked.scheduled_at,
        track_links=checked.track_links,
    )


def _changes(current: Mapping[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The columns a PATCH writes, checked against the campaign's status under its lock.

    Runs inside the store's transaction; raising writes nothing.
    """
    status: lifecycle.CampaignStatus = current["status"]
    lifecycle.check("edit", status)
    allowed = lifecycle.editable_fields(status)
    for name in given:
        if allowed is not None and name not in allowed:
            only = ", ".join(sorted(allowed))
            raise ApiError(
                400,
                "field_not_editable",
                f"{name}: cannot be changed while the campaign is {status}; only {only} can",
                name,
            )
        if status == "draft" and current["recipients_frozen"] and name in _AUDIENCE:
            raise ApiError(
                400,
                "field_not_editable",
                f"{name}: its recipients were frozen when it was retargeted; create a"
                " campaign to send to another audience",
                name,
            )
        if status != "draft" and name in _DRAFT_ONLY:
            raise ApiError(
                400,
                "field_not_editable",
                f"{name}: can only be changed on a draft campaign; its recipients and schedule"
                " were fixed when it left draft (duplicate it to change them)",
                name,
            )
    merged = {
        "account_id": str(given.get("accountId", current["account_id"])),
        "name": given.get("name", current["name"]),
        "message_type": given.get("messageType", current["message_type"]),
        "message_content": given.get("messageContent", current["message_content"]),
        "media_url": given.get("mediaUrl", current["media_url"]),
        "audience_type": given.get("audienceType", current["audience_type"]),
        "audience_config": given.get("audienceConfig", current["audience_config"]),
        "schedule_type": given.get("scheduleType", current["schedule_type"]),
        "scheduled_at": given.get("scheduledAt", current["scheduled_at"]),
        "throttle_config": (
            throttle_json(given["throttleConfig"])
            if "throttleConfig" in given
            else current["throttle_config"]
        ),
        "template_variables": given.get("templateVariables", current["template_variables"]),
        "track_links": given.get("trackLinks", current["track_links"]),
    }
    checked = msgspec.structs.asdict(check_campaign(**merged))
    columns = {_COLUMNS[name] for name in given}
    if columns & {"audience_type", "audience_config"}:
        columns |= {"audience_type", "audience_config"}  # checked together, written together
    if "message_type" in columns:
        columns.add("message_content")
    if "schedule_type" in columns:
        columns.add("scheduled_at")
    if "allowMissingVariables" in given:  # not a cross-field rule: written as given
        checked["allow_missing_variables"] = given["allowMissingVariables"]
    if "sendWindow" in given:
        checked["send_window"] = send_window_json(given["sendWindow"])
    return {column: checked[column] for column in sorted(columns)}
