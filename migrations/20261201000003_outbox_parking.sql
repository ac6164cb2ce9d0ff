-- The outbox's dead-letter path. A row the broker can never take (no queue
-- is bound for its type, or it is not a valid event) is parked: kept, with
-- its reason, out of its key's way. A row that fails for a passing reason
-- (an outage, a nack, no confirm in time) waits with a growing delay and
-- holds its key's later rows back meanwhile, so their order is kept.
ALTER TABLE outbox
    ADD COLUMN attempts        INTEGER     NOT NULL DEFAULT 0,
    ADD COLUMN last_error      TEXT,
    ADD COLUMN last_attempt_at TIMESTAMPTZ,
    ADD COLUMN next_attempt_at TIMESTAMPTZ,
    ADD COLUMN parked_at       TIMESTAMPTZ,
    ADD COLUMN parked_reason   TEXT;

CREATE INDEX outbox_parked ON outbox (id) WHERE parked_at IS NOT NULL;
