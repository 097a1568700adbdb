-- Device sign-ins (RFC 8628) in progress: started by a machine without a
-- browser on one replica, entered and approved in a browser on another,
-- polled on a third.
CREATE TABLE device_logins (
    id text PRIMARY KEY,
    user_code text NOT NULL UNIQUE,
    source text NOT NULL,
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    body text NOT NULL
);
CREATE INDEX device_logins_by_source ON device_logins (source);
CREATE INDEX device_logins_by_expiry ON device_logins (expires_ms);
