-- The registry over years, as in the SQLite store's 0010_registry_lifecycle.sql: removed
-- entries keep their row (removed_at, the old unique value kept aside), keys and bridge tokens
-- rotate with a grace period, stations name their XML receiver and passkey.
ALTER TABLE stations ADD COLUMN xml_output TEXT;
ALTER TABLE stations ADD COLUMN passkey TEXT;

ALTER TABLE dealers ADD COLUMN removed_at DOUBLE PRECISION;
ALTER TABLE dealers ADD COLUMN removed_name TEXT;

ALTER TABLE sites ADD COLUMN removed_at DOUBLE PRECISION;
ALTER TABLE sites ADD COLUMN removed_name TEXT;

ALTER TABLE accounts ADD COLUMN removed_at DOUBLE PRECISION;
ALTER TABLE accounts ADD COLUMN removed_effective TEXT;
ALTER TABLE accounts ADD COLUMN previous_key_text TEXT;
ALTER TABLE accounts ADD COLUMN previous_key_format TEXT
    CHECK (previous_key_format IN ('hex', 'ascii'));
ALTER TABLE accounts ADD COLUMN key_grace_until DOUBLE PRECISION;

ALTER TABLE bridges ADD COLUMN removed_at DOUBLE PRECISION;
ALTER TABLE bridges ADD COLUMN removed_serial TEXT;
ALTER TABLE bridges ADD COLUMN previous_token TEXT;
ALTER TABLE bridges ADD COLUMN token_grace_until DOUBLE PRECISION;
