"""Campaigns as users manage them: create, list, edit, delete, duplicate, and their recipients.

Every function is scoped by `owner_id`; a row of another owner is invisible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from engine.core import lifecycle, variables
from engine.core.metrics import CampaignStats
from engine.core.retarget import Audience
from engine.core.variant_content import with_variant_urls
from engine.messages import CommandKind
from engine.store import retarget, statuses, variants
from engine.store.campaign_runs import lock_for_action_in, notify_in, start_in, start_statement
from engine.store.database import Connection, Database, Record
from engine.store.errors import InvalidReference, set_clause
from engine.store.recipients import materialise_in
from engine.store.segments import _audience_size


class CampaignInput(msgspec.Struct, frozen=True):
    account_id: str
    name: str
    message_type: str
    message_content: Any
    audience_type: str
    audience_config: dict[str, Any]
    schedule_type: str
    throttle_config: dict[str, Any]
    template_variables: dict[str, str] = {}
    media_url: str | None = None
    scheduled_at: datetime | None = None
    # Tracked links (engine/core/tracked_links.py): the URLs to replace, in code order.
    track_links: bool = False
    tracked_urls: list[str] = []
    # A/B variants ({name, messageContent, weight}, checked) and the optional test
    # ({sampleShare, metric, decideAfterMinutes}); see engine/store/variants.py.
    variants: list[dict[str, Any]] = []
    ab_test: dict[str, Any] | None = None
    # Variables some recipients lack render empty instead of refusing the start.
    allow_missing_variables: bool = False
    # {start, end, timezone}: the local hours to send in (None: any time).
    send_window: dict[str, Any] | None = None


async def _create_campaign(
    conn: Connection, owner_id: str, campaign: CampaignInput, now: datetime
) -> Record:
    # "now" and "scheduled" leave draft at once; the audience is frozen then.
    if campaign.schedule_type == "manual":
        status, scheduled_at = "draft", campaign.scheduled_at
    elif campaign.schedule_type == "now":
        status, scheduled_at = "scheduled", now
    else:
        status, scheduled_at = "scheduled", campaign.scheduled_at
    row = await conn.fetchrow(
        """INSERT INTO campaigns (owner_id, account_id, name, status, message_type, message_content,
                                  media_url, audience_type, audience_config, schedule_type,
                                  scheduled_at, throttle_config, template_variables,
                                  created_at, updated_at, track_links, tracked_urls,
                                  allow_missing_variables)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16,
                   $17)
           RETURNING id""",
        owner_id,
        campaign.account_id,
        campaign.name,
        status,
        campaign.message_type,
        campaign.message_content,
        campaign.media_url,
        campaign.audience_type,
        campaign.audience_config,
        campaign.schedule_type,
        scheduled_at,
        campaign.throttle_config,
        campaign.template_variables,
        now,
        campaign.track_links,
        campaign.tracked_urls,
        campaign.allow_missing_variables,
    )
    assert row is not None
    await conn.execute("INSERT INTO campaign_counters (campaign_id) VALUES ($1)", row["id"])
    if campaign.send_window is not None:
        await conn.execute(
            "UPDATE campaigns SET send_window = $2 WHERE id = $1", row["id"], campaign.send_window
        )
    if campaign.variants:
        await conn.execute(
            "UPDATE campaigns SET variants = $2, ab_test = $3, tracked_urls = $4 WHERE id = $1",
            row["id"],
            campaign.variants,
            campaign.ab_test,
            with_variant_urls(campaign.tracked_urls, campaign.track_links, campaign.variants),
        )
    if status != "draft":
        await materialise_in(conn, row["id"])
        # Wake every daemon's supervisor: this campaign may be due now.
        await notify_in(conn, CommandKind.START, row["id"])
    created = await conn.fetchrow("SELECT * FROM campaigns WHERE id = $1", row["id"])
    assert created is not None
    return created


async def create_campaign(
    db: Database, owner_id: str, campaign: CampaignInput, *, now: datetime
) -> Record:
    """Insert a campaign; "now" and "scheduled" ones get their recipients at once."""
    return await db.transaction(_create_campaign, owner_id, campaign, now)


_CAMPAIGN_COLUMNS = frozenset(
    {
        "account_id",
        "name",
        "message_type",
        "message_content",
        "media_url",
        "audience_type",
        "audience_config",
        "schedule_type",
        "scheduled_at",
        "throttle_config",
        "template_variables",
        "track_links",
        "tracked_urls",
        "allow_missing_variables",
        "send_window",
    }
)


async def _check_references(
    conn: Connection, owner_id: str, account_id: str | None, audience: tuple[str, Any] | None
) -> None:
    if account_id is not None:
        owned = await conn.fetchval(
            "SELECT 1 FROM accounts WHERE id = $1 AND owner_id = $2", account_id, owner_id
        )
        if owned is None:
            raise InvalidReference("accountId", "accountId: no such WhatsApp account")
    if audience is not None and audience[0] == "segment":
        owned = await conn.fetchval(
            "SELECT 1 FROM segments WHERE id = $1::uuid AND owner_id = $2",
            audience[1].get("segmentId"),
            owner_id,
        )
        if owned is None:
            raise InvalidReference(
                "audienceConfig.segmentId", "audienceConfig.segmentId: no such segment"
            )


# --- variables (docs/http-api.md, "Variables") ----------------------------------------

# A change to any of these may change which variables the campaign needs.
_VARIABLE_COLUMNS = frozenset(
    {"message_type", "message_content", "template_variables", "allow_missing_variables"}
)


async def _check_variables_known(
    conn: Connection,
    owner_id: str,
    message_type: str,
    content: Any,
    defaults: Mapping[str, Any],
    field: str = "messageContent",
) -> None:
    """InvalidReference naming the first variable that is no contact field, no
    default, and no attribute of any of the owner's contacts."""
    found = variables.placeholders(message_type, content, field)
    candidates = variables.needing_a_contact(found, defaults)
    if not candidates:
        return
    # One EXISTS per name, each stopping at the first contact that has it: cheap for
    # an attribute in use, one pass over the owner's contacts for a name in none.
    unknown: list[str] = await conn.fetchval(
        """SELECT coalesce(array_agg(n.name ORDER BY n.ord), '{}')
           FROM unnest($2::text[]) WITH ORDINALITY AS n(name, ord)
           WHERE NOT EXISTS (SELECT 1 FROM contacts k
                             WHERE k.owner_id = $1 AND k.attributes ? n.name)""",
        owner_id,
        candidates,
    )
    if unknown:
        first = next(p for p in found if p.name == unknown[0])
        raise InvalidReference(
            first.field,
            f"{first.field}: unknown variable {{{{{first.name}}}}}: it is no contact field"
            f" ({', '.join(sorted(variables.STANDARD))}), no attribute of any of your"
            " contacts, and templateVariables has no default for it",
        )


