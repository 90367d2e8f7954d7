-- Counter maintenance locks only the counter rows a statement changes. Marking
-- recipients `sending` (pending → sending) changes no count, so it no longer waits
-- for the outcome writer or the webhook applier holding a campaign's counters.
-- Rows are still locked in campaign order: batches touching several campaigns wait
-- for each other instead of deadlocking.
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
               sum((n.status = 'in_doubt')::int - (o.status = 'in_doubt')::int) AS in_doubt
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        GROUP BY n.campaign_id
    ), changed AS (
        SELECT * FROM d
        WHERE (d.pending, d.sent, d.delivered, d.read, d.replied, d.failed, d.in_doubt)
              <> (0, 0, 0, 0, 0, 0, 0)
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
        in_doubt  = c.in_doubt  + d.in_doubt
    FROM changed d JOIN locked l ON l.campaign_id = d.campaign_id
    WHERE c.campaign_id = d.campaign_id;
    RETURN NULL;
END
$$;
