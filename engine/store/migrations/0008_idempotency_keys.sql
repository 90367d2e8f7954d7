-- Idempotency keys of POST requests under /api/v1 (docs/http-api.md, "Idempotency").
-- One row per (owner, key): claimed (status NULL) before the handler runs, then
-- holding the answer to replay. Rows older than 24 hours are ignored and purged a
-- few at a time by later claims (engine/store/idempotency.py).
CREATE TABLE idempotency_keys (
    owner_id      text NOT NULL,
    key           text NOT NULL,
    -- sha256 of method, path and body: a repeat must be the same request.
    fingerprint   bytea NOT NULL,
    -- Who holds an unfinished claim: only that request may finish or release it.
    claim_token   uuid NOT NULL,
    status        smallint,
    content_type  text,
    body          bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