def _unfilled_variables(campaign: Record | dict[str, Any]) -> list[str]:
    """The variables the message names that no default covers, in order (none when
    the campaign allows missing ones): each recipient must have them."""
    if campaign["allow_missing_variables"]:
        return []
    defaults = campaign["template_variables"] or {}
    found = variables.placeholders(campaign["message_type"], campaign["message_content"])
    for index, variant in enumerate(campaign["variants"]):
        # A/B: any recipient may get any variant (an A/B test's rest get the winner).
        field = f"variants[{index}].messageContent"
        found += variables.placeholders(campaign["message_type"], variant["messageContent"], field)
    return [name for name in variables.names(found) if name not in defaults]


def _lacking_recipients(names: str) -> str:
    """A column: how many of campaign `c`'s recipients lack each variable of the
    parameter `names` (see `_unfilled_variables`), as [[name, count], ...] in that
    order, or NULL. One pass over the recipients, every name checked per row, none
    for an empty list; an empty value counts as missing, as the renderer reads it."""
    return f"""(SELECT jsonb_agg(jsonb_build_array(l.name, l.lacking) ORDER BY l.ord) FROM (
        SELECT n.name, n.ord, count(*) AS lacking
        FROM campaign_recipients r
        CROSS JOIN LATERAL unnest({names}::text[]) WITH ORDINALITY AS n(name, ord)
        WHERE cardinality({names}::text[]) > 0 AND r.campaign_id = c.id
          AND coalesce(r.variables ->> n.name, '') = ''
        GROUP BY n.name, n.ord) l)"""


def _refuse_lacking(lacking: list[list[Any]] | None) -> None:
    """TransitionRefused `missing_variable` when some recipients lack a variable."""
    if not lacking:
        return
    described = "; ".join(
        f"{{{{{name}}}}} is missing for {count} recipient{'s' if count != 1 else ''}"
        for name, count in lacking
    )
    raise lifecycle.TransitionRefused(
        "missing_variable",
        f"{described}, and templateVariables has no default for it: add a default, fill"
        " the contacts' field or attribute, or set allowMissingVariables to true"
        " to send it empty",
    )


