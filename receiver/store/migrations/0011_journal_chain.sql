-- The tamper-evident trail: every journal row carries chain_hash, SHA-256 over the previous
-- row's chain_hash (of the same node) and a canonical encoding of the row's stored fields
-- (receiver/journal_chain.py says which and how). `receiver journal verify` recomputes it.
--
-- Each node keeps its own chain (`node`: '' for the single-node SQLite store; a PostgreSQL
-- backend writes its node name, so nodes never contend for one chain head). Rows stored
-- before this migration keep chain_hash NULL: they are counted, not verified.
ALTER TABLE signals ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE signals ADD COLUMN chain_hash BLOB;

-- Where each node's remaining chain starts once retention removed older rows: the seq and
-- chain_hash of the last row removed (NULL hash: the removed rows were never chained).
CREATE TABLE journal_chain (
    node        TEXT    PRIMARY KEY,
    anchor_seq  INTEGER NOT NULL,
    anchor_hash BLOB
);
