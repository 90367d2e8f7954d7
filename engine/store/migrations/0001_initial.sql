-- Initial schema. Every resource carries owner_id (the JWT `sub` of its creator);
-- every query the API makes is scoped by it.

CREATE TABLE accounts (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id            text NOT NULL,
    name                text NOT NULL,
    phone_number_id     text NOT NULL,
    access_token        text NOT NULL,
    api_url             text,  -- NULL: the daemon's configured WHATSAPP_API_URL
    status              text NOT NULL DEFAULT 'connected'
                        CHECK (status IN ('connected', 'disconnected')),
    messages_per_second integer NOT NULL DEFAULT 80 CHECK (messages_per_second > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- Serves: GET /accounts (owner's list, keyset-paginated by id).
CREATE INDEX accounts_owner_id ON accounts (owner_id, id);

CREATE TABLE contacts (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    text NOT NULL,
    phone       text NOT NULL,
    first_name  text,
    last_name   text,
    email       text,
    company     text,
    tags        text[] NOT NULL DEFAULT '{}',
    attributes  jsonb NOT NULL DEFAULT '{}',
    opted_out   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Serves: upsert by phone (POST /contacts) and audience "all" (owner's contacts).
    UNIQUE (owner_id, phone)
);
-- Serves: GET /contacts (keyset pagination by id).
CREATE INDEX contacts_owner_id ON contacts (owner_id, id);
-- Serves: audience "tags" and segments with tag filters (tags && $tags).
CREATE INDEX contacts_tags ON contacts USING gin (tags);

CREATE TABLE segments (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    text NOT NULL,
    name        text NOT NULL,
    filter      jsonb NOT NULL,  -- {"tags": [...], "contactIds": [...]}
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Serves: GET /segments.
CREATE INDEX segments_owner_id ON segments (owner_id, id);

CREATE TABLE campaigns (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id            text NOT NULL,
    account_id          uuid NOT NULL REFERENCES accounts (id),
    name                text NOT NULL,
    status              text NOT NULL DEFAULT 'draft' CHECK (status IN
                        ('draft', 'scheduled', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    message_type        text NOT NULL CHECK (message_type IN ('text', 'template', 'image', 'document')),
    message_content     jsonb NOT NULL,  -- a string for text/image/document, an object for template
    media_url           text,
    audience_type       text NOT NULL CHECK (audience_type IN ('all', 'segment', 'tags', 'contacts')),
    audience_config     jsonb NOT NULL DEFAULT '{}',
    schedule_type       text NOT NULL CHECK (schedule_type IN ('now', 'scheduled', 'manual')),
    scheduled_at        timestamptz,
    started_at          timestamptz,
    paused_at           timestamptz,
    pause_reason        text,
    completed_at        timestamptz,
    cancelled_at        timestamptz,
    failed_at           timestamptz,
    throttle_config     jsonb NOT NULL,
    template_variables  jsonb NOT NULL DEFAULT '{}',
    total_recipients    integer NOT NULL DEFAULT 0,
    recipients_frozen   boolean NOT NULL DEFAULT false,
    -- Highest recipient id the campaign has read; resume continues after it.
    batch_cursor        bigint NOT NULL DEFAULT 0,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- Serves: the supervisor's "next due campaign" query.
CREATE INDEX campaigns_due ON campaigns (scheduled_at) WHERE status = 'scheduled';
-- Serves: start-up recovery of campaigns left running by a dead daemon.
CREATE INDEX campaigns_running ON campaigns (id) WHERE status = 'running';
-- Serves: GET /campaigns (owner's list, newest first, keyset by (created_at, id)).
CREATE INDEX campaigns_owner_created ON campaigns (owner_id, created_at DESC, id DESC);

-- Exact per-campaign counts, maintained by the statement-level triggers below, so
-- stats and progress never need to count a million recipient rows.
CREATE TABLE campaign_counters (
    campaign_id  uuid PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    pending      bigint NOT NULL DEFAULT 0,  -- pending and sending
    sent         bigint NOT NULL DEFAULT 0,  -- accepted by the API (cumulative)
    delivered    bigint NOT NULL DEFAULT 0,
    read         bigint NOT NULL DEFAULT 0,
    replied      bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    in_doubt     bigint NOT NULL DEFAULT 0
);

CREATE TABLE campaign_recipients (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id          uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id           uuid,  -- no foreign key: the recipient is a frozen snapshot
    phone                text NOT NULL,
    variables            jsonb NOT NULL,  -- everything rendering needs, frozen at materialisation
    status               text NOT NULL DEFAULT 'pending' CHECK (status IN
                         ('pending', 'sending', 'sent', 'delivered', 'read', 'failed', 'in_doubt')),
    attempts             integer NOT NULL DEFAULT 0,
    error_code           text,
    error_message        text,
    provider_message_id  text,
    not_before           timestamptz,  -- a requeued recipient (131056) waits until then
    sending_at           timestamptz,
    sent_at              timestamptz,
    delivered_at         timestamptz,
    read_at              timestamptz,
    replied_at           timestamptz,
    failed_at            timestamptz,
    UNIQUE (campaign_id, phone)
);
-- Serves: claim_batch (next pending recipients after the cursor, in id order).
CREATE INDEX recipients_pending ON campaign_recipients (campaign_id, id) WHERE status = 'pending';
-- Serves: recovery of a dead owner's `sending` rows and the in-doubt timeout.
CREATE INDEX recipients_unresolved ON campaign_recipients (campaign_id, sending_at)
    WHERE status IN ('sending', 'in_doubt');
-- Serves: status webhooks, which name the message by its wamid.
CREATE INDEX recipients_provider_message_id ON campaign_recipients (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
-- Serves: GET /campaigns/:id/recipients?status= (keyset by id).
CREATE INDEX recipients_campaign_status ON campaign_recipients (campaign_id, status, id);

CREATE TABLE campaign_leases (
    campaign_id  uuid PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    owner        text NOT NULL,  -- the daemon's instance id
    expires_at   timestamptz NOT NULL
);
-- Serves: finding campaigns whose owner died (lease expired).
CREATE INDEX campaign_leases_expires ON campaign_leases (expires_at);

-- Counter maintenance: statement-level triggers over transition tables, so a batch
-- of 10,000 outcomes adjusts each campaign's counters once, not 10,000 times.
CREATE FUNCTION recipients_counters_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE campaign_counters c SET
        pending   = c.pending   + d.pending,
        sent      = c.sent      + d.sent,
        delivered = c.delivered + d.delivered,
        read      = c.read      + d.read,
        replied   = c.replied   + d.replied,
        failed    = c.failed    + d.failed,
        in_doubt  = c.in_doubt  + d.in_doubt
    FROM (
        SELECT campaign_id,
               count(*) FILTER (WHERE status IN ('pending', 'sending')) AS pending,
               count(sent_at) AS sent, count(delivered_at) AS delivered,
               count(read_at) AS read, count(replied_at) AS replied,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'in_doubt') AS in_doubt
        FROM new_rows GROUP BY campaign_id
    ) d
    WHERE c.campaign_id = d.campaign_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION recipients_counters_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Lock counter rows in a fixed order: two batches that touch several campaigns
    -- (webhooks do) then wait for each other instead of deadlocking.
    PERFORM 1 FROM campaign_counters
     WHERE campaign_id IN (SELECT campaign_id FROM new_rows)
     ORDER BY campaign_id FOR UPDATE;
    UPDATE campaign_counters c SET
        pending   = c.pending   + d.pending,
        sent      = c.sent      + d.sent,
        delivered = c.delivered + d.delivered,
        read      = c.read      + d.read,
        replied   = c.replied   + d.replied,
        failed    = c.failed    + d.failed,
        in_doubt  = c.in_doubt  + d.in_doubt
    FROM (
        SELECT n.campaign_id,
               sum((n.status IN ('pending', 'sending'))::int - (o.status IN ('pending', 'sending'))::int) AS pending,
               sum((n.sent_at IS NOT NULL)::int - (o.sent_at IS NOT NULL)::int) AS sent,
               sum((n.delivered_at IS NOT NULL)::int - (o.delivered_at IS NOT NULL)::int) AS delivered,
               sum((n.read_at IS NOT NULL)::int - (o.read_at IS NOT NULL)::int) AS read,
               sum((n.replied_at IS NOT NULL)::int - (o.replied_at IS NOT NULL)::int) AS replied,
               sum((n.status = 'failed')::int - (o.status = 'failed')::int) AS failed,
               sum((n.status = 'in_doubt')::int - (o.status = 'in_doubt')::int) AS in_doubt
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        GROUP BY n.campaign_id
    ) d
    WHERE c.campaign_id = d.campaign_id
      AND (d.pending, d.sent, d.delivered, d.read, d.replied, d.failed, d.in_doubt)
          <> (0, 0, 0, 0, 0, 0, 0);
    RETURN NULL;
END
$$;

CREATE TRIGGER recipients_counters_insert AFTER INSERT ON campaign_recipients
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recipients_counters_on_insert();
CREATE TRIGGER recipients_counters_update AFTER UPDATE ON campaign_recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION recipients_counters_on_update();