async def _check_recipients_have_variables(
    conn: Connection, campaign: Record | dict[str, Any]
) -> None:
    """TransitionRefused `missing_variable` when some recipients lack a variable the
    message names and no default covers it, unless the campaign allows it."""
    wanted = _unfilled_variables(campaign)
    if wanted:
        _refuse_lacking(
            await conn.fetchval(
                f"SELECT {_lacking_recipients('$2')} FROM campaigns c WHERE c.id = $1",
                campaign["id"],
                wanted,
            )
        )


async def _start_campaign(
    conn: Connection, campaign_id: str, owner_id: str, now: datetime
) -> tuple[str, CampaignDetail]:
    # Five round trips in all (begin, the row locked, the audience inserted, the
    # start answering its detail, commit): each waits its turn behind the running
    # campaigns' work on the event loop and in PostgreSQL (benchmarks/README.md).
    current = await lock_for_action_in(conn, campaign_id, owner_id, "start")
    previous: str = current["status"]
    if previous == "draft" and current["recipients_frozen"]:
        await retarget.drop_opted_out_in(conn, campaign_id)  # frozen long before its start
    row = await start_in(
        conn, current, now, statement=_START_WITH_DETAIL, extra=(_unfilled_variables(current),)
    )
    # A refused start is rolled back with its transaction, announcement included.
    _refuse_lacking(row["lacking"])
    return previous, _detail_of(row, await variants.counts_of_in(conn, row))


async def start_campaign(
    db: Database, campaign_id: str, owner_id: str, *, now: datetime
) -> tuple[str, CampaignDetail]:
    """The `start` action (engine/store/campaign_runs.py), refused with
    `missing_variable` (nothing changes) when its recipients lack a variable.
    Returns (previous status, the campaign's detail as started), in one crossing;
    NotFound, TransitionRefused."""
    return await db.transaction(_start_campaign, campaign_id, owner_id, now)


class CampaignDetail(NamedTuple):
    """What one campaign's object shows (`engine.core.campaign_view.campaign_object`)."""

    row: Record  # the campaign with its counters
    variant_counts: list[tuple[int, CampaignStats]] | None  # None without A/B variants
    pricing: dict[str, dict[str, int]]  # messages per pricing category


def _detail_of(
    row: Record, variant_counts: list[tuple[int, CampaignStats]] | None
) -> CampaignDetail:
    return CampaignDetail(row, variant_counts, statuses.pricing_counts(row["pricing"]))


async def _detail_in(
    conn: Connection, campaign_id: str, owner_id: str | None
) -> CampaignDetail | None:
    row = await conn.fetchrow(_DETAIL_OF_OWNER, campaign_id, owner_id)
    if row is None:
        return None
    return _detail_of(row, await variants.counts_of_in(conn, row))


async def campaign_detail(
    db: Database, campaign_id: str, owner_id: str | None = None
) -> CampaignDetail | None:
    """One campaign's detail, in one crossing; scoped to `owner_id` when given."""
    return await db.run(_detail_in, campaign_id, owner_id)


# Select this next to `c.*` to have everything `campaign_object` needs in one row.
COUNTER_COLUMNS = """coalesce(k.pending, 0) AS stat_pending, coalesce(k.sent, 0) AS stat_sent,
    coalesce(k.delivered, 0) AS stat_delivered, coalesce(k.read, 0) AS stat_read,
    coalesce(k.replied, 0) AS stat_replied, coalesce(k.failed, 0) AS stat_failed,
    coalesce(k.in_doubt, 0) AS stat_in_doubt, coalesce(k.clicked, 0) AS stat_clicked,
    CASE WHEN k.in_doubt > 0 THEN (
        SELECT max(r.sending_at) FROM campaign_recipients r
        WHERE r.campaign_id = c.id AND r.status = 'in_doubt'
    ) END AS in_doubt_last_sending_at,
    coalesce(d.limit_count, 0) AS deferred_limit_count, d.limit_until AS deferred_limit_until,
    coalesce(d.window_count, 0) AS deferred_window_count, d.window_until AS deferred_window_until"""

