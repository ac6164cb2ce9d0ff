-- The HTTP gateway's producers: one row per API key. The key itself is
-- `sy_<key_id as 32 hex digits>_<secret as 64 hex digits>`; only the SHA-256
-- of the secret is stored (the secret is 256 random bits, so a slow hash
-- buys nothing), and it is compared in constant time.
CREATE TABLE api_keys (
    key_id           UUID        PRIMARY KEY,
    producer         TEXT        NOT NULL,
    secret_sha256    BYTEA       NOT NULL CHECK (octet_length(secret_sha256) = 32),
    -- Event types the key may publish; '*' grants every type.
    allowed_types    TEXT[]      NOT NULL,
    -- CloudEvents `source` values it may use: exact, or a prefix ending in '*'.
    allowed_sources  TEXT[]      NOT NULL,
    -- Sustained events per second, and how many may come at once.
    rate_per_second  INTEGER     NOT NULL CHECK (rate_per_second > 0),
    burst            INTEGER     NOT NULL CHECK (burst > 0),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at       TIMESTAMPTZ
);

-- Events the gateway accepted (source, id): a re-send within the window is
-- acknowledged and not published again. The row is written in the
-- transaction that stays open while the broker confirms, so a concurrent
-- re-send waits for the outcome instead of publishing twice.
CREATE TABLE gateway_accepted_events (
    source       TEXT        NOT NULL,
    event_id     UUID        NOT NULL,
    key_id       UUID        NOT NULL,
    accepted_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);
CREATE INDEX gateway_accepted_events_accepted_at ON gateway_accepted_events (accepted_at);

-- Transactional outbox: services write their business rows and the events
-- they imply in one transaction; the relay publishes the rows in id order
-- per partition key and marks them sent. See shared::outbox.
CREATE TABLE outbox (
    id             BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partition_key  TEXT        NOT NULL,
    event_id       UUID        NOT NULL,
    event_type     TEXT        NOT NULL,
    -- The structured-mode CloudEvent, exactly as it will be published.
    event          JSONB       NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at        TIMESTAMPTZ
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_unsent_by_key ON outbox (partition_key, id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
