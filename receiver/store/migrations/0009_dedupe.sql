-- Duplicate detection moves from each process's memory to the store: a retried frame is caught
-- whichever ingest worker (or node) it lands on, start-up loads nothing, and memory no longer
-- grows with rate x window. A retry repeats its account and protocol sequence, so the lookup
-- is by (effective_account, sequence) among the deduplicated signals, then the dedupe key and
-- the window are checked. Consecutive frames of a panel have consecutive sequences, so inserts
-- stay on few index pages (a hash-keyed index dirtied one page per signal per commit).
CREATE INDEX signals_by_dedupe ON signals (effective_account, sequence)
    WHERE dedupe_key IS NOT NULL;
