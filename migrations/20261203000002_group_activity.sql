-- What each group's workers applied, for the dashboard and `consumers
-- stats`: every few seconds while it works, a worker adds a row with how
-- many events it applied since its last row, the newest one's time, and a
-- histogram of their end-to-end lag (event time to commit). Bucket i
-- holds lags of at most 2^(i/4) ms (bucket 0: at most 1 ms; the last also
-- holds everything longer), so a percentile read from the summed buckets
-- is within 19 % of the true one. A worker removes its group's rows older
-- than an hour as it adds one.
CREATE TABLE group_activity (
    consumer_group TEXT        NOT NULL,
    sampled_at     TIMESTAMPTZ NOT NULL,
    applied        BIGINT      NOT NULL CHECK (applied >= 0),
    lag_buckets    BIGINT[]    NOT NULL
);
CREATE INDEX group_activity_by_time ON group_activity (consumer_group, sampled_at);
