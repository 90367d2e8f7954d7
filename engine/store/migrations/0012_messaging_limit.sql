-- WhatsApp's messaging limit (docs/delivery-guarantees.md): a business portfolio
-- reaches at most N unique users per moving 24 hours, shared by all its numbers.
-- Accounts of one owner with the same portfolio_id share the smallest limit set
-- among them; an account without portfolio_id is a portfolio of its own.
ALTER TABLE accounts ADD COLUMN portfolio_id text;
ALTER TABLE accounts ADD COLUMN messaging_limit integer CHECK (messaging_limit > 0);
-- Serves: the portfolio's limit, read at each reservation.
CREATE INDEX accounts_portfolio ON accounts (owner_id, portfolio_id) WHERE portfolio_id IS NOT NULL;

-- One row per user a limited portfolio reached in the last 24 hours (its latest
-- reach); older rows are pruned by each reservation of the portfolio.
CREATE TABLE portfolio_reach (
    portfolio   text NOT NULL,  -- portfolio_of(account).key
    phone       text NOT NULL,
    reached_at  timestamptz NOT NULL,
    PRIMARY KEY (portfolio, phone)
);
-- Serves: pruning, and when the window's oldest reach expires (the ETA).
CREATE INDEX portfolio_reach_window ON portfolio_reach (portfolio, reached_at);

-- Why a pending recipient waits for its not_before: 'messaging_limit' or
-- 'send_window' (NULL: a requeue, a 131049 deferral, or not waiting at all).
-- mark_sending clears it. No CHECK: adding one would scan the table.
ALTER TABLE campaign_recipients ADD COLUMN deferred_reason text;
-- Serves: the campaign object's deferral fields (only rows waiting for a reason).
CREATE INDEX recipients_deferred ON campaign_recipients (campaign_id, deferred_reason, not_before)
    WHERE status = 'pending' AND deferred_reason IS NOT NULL;

-- An account's portfolio: its key (scoped by owner: portfolio ids are the
-- tenant's word) and its limit (NULL: unlimited).
CREATE FUNCTION portfolio_of(p_account uuid)
RETURNS TABLE (key text, messaging_limit integer) LANGUAGE sql STABLE AS $$
    SELECT a.owner_id || coalesce(':portfolio:' || a.portfolio_id, ':account:' || a.id::text),
           CASE WHEN a.portfolio_id IS NULL THEN a.messaging_limit
                ELSE (SELECT min(b.messaging_limit) FROM accounts b
                      WHERE b.owner_id = a.owner_id AND b.portfolio_id = a.portfolio_id) END
    FROM accounts a WHERE a.id = p_account
$$;

-- Reserve the portfolio's reach for a batch of recipients (ids and phones in
-- send order) at p_now, in one statement: phones reached in the window pass
-- (their reach is renewed); new phones pass while the window holds fewer than
-- the limit; the others wait `pending` until the window's oldest reach expires
-- (their not_before, reason 'messaging_limit'). Returns the deferred ids and
-- that moment; nothing for an unlimited portfolio. Reservations of one
-- portfolio are serialised by a transaction-level advisory lock, across
-- campaigns and daemons.
CREATE FUNCTION reserve_reach(p_account uuid, p_ids bigint[], p_phones text[], p_now timestamptz)
RETURNS TABLE (id bigint, deferred_until timestamptz) LANGUAGE plpgsql AS $$
DECLARE
    v_key text;
    v_limit integer;
    v_room integer;
    v_until timestamptz;
BEGIN
    SELECT p.key, p.messaging_limit INTO v_key, v_limit FROM portfolio_of(p_account) p;
    IF v_limit IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('portfolio_reach:' || v_key, 0));
    DELETE FROM portfolio_reach r
     WHERE r.portfolio = v_key AND r.reached_at <= p_now - interval '24 hours';
    UPDATE portfolio_reach r SET reached_at = greatest(r.reached_at, p_now)
     WHERE r.portfolio = v_key AND r.phone = ANY(p_phones);
    SELECT v_limit - count(*) INTO v_room FROM portfolio_reach r WHERE r.portfolio = v_key;
    INSERT INTO portfolio_reach (portfolio, phone, reached_at)
    SELECT v_key, w.phone, p_now
      FROM unnest(p_phones) WITH ORDINALITY AS w(phone, ord)
     WHERE NOT EXISTS (SELECT 1 FROM portfolio_reach r
                        WHERE r.portfolio = v_key AND r.phone = w.phone)
     ORDER BY w.ord
     LIMIT greatest(v_room, 0)
    ON CONFLICT DO NOTHING;
    SELECT min(r.reached_at) + interval '24 hours' INTO v_until
      FROM portfolio_reach r WHERE r.portfolio = v_key;
    RETURN QUERY
    UPDATE campaign_recipients x SET not_before = v_until, deferred_reason = 'messaging_limit'
      FROM unnest(p_ids, p_phones) AS w(id, phone)
     WHERE x.id = w.id AND x.status = 'pending'
       AND NOT EXISTS (SELECT 1 FROM portfolio_reach r
                        WHERE r.portfolio = v_key AND r.phone = w.phone)
    RETURNING x.id, v_until;
END
$$;
