-- Exactly-once effects: each consumer group records the ids of the events it
-- has applied, in the same transaction as their effects.
CREATE TABLE processed_events (
    consumer_group TEXT        NOT NULL,
    event_id       UUID        NOT NULL,
    event_type     TEXT        NOT NULL,
    processed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);

-- Events a group gave up on: the full original message and every attempt.
CREATE TABLE dead_letters (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_group   TEXT        NOT NULL,
    event_id         UUID,
    event_type       TEXT,
    routing_key      TEXT        NOT NULL,
    body             BYTEA       NOT NULL,
    headers          JSONB       NOT NULL DEFAULT '{}'::jsonb,
    reason           TEXT        NOT NULL,
    error_kind       TEXT        NOT NULL,
    attempts         INTEGER     NOT NULL,
    attempt_log      JSONB       NOT NULL DEFAULT '[]'::jsonb,
    first_failed_at  TIMESTAMPTZ NOT NULL,
    last_failed_at   TIMESTAMPTZ NOT NULL,
    recorded_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One dead letter per (group, event): a redelivered dead letter is not stored twice.
CREATE UNIQUE INDEX dead_letters_group_event ON dead_letters (consumer_group, event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX dead_letters_recorded_at ON dead_letters (recorded_at);
