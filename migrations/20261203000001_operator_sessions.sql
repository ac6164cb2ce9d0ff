-- The dashboard's logins: an operator signs in with a token once, and the
-- browser then holds only a session cookie. The cookie's value is never
-- stored, only its SHA-256; a session lasts until it expires, its operator
-- signs out, or its token is revoked (checked on every request).
-- `csrf` must accompany every request that changes anything: a page on
-- another origin cannot read it, so it cannot forge one.
CREATE TABLE operator_sessions (
    session_sha256 BYTEA       PRIMARY KEY CHECK (octet_length(session_sha256) = 32),
    token_id       UUID        NOT NULL REFERENCES operator_tokens (token_id) ON DELETE CASCADE,
    csrf           TEXT        NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);
