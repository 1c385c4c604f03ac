-- Each output's delivery state: its cursor over the journal (last seq delivered and ACKed).
CREATE TABLE outputs (
    name            TEXT    PRIMARY KEY,
    cursor          INTEGER NOT NULL,
    delivered       INTEGER NOT NULL DEFAULT 0,
    connected       INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    last_success_us INTEGER,
    updated_us      INTEGER
);
