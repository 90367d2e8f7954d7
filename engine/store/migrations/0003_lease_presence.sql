-- Daemon presence: a dead daemon's campaigns are taken over within seconds of its
-- database session ending, not only when its lease expires (engine/store/leases.py).
-- Lease times themselves are PostgreSQL's (now()), never a daemon's clock.

CREATE TABLE daemon_presence (
    instance_id    text PRIMARY KEY,      -- the daemon, as in campaign_leases.owner
    -- Its dedicated session (the one that LISTENs); with backend_start it names
    -- that session even if the server reuses the pid later.
    backend_pid    integer NOT NULL,
    backend_start  timestamptz NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    -- When a claimer first saw that session gone; cleared when the daemon registers again.
    missing_since  timestamptz
);

-- Account changes reach every daemon at once: the budgets read each phone number's
-- messagesPerSecond from a cache that this NOTIFY invalidates
-- (engine/store/account_rates.py). Payload: the phone number id.
CREATE FUNCTION accounts_notify_rate_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('campaign_engine_accounts', NEW.phone_number_id);
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.phone_number_id <> NEW.phone_number_id) THEN
        PERFORM pg_notify('campaign_engine_accounts', OLD.phone_number_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER accounts_rate_change AFTER INSERT OR DELETE OR UPDATE OF messages_per_second, phone_number_id
    ON accounts FOR EACH ROW EXECUTE FUNCTION accounts_notify_rate_change();
