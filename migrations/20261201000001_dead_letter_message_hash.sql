-- A dead letter with no event id (poison: bytes that are not an event) is
-- recognised when it arrives again — its ack lost after the commit, so the
-- broker redelivered it — by a hash of its routing key, AMQP message id and
-- body, and not stored twice. Rows stored before this have no hash (NULLs
-- never conflict), so existing duplicates stay for an operator to see.
ALTER TABLE dead_letters ADD COLUMN message_sha256 BYTEA;
CREATE UNIQUE INDEX dead_letters_group_message ON dead_letters (consumer_group, message_sha256)
    WHERE event_id IS NULL;
