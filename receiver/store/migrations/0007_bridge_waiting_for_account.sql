-- A bridge may be registered before its site has an account: account_id stays NULL until the
-- site gets one (then the registry attaches it). Its signals meanwhile are stored and flagged
-- unknown_account, with the bridge serial standing for the account: an alarm is never refused
-- for a missing registry row. SQLite cannot drop NOT NULL in place: both tables are rebuilt
-- (children first, ids kept), with their index and the generation triggers of 0002.
CREATE TABLE bridges_new (
    id         INTEGER PRIMARY KEY,
    serial     TEXT    NOT NULL UNIQUE,       -- upper-cased
    token      TEXT    NOT NULL,
    model      TEXT,
    channels   INTEGER NOT NULL CHECK (channels IN (4, 8, 12, 16)),
    site_id    INTEGER NOT NULL REFERENCES sites (id),
    account_id INTEGER REFERENCES accounts (id)   -- NULL: the site has no account yet
);
INSERT INTO bridges_new (id, serial, token, model, channels, site_id, account_id)
    SELECT id, serial, token, model, channels, site_id, account_id FROM bridges;

CREATE TABLE bridge_channels_new (
    bridge_id  INTEGER NOT NULL REFERENCES bridges_new (id),
    channel    INTEGER NOT NULL,
    account_id INTEGER REFERENCES accounts (id),  -- the bridge's, NULL with it
    zone       INTEGER NOT NULL CHECK (zone BETWEEN 1 AND 999),
    zone_type  TEXT    NOT NULL DEFAULT 'instant',
    camera     TEXT,
    code       TEXT,
    enabled    INTEGER,
    PRIMARY KEY (bridge_id, channel)
);
INSERT INTO bridge_channels_new
    (bridge_id, channel, account_id, zone, zone_type, camera, code, enabled)
    SELECT bridge_id, channel, account_id, zone, zone_type, camera, code, enabled
    FROM bridge_channels;

DROP TABLE bridge_channels;
DROP TABLE bridges;
ALTER TABLE bridges_new RENAME TO bridges;
ALTER TABLE bridge_channels_new RENAME TO bridge_channels;
CREATE UNIQUE INDEX bridge_channels_zone ON bridge_channels (account_id, zone);

CREATE TRIGGER bridges_ins AFTER INSERT ON bridges BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER bridges_upd AFTER UPDATE ON bridges BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER bridges_del AFTER DELETE ON bridges BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER bridge_channels_ins AFTER INSERT ON bridge_channels BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER bridge_channels_upd AFTER UPDATE ON bridge_channels BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER bridge_channels_del AFTER DELETE ON bridge_channels BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
