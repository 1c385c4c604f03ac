-- Each output's delivery state: its cursor over the journal (SQLite's 0005 and 0006).
CREATE TABLE outputs (
    name            TEXT    PRIMARY KEY,
    cursor          BIGINT  NOT NULL,
    delivered       BIGINT  NOT NULL DEFAULT 0,
    connected       INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    last_success_us BIGINT,
    updated_us      BIGINT,
    undeliverable   BIGINT  NOT NULL DEFAULT 0
);
