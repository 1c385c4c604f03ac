-- Duplicate detection moves from each process's memory to the store: a retried frame is caught
-- whichever ingest worker (or node) it lands on, start-up loads nothing, and memory no longer
-- grows with rate x window. One row per deduplicated signal, keyed by a 64-bit hash of its
-- dedupe key (the text key stays in signals.dedupe_key; a hash hit is confirmed against it).
-- Rows older than the window are purged by the coordinator.
CREATE TABLE dedupe (
    key_hash    INTEGER PRIMARY KEY,
    seq         INTEGER NOT NULL,               -- signals.seq of the stored original
    received_us INTEGER NOT NULL
);
CREATE INDEX dedupe_by_time ON dedupe (received_us);
