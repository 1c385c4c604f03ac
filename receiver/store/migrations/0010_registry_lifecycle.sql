-- The registry over years: entries are edited, moved and removed; keys and tokens rotate.
--
-- * A removed dealer, site, account or bridge keeps its row (signals and history keep pointing
--   at it): removed_at is set and its unique name, effective number or serial is replaced by
--   "\x1f<id>" (no typed name can hold \x1f), so the number or name is free again; the old
--   value stays in removed_name / removed_effective / removed_serial. A removed bridge's
--   channels are deleted (they held zones on the account).
-- * Key rotation: previous_key_* is the key before the last set-key, accepted until
--   key_grace_until (epoch seconds). previous_key_text NULL with a deadline: plaintext was
--   accepted before and stays accepted until then. Bridge tokens the same way.
-- * Monitoring station records: the [[outputs]] name a station delivers through (its XML
--   receiver) and its passkey.
-- The generation triggers of 0002/0007 fire on these updates too.

ALTER TABLE stations ADD COLUMN xml_output TEXT;
ALTER TABLE stations ADD COLUMN passkey TEXT;

ALTER TABLE dealers ADD COLUMN removed_at REAL;
ALTER TABLE dealers ADD COLUMN removed_name TEXT;

ALTER TABLE sites ADD COLUMN removed_at REAL;
ALTER TABLE sites ADD COLUMN removed_name TEXT;

ALTER TABLE accounts ADD COLUMN removed_at REAL;
ALTER TABLE accounts ADD COLUMN removed_effective TEXT;
ALTER TABLE accounts ADD COLUMN previous_key_text TEXT;
ALTER TABLE accounts ADD COLUMN previous_key_format TEXT
    CHECK (previous_key_format IN ('hex', 'ascii'));
ALTER TABLE accounts ADD COLUMN key_grace_until REAL;

ALTER TABLE bridges ADD COLUMN removed_at REAL;
ALTER TABLE bridges ADD COLUMN removed_serial TEXT;
ALTER TABLE bridges ADD COLUMN previous_token TEXT;
ALTER TABLE bridges ADD COLUMN token_grace_until REAL;
