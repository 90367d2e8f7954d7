-- A/B variants (engine/core/ab_split.py, engine/core/ab_winner.py). `variants` holds
-- each variant as checked when the campaign was stored: {name, messageContent, weight};
-- empty for a campaign with one message. A recipient's `variant` is its index, set
-- when the recipients are frozen (NULL: the campaign has no variants, or the
-- recipient is outside an A/B test's sample and waits for the winner).
ALTER TABLE campaigns ADD COLUMN variants jsonb NOT NULL DEFAULT '[]';
-- The sample-then-winner test: {sampleShare, metric, decideAfterMinutes}, or NULL.
ALTER TABLE campaigns ADD COLUMN ab_test jsonb;
-- Its progress: how many recipients the sample has (set with the recipients), when
-- the winner is due (set once the sample is sent), and the winner, stored with the
-- decision so a restarted daemon never decides again.
ALTER TABLE campaigns ADD COLUMN ab_sample_size integer;
ALTER TABLE campaigns ADD COLUMN ab_decide_at timestamptz;
ALTER TABLE campaigns ADD COLUMN ab_winner smallint;
ALTER TABLE campaigns ADD COLUMN ab_decided_at timestamptz;
ALTER TABLE campaigns ADD COLUMN ab_values jsonb;  -- each variant's metric at the decision
ALTER TABLE campaign_recipients ADD COLUMN variant smallint;
