-- Duplicate detection moves from each process's memory to the store: a retried frame is caught
-- whichever ingest worker (or node) it lands on, start-up loads nothing, and memory no longer
-- grows with rate x window. Each deduplicated signal carries a 64-bit hash of its dedupe key
-- (the text key stays in dedupe_key; a hash hit is confirmed against it) under a unique
-- partial index. The hash is cleared once the signal is older than the window (the
-- coordinator's purge), so the index holds only the window's keys.
ALTER TABLE signals ADD COLUMN dedupe_hash INTEGER;
CREATE UNIQUE INDEX signals_by_dedupe ON signals (dedupe_hash) WHERE dedupe_hash IS NOT NULL;