# How many pending recipients wait for the messaging limit or their send window, and
# the earliest moment one goes: one pass over the recipients_deferred index, and
# none at all for a campaign with nothing pending.
_DEFERRED = """LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE r.deferred_reason = 'messaging_limit') AS limit_count,
               min(r.not_before) FILTER (WHERE r.deferred_reason = 'messaging_limit')
                   AS limit_until,
               count(*) FILTER (WHERE r.deferred_reason = 'send_window') AS window_count,
               min(r.not_before) FILTER (WHERE r.deferred_reason = 'send_window')
                   AS window_until
        FROM campaign_recipients r
        WHERE k.pending > 0 AND r.campaign_id = c.id AND r.status = 'pending'
          AND r.deferred_reason IN ('messaging_limit', 'send_window')
    ) d ON true"""


_COUNTER_JOINS = f"LEFT JOIN campaign_counters k ON k.campaign_id = c.id {_DEFERRED}"


def _with_counters(extra_columns: str = "") -> str:
    return f"SELECT c.*, {COUNTER_COLUMNS}{extra_columns} FROM campaigns c {_COUNTER_JOINS}"


CAMPAIGN_WITH_COUNTERS = _with_counters()

_OF_OWNER = " WHERE c.id = $1 AND ($2::text IS NULL OR c.owner_id = $2)"
_CAMPAIGN_OF_OWNER = CAMPAIGN_WITH_COUNTERS + _OF_OWNER
# The same row with its pricing counts (`pricing`), for a campaign's detail.
_DETAIL_OF_OWNER = _with_counters(f", {statuses.PRICING_COUNTS} AS pricing") + _OF_OWNER
# The start (`campaign_runs.start_statement`) answering the same row, and how many
# recipients lack each variable of $5 (`lacking`, see `_lacking_recipients`).
_START_WITH_DETAIL = start_statement(
    f"c.*, {COUNTER_COLUMNS}, {statuses.PRICING_COUNTS} AS pricing,"
    f" {_lacking_recipients('$5')} AS lacking",
    _COUNTER_JOINS,
)


async def _campaign_with_counters(conn: Connection, campaign_id: Any) -> Record:
    row: Record | None = await conn.fetchrow(
        f"{CAMPAIGN_WITH_COUNTERS} WHERE c.id = $1", campaign_id
    )
    assert row is not None
    return row


async def _create_owned_campaign(
    conn: Connection, owner_id: str, campaign: CampaignInput, now: datetime
) -> Record:
    await _check_references(
        conn, owner_id, campaign.account_id, (campaign.audience_type, campaign.audience_config)
    )
    await _check_variables_known(
        conn, owner_id, campaign.message_type, campaign.message_content, campaign.template_variables
    )
    for index, variant in enumerate(campaign.variants):
        await _check_variables_known(
            conn,
            owner_id,
            campaign.message_type,
            variant["messageContent"],
            campaign.template_variables,
            f"variants[{index}].messageContent",
        )
    created = await _create_campaign(conn, owner_id, campaign, now)
    if created["recipients_frozen"]:
        await _check_recipients_have_variables(conn, created)
    return await _campaign_with_counters(conn, created["id"])


async def create_owned_campaign(
    db: Database, owner_id: str, campaign: CampaignInput, *, now: datetime
) -> Record:
    """`create_campaign`, after checking the account (and segment) are the owner's;
    returns the row with its counters (see `engine.core.campaign_view`). InvalidReference."""
    return await db.transaction(_create_owned_campaign, owner_id, campaign, now)


async def list_campaigns(
    db: Database,
    owner_id: str,
    *,
    status: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Record]:
    """Newest first, keyset by (created_at, id)."""
    return await db.fetch(
        f"""{CAMPAIGN_WITH_COUNTERS}
            WHERE c.owner_id = $1 AND ($2::text IS NULL OR c.status = $2)
              AND ($3::timestamptz IS NULL OR (c.created_at, c.id) < ($3, $4::uuid))
            ORDER BY c.created_at DESC, c.id DESC LIMIT $5""",
        owner_id,
        status,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )


