-- The batch cursor gets a row of its own. Every mark statement holds the campaign
-- row FOR SHARE (so a pause committed meanwhile waits for it, see
-- recipients.mark_sending); an UPDATE of that row for each batch's cursor queued
-- behind the marks, and the marks behind it.
CREATE TABLE campaign_cursors (
    campaign_id   uuid PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    batch_cursor  bigint NOT NULL
);
INSERT INTO campaign_cursors (campaign_id, batch_cursor)
    SELECT id, batch_cursor FROM campaigns WHERE batch_cursor > 0;
ALTER TABLE campaigns DROP COLUMN batch_cursor;
