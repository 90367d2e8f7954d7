-- Tracked links (engine/core/tracked_links.py): a campaign may replace the URLs of its
-- text by short links; `tracked_urls` are the originals, in the order the codes
-- number them. A click sets the recipient's `clicked_at` once, counted in `clicked`.
ALTER TABLE campaigns ADD COLUMN track_links boolean NOT NULL DEFAULT false;
ALTER TABLE campaigns ADD COLUMN tracked_urls jsonb NOT NULL DEFAULT '[]';
ALTER TABLE campaign_recipients ADD COLUMN clicked_at timestamptz;
ALTER TABLE campaign_counters ADD COLUMN clicked bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION recipients_counters_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE campaign_counters c SET
        pending   = c.pending   + d.pending,
        sent      = c.sent      + d.sent,
        delivered = c.delivered + d.delivered,
        read      = c.read      + d.read,
        replied   = c.replied   + d.replied,
        failed    = c.failed    + d.failed,
        in_doubt  = c.in_doubt  + d.in_doubt,
        clicked   = c.clicked   + d.clicked
    FROM (
        SELECT campaign_id,
               count(*) FILTER (WHERE status IN ('pending', 'sending')) AS pending,
               count(sent_at) AS sent, count(delivered_at) AS delivered,
               count(read_at) AS read, count(replied_at) AS replied,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'in_doubt') AS in_doubt,
               count(clicked_at) AS clicked
        FROM new_rows GROUP BY campaign_id
    ) d
    WHERE c.campaign_id = d.campaign_id;
    RETURN NULL;
END
$$;

-- As 0006 (lock only the counter rows that change, in campaign order), with `clicked`.
CREATE OR REPLACE FUNCTION recipients_counters_on_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH d AS (
        SELECT n.campaign_id,
               sum((n.status IN ('pending', 'sending'))::int - (o.status IN ('pending', 'sending'))::int) AS pending,
               sum((n.sent_at IS NOT NULL)::int - (o.sent_at IS NOT NULL)::int) AS sent,
               sum((n.delivered_at IS NOT NULL)::int - (o.delivered_at IS NOT NULL)::int) AS delivered,
               sum((n.read_at IS NOT NULL)::int - (o.read_at IS NOT NULL)::int) AS read,
               sum((n.replied_at IS NOT NULL)::int - (o.replied_at IS NOT NULL)::int) AS replied,
               sum((n.status = 'failed')::int - (o.status = 'failed')::int) AS failed,
               sum((n.status = 'in_doubt')::int - (o.status = 'in_doubt')::int) AS in_doubt,
               sum((n.clicked_at IS NOT NULL)::int - (o.clicked_at IS NOT NULL)::int) AS clicked
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        GROUP BY n.campaign_id
    ), changed AS (
        SELECT * FROM d
        WHERE (d.pending, d.sent, d.delivered, d.read, d.replied, d.failed, d.in_doubt, d.clicked)
              <> (0, 0, 0, 0, 0, 0, 0, 0)
    ), locked AS (
        SELECT c.campaign_id FROM campaign_counters c
        WHERE c.campaign_id IN (SELECT campaign_id FROM changed)
        ORDER BY c.campaign_id FOR UPDATE
    )
    UPDATE campaign_counters c SET
        pending   = c.pending   + d.pending,
        sent      = c.sent      + d.sent,
        delivered = c.delivered + d.delivered,
        read      = c.read      + d.read,
        replied   = c.replied   + d.replied,
        failed    = c.failed    + d.failed,
        in_doubt  = c.in_doubt  + d.in_doubt,
        clicked   = c.clicked   + d.clicked
    FROM changed d JOIN locked l ON l.campaign_id = d.campaign_id
    WHERE c.campaign_id = d.campaign_id;
    RETURN NULL;
END
$$;