async def _update_campaign(
    conn: Connection,
    owner_id: str,
    campaign_id: str,
    decide: Callable[[Record], dict[str, Any]],
) -> Record | None:
    current = await conn.fetchrow(
        "SELECT * FROM campaigns WHERE id = $1 AND owner_id = $2 FOR UPDATE", campaign_id, owner_id
    )
    if current is None:
        return None
    changes = decide(current)
    if _VARIABLE_COLUMNS & changes.keys():
        edited = {**current, **changes}
        await _check_variables_known(
            conn,
            owner_id,
            edited["message_type"],
            edited["message_content"],
            edited["template_variables"],
        )
        if current["recipients_frozen"]:
            await _check_recipients_have_variables(conn, edited)
    if changes:
        await _check_references(
            conn,
            owner_id,
            changes.get("account_id"),
            (changes["audience_type"], changes["audience_config"])
            if "audience_type" in changes and "audience_config" in changes
            else None,
        )
        await conn.execute(
            f"""UPDATE campaigns SET {set_clause(changes, _CAMPAIGN_COLUMNS, 2)}, updated_at = now()
                WHERE id = $1""",
            campaign_id,
            *changes.values(),
        )
    if "send_window" in changes:
        # Waits timed by the old window: the next run times them by the new one.
        await conn.execute(
            """UPDATE campaign_recipients SET not_before = NULL, deferred_reason = NULL
               WHERE campaign_id = $1 AND status = 'pending' AND deferred_reason = 'send_window'""",
            campaign_id,
        )
    return await _campaign_with_counters(conn, campaign_id)


async def update_campaign(
    db: Database,
    owner_id: str,
    campaign_id: str,
    decide: Callable[[Record], dict[str, Any]],
) -> Record | None:
    """Edit a campaign under its row lock. `decide(current row)` returns the column
    changes or raises (nothing is then written). None when there is no such campaign."""
    return await db.transaction(_update_campaign, owner_id, campaign_id, decide)


async def _delete_campaign(conn: Connection, owner_id: str, campaign_id: str) -> bool:
    status = await conn.fetchval(
        "SELECT status FROM campaigns WHERE id = $1 AND owner_id = $2 FOR UPDATE",
        campaign_id,
        owner_id,
    )
    if status is None:
        return False
    lifecycle.check("delete", status)
    await conn.execute("DELETE FROM campaigns WHERE id = $1", campaign_id)
    return True


async def delete_campaign(db: Database, owner_id: str, campaign_id: str) -> bool:
    """False when there is no such campaign; `lifecycle.TransitionRefused` while running."""
    return await db.transaction(_delete_campaign, owner_id, campaign_id)


async def _duplicate_campaign(
    conn: Connection, owner_id: str, campaign_id: str, now: datetime
) -> tuple[Record, int] | None:
    source = await conn.fetchrow(
        "SELECT * FROM campaigns WHERE id = $1 AND owner_id = $2", campaign_id, owner_id
    )
    if source is None:
        return None
    copy = CampaignInput(
        account_id=str(source["account_id"]),
        name=f"{source['name']} (Copy)",
        message_type=source["message_type"],
        message_content=source["message_content"],
        audience_type=source["audience_type"],
        audience_config=source["audience_config"],
        schedule_type="manual",  # a copy waits for its owner to start it
        throttle_config=source["throttle_config"],
        template_variables=source["template_variables"],
        media_url=source["media_url"],
        scheduled_at=None,
        track_links=source["track_links"],
        tracked_urls=source["tracked_urls"],
        allow_missing_variables=source["allow_missing_variables"],
        variants=source["variants"],
        ab_test=source["ab_test"],
        send_window=source["send_window"],
    )
    created = await _create_campaign(conn, owner_id, copy, now)
    if copy.audience_type == "retarget":
        # Its audience is another campaign's recipients in a state: read it again now.
        config = copy.audience_config
        size = await retarget.freeze_in(
            conn, created["id"], owner_id, config["campaignId"], config["audience"]
        )
    else:
        size = await _audience_size(conn, owner_id, copy.audience_type, copy.audience_config)
    return await _campaign_with_counters(conn, created["id"]), size


async def duplicate_campaign(
    db: Database, owner_id: str, campaign_id: str, *, now: datetime
) -> tuple[Record, int] | None:
    """A new draft with the same settings; returns it and the audience size it would
    have now. None when there is no such campaign."""
    return await db.transaction(_duplicate_campaign, owner_id, campaign_id, now)


class RetargetInput(msgspec.Struct, frozen=True):
    audience: Audience
    name: str | None = None
    message_content: Any = None  # None: the source's
    tracked_urls: list[str] | None = None  # with message_content: its tracked URLs


