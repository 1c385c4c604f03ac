-- The journal: every signal, in the order it was committed. `seq` is each output's cursor.
CREATE TABLE signals (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    received_us       INTEGER NOT NULL,          -- receiver time, microseconds since the epoch (UTC)
    source            TEXT    NOT NULL,
    peer              TEXT,
    station           TEXT,
    receiver_no       TEXT,
    line              TEXT,
    account           TEXT    NOT NULL,          -- as received
    account_id        INTEGER,                   -- registry account it resolved to (NULL: unknown)
    effective_account TEXT,                      -- as automation knows it
    site_id           INTEGER,
    site_name         TEXT,
    token             TEXT,
    sequence          TEXT,
    device_us         INTEGER,
    qualifier         TEXT,
    code              TEXT,
    grp               TEXT,
    zone              TEXT,
    sia_code          TEXT,
    sia_address       TEXT,
    sia_modifiers     TEXT,                      -- JSON [[name, value], ...]
    sia_text          TEXT,
    name              TEXT,
    category          TEXT,
    device            TEXT,
    channel           INTEGER,
    zone_type         TEXT,
    extended          TEXT,                      -- JSON [[id, value], ...]
    flags             TEXT    NOT NULL DEFAULT '', -- comma-separated, sorted
    raw               BLOB,
    dedupe_key        TEXT,                      -- NULL when the signal is not deduplicated
    repeats           INTEGER NOT NULL DEFAULT 0, -- retries absorbed by the dedupe key
    last_repeat_us    INTEGER
);
CREATE INDEX signals_by_time ON signals (received_us);
CREATE INDEX signals_by_account ON signals (effective_account, received_us);

-- Link supervision: last traffic per supervised link, so deadlines survive a restart.
CREATE TABLE links (
    link         TEXT    PRIMARY KEY,            -- "account:<id>" or "bridge:<serial>"
    last_seen_us INTEGER NOT NULL,
    trouble_open INTEGER NOT NULL DEFAULT 0
);
