-- The operator console: its users, their login sessions and API tokens, the audit trail of
-- every change made through it, and the alarms operators acknowledged by hand (manual mode).
-- Secrets are stored only as hashes: passwords with argon2, session and API tokens as SHA-256
-- (they are long random strings, so a fast hash is enough and lookups stay indexed).
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    password_hash TEXT    NOT NULL,
    created_us    INTEGER NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE console_sessions (
    token_hash TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    csrf       TEXT    NOT NULL,
    created_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    token_hash TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    label      TEXT,
    created_us INTEGER NOT NULL
);

-- Who changed what through the console, the API or `receiver users`, and when.
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us    INTEGER NOT NULL,
    user     TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    subject  TEXT,
    detail   TEXT                                  -- JSON object
);
CREATE INDEX audit_by_time ON audit (at_us);

-- Manual mode: an alarm acknowledged by an operator while automation was down. Automation
-- still receives the signal when it returns; this row says it was handled by hand.
CREATE TABLE manual_acks (
    signal_id TEXT    PRIMARY KEY REFERENCES signals (id),
    user      TEXT    NOT NULL,
    acked_us  INTEGER NOT NULL,
    outputs   TEXT    NOT NULL                    -- comma-separated: the outputs that were down
);