async def _retarget_campaign(
    conn: Connection, owner_id: str, campaign_id: str, wanted: RetargetInput, now: datetime
) -> Record | None:
    source = await conn.fetchrow(
        "SELECT * FROM campaigns WHERE id = $1 AND owner_id = $2", campaign_id, owner_id
    )
    if source is None:
        return None
    if source["status"] == "draft":
        raise lifecycle.TransitionRefused(
            "campaign_not_started",
            "Campaign has not been started: it has no recipients to retarget yet",
        )
    label = wanted.audience.replace("_", " ")
    draft = CampaignInput(
        account_id=str(source["account_id"]),
        name=wanted.name or f"{source['name']} (retarget: {label})"[-200:],
        message_type=source["message_type"],
        message_content=(
            source["message_content"] if wanted.message_content is None else wanted.message_content
        ),
        audience_type="retarget",
        audience_config={"campaignId": str(source["id"]), "audience": wanted.audience},
        schedule_type="manual",  # a draft: its owner previews, then starts it
        throttle_config=source["throttle_config"],
        template_variables=source["template_variables"],
        media_url=source["media_url"],
        track_links=source["track_links"],
        tracked_urls=(
            source["tracked_urls"] if wanted.tracked_urls is None else wanted.tracked_urls
        ),
        allow_missing_variables=source["allow_missing_variables"],
        send_window=source["send_window"],  # the same quiet hours for the same people
    )
    await _check_variables_known(
        conn, owner_id, draft.message_type, draft.message_content, draft.template_variables
    )
    created = await _create_campaign(conn, owner_id, draft, now)
    await retarget.freeze_in(conn, created["id"], owner_id, campaign_id, wanted.audience)
    return await _campaign_with_counters(conn, created["id"])


async def retarget_campaign(
    db: Database, owner_id: str, campaign_id: str, wanted: RetargetInput, *, now: datetime
) -> Record | None:
    """A new draft whose recipients are the campaign's in `wanted.audience`, frozen in
    the same transaction (engine/store/retarget.py). None when there is no such
    campaign; TransitionRefused `campaign_not_started` for a draft; InvalidReference
    for an unknown variable in the new message."""
    return await db.transaction(_retarget_campaign, owner_id, campaign_id, wanted, now)


async def message_context(db: Database, owner_id: str, campaign_id: str) -> Record | None:
    """What a preview or a test send needs: the campaign's message and its account."""
    return await db.fetchrow(
        """SELECT c.id, c.message_type, c.message_content, c.media_url, c.template_variables,
                  c.allow_missing_variables, a.status AS account_status, a.api_url,
                  a.phone_number_id, a.access_token, a.messages_per_second,
                  a.id AS account_id
           FROM campaigns c JOIN accounts a ON a.id = c.account_id
           WHERE c.id = $1 AND c.owner_id = $2""",
        campaign_id,
        owner_id,
    )


async def _list_recipients(
    conn: Connection, owner_id: str, campaign_id: str, status: str | None, after: int, limit: int
) -> list[Record] | None:
    owned = await conn.fetchval(
        "SELECT 1 FROM campaigns WHERE id = $1 AND owner_id = $2", campaign_id, owner_id
    )
    if owned is None:
        return None
    rows: list[Record] = await conn.fetch(
        """SELECT * FROM campaign_recipients
           WHERE campaign_id = $1 AND ($2::text IS NULL OR status = $2) AND id > $3
           ORDER BY id LIMIT $4""",
        campaign_id,
        status,
        after,
        limit,
    )
    return rows


async def list_recipients(
    db: Database, owner_id: str, campaign_id: str, *, status: str | None, after: int, limit: int
) -> list[Record] | None:
    """A campaign's recipients in id order; None when there is no such campaign."""
    return await db.run(_list_recipients, owner_id, campaign_id, status, after, limit)


async def campaign_row(
    db: Database, campaign_id: str, owner_id: str | None = None
) -> Record | None:
    """One campaign with its counters (`campaign_view.campaign_object` builds the
    object); scoped to `owner_id` when given."""
    return await db.fetchrow(_CAMPAIGN_OF_OWNER, campaign_id, owner_id)


async def campaign_rows(db: Database, campaign_ids: Sequence[str]) -> list[Record]:
    """Several campaigns with their counters, in one statement."""
    return await db.fetch(
        f"{CAMPAIGN_WITH_COUNTERS} WHERE c.id = ANY($1::uuid[])", list(campaign_ids)
    )
