-- Store metadata: a change counter the receiver watches to refresh its in-memory registry.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('registry_generation', 0);
