-- How often a recipient was deferred for 131049 (WhatsApp's per-user marketing
-- limit): it is tried again a day later, at most delivery.max_deferrals times.
ALTER TABLE campaign_recipients ADD COLUMN deferrals integer NOT NULL DEFAULT 0;
