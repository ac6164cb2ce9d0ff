-- Dead letters have a lifecycle: `open` (to be handled), then `replayed`
-- (sent back to their group's work queue by an operation), `resolved`
-- (handled outside Switchyard) or `purged` (given up). Rows that are no
-- longer open are kept for the configured retention, then deleted.
--
-- An event that fails again after a replay is a new open dead letter whose
-- `previous_id` is the replayed one, so the whole history stays readable.
-- Uniqueness therefore holds among open rows only, per earlier failure: a
-- redelivery of the same failure is not stored twice, a new failure is.

-- Every operator action on dead letters: who, when, which filter, how many,
-- and how it ended. A replay is one row, updated while it runs.
CREATE TABLE dead_letter_operations (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action        TEXT        NOT NULL
                  CHECK (action IN ('replay', 'edit', 'resolve', 'purge', 'expire')),
    actor         TEXT        NOT NULL,
    filter        JSONB       NOT NULL DEFAULT '{}'::jsonb,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at   TIMESTAMPTZ,
    matched       BIGINT      NOT NULL DEFAULT 0,
    affected      BIGINT      NOT NULL DEFAULT 0,
    skipped       BIGINT      NOT NULL DEFAULT 0,
    failed_again  BIGINT      NOT NULL DEFAULT 0,
    outcome       TEXT        NOT NULL DEFAULT 'running'
                  CHECK (outcome IN ('running', 'completed', 'tripped', 'cancelled', 'failed')),
    detail        TEXT
);
CREATE INDEX dead_letter_operations_started ON dead_letter_operations (started_at);

-- Ids, numbers and quoted values taken out of an error message, so that
-- one failure seen many times reads as one line.
CREATE FUNCTION dead_letter_fingerprint(message TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN
    left(
        regexp_replace(
            regexp_replace(
                regexp_replace(
                    regexp_replace(
                        regexp_replace(message, '"(\\.|[^"\\])*"|''[^'']*''|`[^`]*`', '?', 'g'),
                        '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}',
                        '<id>', 'g'),
                    '\m[0-9a-fA-F]{16,}\M', '<hex>', 'g'),
                '-?[0-9]+([.,][0-9]+)*', '#', 'g'),
            '\s+', ' ', 'g'),
        300);

ALTER TABLE dead_letters
    ADD COLUMN status            TEXT        NOT NULL DEFAULT 'open'
                                 CHECK (status IN ('open', 'replayed', 'resolved', 'purged')),
    ADD COLUMN status_changed_at TIMESTAMPTZ,
    ADD COLUMN operation_id      BIGINT REFERENCES dead_letter_operations (id) ON DELETE SET NULL,
    ADD COLUMN previous_id       BIGINT REFERENCES dead_letters (id) ON DELETE SET NULL,
    ADD COLUMN content_type      TEXT,
    ADD COLUMN message_id        TEXT,
    ADD COLUMN partition_key     TEXT,
    ADD COLUMN original_body     BYTEA,
    ADD COLUMN original_headers  JSONB,
    ADD COLUMN edited_at         TIMESTAMPTZ,
    ADD COLUMN edited_by         TEXT,
    -- The kind, then the message's fingerprint (most messages already
    -- start with their kind: it is not repeated).
    ADD COLUMN fingerprint       TEXT GENERATED ALWAYS AS (
                                     CASE WHEN starts_with(reason, error_kind || ': ')
                                          THEN dead_letter_fingerprint(reason)
                                          ELSE error_kind || ': ' || dead_letter_fingerprint(reason)
                                     END) STORED;

DROP INDEX dead_letters_group_event;
DROP INDEX dead_letters_group_message;
CREATE UNIQUE INDEX dead_letters_open_event
    ON dead_letters (consumer_group, event_id, coalesce(previous_id, 0))
    WHERE status = 'open' AND event_id IS NOT NULL;
CREATE UNIQUE INDEX dead_letters_open_message
    ON dead_letters (consumer_group, message_sha256, coalesce(previous_id, 0))
    WHERE status = 'open' AND event_id IS NULL;
CREATE INDEX dead_letters_status ON dead_letters (status, id);
CREATE INDEX dead_letters_previous ON dead_letters (previous_id) WHERE previous_id IS NOT NULL;
CREATE INDEX dead_letters_event ON dead_letters (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX dead_letters_operation ON dead_letters (operation_id) WHERE operation_id IS NOT NULL;
