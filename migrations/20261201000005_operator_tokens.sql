-- Operators' tokens for the operations API, separate from producers' API
-- keys and hashed the same way: a token reads `syop_<token id>_<secret>`;
-- only the SHA-256 of the secret is kept. `viewer` reads; `operator` may
-- also replay, edit, resolve and purge.
CREATE TABLE operator_tokens (
    token_id       UUID        PRIMARY KEY,
    name           TEXT        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role           TEXT        NOT NULL CHECK (role IN ('viewer', 'operator')),
    secret_sha256  BYTEA       NOT NULL CHECK (octet_length(secret_sha256) = 32),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at     TIMESTAMPTZ
);
