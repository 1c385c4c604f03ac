-- Store metadata: the registry change counter every node watches (as in SQLite's 0001), and
-- the function the registry triggers call: bump the counter and NOTIFY registry_changed, both
-- taking effect at commit (a NOTIFY is delivered only if its transaction commits).
CREATE TABLE meta (
    key   TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('registry_generation', 0);

CREATE FUNCTION registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation';
    PERFORM pg_notify('registry_changed', '');
    RETURN NULL;
END;
$$;
