-- The key of the references the engine puts in biz_opaque_callback_data
-- (engine/core/callback_reference.py). One per database, random, never shown: two
-- deployments on one Meta app then never accept each other's references, and
-- nobody can forge one for a recipient id they guessed.
CREATE TABLE callback_reference_key (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    key       text NOT NULL CHECK (key ~ '^[0-9a-f]{64}$')
);
-- gen_random_uuid() gives 122 random bits; two of them hashed make a 256-bit key.
INSERT INTO callback_reference_key (key)
VALUES (encode(sha256((gen_random_uuid()::text || gen_random_uuid()::text)::bytea), 'hex'));
