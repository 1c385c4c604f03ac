-- The tamper-evident trail, as in the SQLite store's 0011_journal_chain.sql: each row carries
-- chain_hash over the previous row of the same node and the row's stored fields
-- (receiver/journal_chain.py); each node keeps its own chain, so nodes never contend for one
-- chain head. The PostgreSQL append does not write the chain yet (rows keep NULL: counted by
-- `journal verify`, not verified).
ALTER TABLE signals ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE signals ADD COLUMN chain_hash BYTEA;

CREATE TABLE journal_chain (
    node        TEXT    PRIMARY KEY,
    anchor_seq  BIGINT  NOT NULL,
    anchor_hash BYTEA
);
