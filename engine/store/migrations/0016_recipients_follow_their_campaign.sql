-- A campaign's recipients are inserted only by statements that read its row, locked
-- for update in the same transaction (engine/store/recipients.py `_MATERIALISE`,
-- engine/store/retarget.py `freeze_in`), so the campaign exists and cannot go away
-- meanwhile. The foreign key's check of every inserted row, a locking read of the
-- campaign per recipient, guarded nothing more and cost half of a start's insert
-- (2.8 of 5.9 ms for 200 recipients; seconds for a million: benchmarks/README.md).
-- Deleting a campaign still deletes its recipients, by this trigger instead.
ALTER TABLE campaign_recipients DROP CONSTRAINT campaign_recipients_campaign_id_fkey;

CREATE FUNCTION campaigns_delete_their_recipients() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM campaign_recipients r USING deleted d WHERE r.campaign_id = d.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER campaigns_delete_recipients AFTER DELETE ON campaigns
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION campaigns_delete_their_recipients();
