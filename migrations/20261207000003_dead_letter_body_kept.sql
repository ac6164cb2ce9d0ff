-- A body over the event limit is not stored whole: a worker keeps its first
-- 4 KiB in `body`, its size in `body_size` and the SHA-256 of the whole of
-- it in `body_sha256` (three 50 MB poison bodies grew the table by 160 MB).
-- Both are NULL when `body` is the whole body.
ALTER TABLE dead_letters
    ADD COLUMN body_size   BIGINT,
    ADD COLUMN body_sha256 BYTEA;
