-- The shared store's first schema: what the SQLite store holds, with CA
-- private keys sealed by the key-encryption key.
CREATE TABLE users (
    name text PRIMARY KEY,
    record text NOT NULL
);
CREATE TABLE cas (
    kind text PRIMARY KEY,
    cert_pem text NOT NULL,
    key_sealed text NOT NULL
);
CREATE TABLE audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event text NOT NULL
);
CREATE TABLE locks (
    id text PRIMARY KEY,
    username text NOT NULL,
    message text,
    created_ms bigint NOT NULL,
    expires_ms bigint
);
CREATE INDEX locks_by_user ON locks (username);
CREATE TABLE leases (
    key text PRIMARY KEY,
    holder text NOT NULL,
    expires_ms bigint NOT NULL
);
CREATE TABLE login_failures (
    key text PRIMARY KEY,
    count integer NOT NULL,
    first_ms bigint NOT NULL,
    last_ms bigint NOT NULL
);
CREATE INDEX login_failures_by_last ON login_failures (last_ms);
