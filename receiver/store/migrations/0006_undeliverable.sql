-- Signals an output can never carry (skipped for that output only, never silently).
ALTER TABLE outputs ADD COLUMN undeliverable INTEGER NOT NULL DEFAULT 0;
