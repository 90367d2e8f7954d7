-- Signals by webhook (docs/webhooks.md): template, quality and account updates.
--
-- Template and account webhooks name the WhatsApp Business Account (WABA) in
-- `entry[].id`, not the phone number: an account may say which WABA it belongs to.
ALTER TABLE accounts ADD COLUMN business_account_id text;
-- Serves: the accounts a signal names (engine/store/account_events.py).
CREATE INDEX accounts_business_account_id ON accounts (business_account_id)
    WHERE business_account_id IS NOT NULL;

-- Who paused a campaign for a signal, and for which: `template:<name>:<language>`
-- or `account:<event>`. NULL when the user (or anything else) paused it, so an
-- APPROVED template resumes only the campaigns the engine paused for it.
ALTER TABLE campaigns ADD COLUMN paused_by_signal text;
-- Serves: APPROVED finding the campaigns paused for its template.
CREATE INDEX campaigns_paused_by_signal ON campaigns (paused_by_signal)
    WHERE paused_by_signal IS NOT NULL;
-- Any way out of `paused` (the user's resume, a cancel) forgets the mark, so a
-- campaign the user pauses later is never resumed by a signal.
CREATE FUNCTION campaigns_forget_signal_pause() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.paused_by_signal := NULL;
    RETURN NEW;
END
$$;
CREATE TRIGGER campaigns_forget_signal_pause BEFORE UPDATE OF status ON campaigns
    FOR EACH ROW WHEN (NEW.status <> 'paused' AND NEW.paused_by_signal IS NOT NULL)
    EXECUTE FUNCTION campaigns_forget_signal_pause();

-- The account event log: one row per signal and account it concerns.
CREATE TABLE account_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind        text NOT NULL,  -- the webhook's `field`, e.g. message_template_status_update
    event       text,  -- its `event`, e.g. PAUSED, FLAGGED, ACCOUNT_RESTRICTION
    content     jsonb NOT NULL,  -- the change's `value` as WhatsApp sent it
    -- What the engine did: the campaigns it paused or resumed.
    paused_campaigns  uuid[] NOT NULL DEFAULT '{}',
    resumed_campaigns uuid[] NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL
);
-- Serves: GET /accounts/:id/events (newest first, keyset-paginated by id).
CREATE INDEX account_events_account_id ON account_events (account_id, id DESC);

-- The `pricing` object of status webhooks, per recipient (the latest one seen).
ALTER TABLE campaign_recipients ADD COLUMN pricing_category text;
ALTER TABLE campaign_recipients ADD COLUMN pricing_billable boolean;
ALTER TABLE campaign_recipients ADD COLUMN pricing_model text;
ALTER TABLE campaign_recipients ADD COLUMN pricing_type text;
