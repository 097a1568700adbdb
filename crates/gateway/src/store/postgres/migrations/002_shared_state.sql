-- What replicas hand over to each other: cancel keys, used one-time-code
-- steps, single sign-on logins in progress; and the audit's own time, for
-- `audit ls --since` and retention.
ALTER TABLE audit ADD COLUMN time_ms bigint;
UPDATE audit SET time_ms = coalesce((event::jsonb ->> 'time_ms')::bigint, 0);
ALTER TABLE audit ALTER COLUMN time_ms SET NOT NULL;
CREATE INDEX audit_by_time ON audit (time_ms, id);

-- A live session's cancel key: the client's key (real pid, the gateway's
-- secret), whose it is, the replica serving it, and the real key behind it.
CREATE TABLE cancel_keys (
    pid integer NOT NULL,
    secret integer NOT NULL,
    owner text NOT NULL,
    replica text NOT NULL,
    database text NOT NULL,
    upstream_addr text NOT NULL,
    real_pid integer NOT NULL,
    real_secret integer NOT NULL,
    created_ms bigint NOT NULL,
    PRIMARY KEY (pid, secret)
);
CREATE INDEX cancel_keys_by_replica ON cancel_keys (replica);

-- The last one-time-code step each user used.
CREATE TABLE totp_steps (
    username text PRIMARY KEY,
    step bigint NOT NULL
);

CREATE TABLE sso_logins (
    id text PRIMARY KEY,
    state text UNIQUE,
    source text NOT NULL,
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    failures integer NOT NULL DEFAULT 0,
    body text NOT NULL
);
CREATE INDEX sso_logins_by_source ON sso_logins (source);
CREATE INDEX sso_logins_by_expiry ON sso_logins (expires_ms);
