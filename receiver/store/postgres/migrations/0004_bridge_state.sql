-- What the receiver last heard from each video bridge (SQLite's 0004).
CREATE TABLE bridge_state (
    serial        TEXT    PRIMARY KEY,
    model         TEXT,
    channels      INTEGER,
    firmware      TEXT,
    armed         TEXT    CHECK (armed IN ('armed', 'disarmed', 'partial')),
    armed_us      BIGINT,
    peer          TEXT,
    connected_us  BIGINT,
    updated_us    BIGINT  NOT NULL
);
