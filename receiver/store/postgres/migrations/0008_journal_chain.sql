-- The tamper-evident trail, as in the SQLite store's 0011_journal_chain.sql: each row carries
-- chain_hash over the previous row of the same node and the row's stored fields
-- (receiver/journal_chain.py), one chain per `node` value. The PostgreSQL append writes one
-- chain for every node (node ''), its head read under the journal's advisory lock (store.py).
ALTER TABLE signals ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE signals ADD COLUMN chain_hash BYTEA;

CREATE TABLE journal_chain (
    node        TEXT    PRIMARY KEY,
    anchor_seq  BIGINT  NOT NULL,
    anchor_hash BYTEA
);
