-- How often a recipient was requeued for 131056 (pair rate limit): requeues are
-- capped (sender.max_requeues), so one number that keeps refusing cannot keep a
-- campaign running forever. A constant default adds the column without a rewrite.
ALTER TABLE campaign_recipients ADD COLUMN requeues integer NOT NULL DEFAULT 0;
