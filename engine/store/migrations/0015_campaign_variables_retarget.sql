-- Variables (docs/http-api.md, "Variables"): a campaign may send with variables some
-- recipients lack (they render empty) only when it says so.
ALTER TABLE campaigns ADD COLUMN allow_missing_variables boolean NOT NULL DEFAULT false;

-- Retarget (docs/http-api.md, "Retarget"): a draft whose recipients were frozen at
-- creation from another campaign's recipients in one state; audience_config is
-- {campaignId, audience}.
ALTER TABLE campaigns DROP CONSTRAINT campaigns_audience_type_check;
ALTER TABLE campaigns ADD CONSTRAINT campaigns_audience_type_check
    CHECK (audience_type IN ('all', 'segment', 'tags', 'contacts', 'retarget'));
