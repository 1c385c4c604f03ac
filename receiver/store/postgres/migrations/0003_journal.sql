-- The journal: every signal, in commit order (`seq` is each output's cursor). The columns are
-- SQLite's 0003. Appenders serialize on an advisory transaction lock (see store.py), so seq
-- order is commit order across every node and a cursor never passes a signal still committing.
CREATE TABLE signals (
    seq               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                TEXT    NOT NULL UNIQUE,
    received_us       BIGINT  NOT NULL,
    source            TEXT    NOT NULL,
    peer              TEXT,
    station           TEXT,
    receiver_no       TEXT,
    line              TEXT,
    account           TEXT    NOT NULL,
    account_id        BIGINT,
    effective_account TEXT,
    site_id           BIGINT,
    site_name         TEXT,
    token             TEXT,
    sequence          TEXT,
    device_us         BIGINT,
    qualifier         TEXT,
    code              TEXT,
    grp               TEXT,
    zone              TEXT,
    sia_code          TEXT,
    sia_address       TEXT,
    sia_modifiers     TEXT,
    sia_text          TEXT,
    name              TEXT,
    category          TEXT,
    device            TEXT,
    channel           INTEGER,
    zone_type         TEXT,
    extended          TEXT,
    flags             TEXT    NOT NULL DEFAULT '',
    raw               BYTEA,
    dedupe_key        TEXT,
    repeats           INTEGER NOT NULL DEFAULT 0,
    last_repeat_us    BIGINT
);
CREATE INDEX signals_by_time ON signals (received_us);
CREATE INDEX signals_by_account ON signals (effective_account, received_us);

-- Dedupe keys within the window, for every node: the primary key is what catches a retry that
-- reached another node (INSERT ... ON CONFLICT). A key older than the window is replaced by the
-- next signal carrying it; purge_keys() forgets old ones.
CREATE TABLE dedupe_keys (
    key         TEXT   PRIMARY KEY,
    signal_id   TEXT   NOT NULL,
    received_us BIGINT NOT NULL
);
CREATE INDEX dedupe_keys_by_time ON dedupe_keys (received_us);

-- Link supervision: last traffic per supervised link, so deadlines survive a restart.
CREATE TABLE links (
    link         TEXT    PRIMARY KEY,
    last_seen_us BIGINT  NOT NULL,
    trouble_open INTEGER NOT NULL DEFAULT 0
);
