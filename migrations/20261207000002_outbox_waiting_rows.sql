-- The relay leaves out, when it claims, the rows behind a row of their key
-- that waits to retry (`relay/claim.rs`): it finds those waiting rows on
-- every pass. They are few (rows that failed at least once and are not yet
-- sent or parked); this index finds them without reading the backlog.
CREATE INDEX outbox_waiting ON outbox (partition_key, id)
    WHERE sent_at IS NULL AND parked_at IS NULL AND next_attempt_at IS NOT NULL;
