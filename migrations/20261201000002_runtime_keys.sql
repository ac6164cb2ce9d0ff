-- Keys the runtime keeps for itself, made once per database so that every
-- worker process sharing it shares them. `attempt_history` signs the
-- attempt headers the workers write on retries: a producer cannot forge
-- them (skip retries, or fake a history) without it.
CREATE TABLE IF NOT EXISTS runtime_keys (
    name text PRIMARY KEY,
    key bytea NOT NULL CHECK (length(key) = 32)
);

-- gen_random_uuid() is built in from PostgreSQL 13; two of them give 244
-- random bits.
INSERT INTO runtime_keys (name, key)
VALUES (
    'attempt_history',
    decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')
)
ON CONFLICT (name) DO NOTHING;
