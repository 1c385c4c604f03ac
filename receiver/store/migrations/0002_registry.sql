-- The station registry: stations and their lines, dealers, sites, accounts, the alarm library
-- overrides, bridges and their channels.
--
-- Rules the database enforces itself (the application checks them first, with better
-- messages; these are the last line of defence when two processes race):
--   * an account's effective number (line prefix + number, trimmed, upper-cased) is unique
--     within its station: index accounts_effective;
--   * a zone number is unique within one account across all its bridges: the channel row
--     carries its bridge's account_id so index bridge_channels_zone can see every bridge.
-- Every change to these tables bumps meta.registry_generation in the same transaction (the
-- triggers at the end), which is what the receiver's in-memory index watches.

CREATE TABLE stations (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);

-- A line is the DC-09 `L` value, stored normalized (upper-case hex, no leading zeros, '0').
CREATE TABLE lines (
    id         INTEGER PRIMARY KEY,
    station_id INTEGER NOT NULL REFERENCES stations (id),
    number     TEXT    NOT NULL,
    prefix     TEXT    NOT NULL DEFAULT '',   -- added to account numbers on this line
    UNIQUE (station_id, number)
);

CREATE TABLE dealers (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);

CREATE TABLE sites (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    dealer_id     INTEGER NOT NULL REFERENCES dealers (id),
    address       TEXT,
    arming_source TEXT
);

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    station_id    INTEGER NOT NULL REFERENCES stations (id),
    line_id       INTEGER NOT NULL REFERENCES lines (id),
    number        TEXT    NOT NULL,           -- as typed (trimmed)
    effective     TEXT    NOT NULL,           -- line prefix + number, upper-cased
    site_id       INTEGER REFERENCES sites (id),
    key_text      TEXT,                       -- DC-09 AES key as typed
    key_format    TEXT CHECK (key_format IN ('hex', 'ascii')),
    supervision   REAL,                       -- seconds; NULL: not supervised
    window_past   REAL,                       -- NULL: the receiver's default
    window_future REAL,
    window_policy TEXT CHECK (window_policy IN ('reject', 'flag'))
);
CREATE UNIQUE INDEX accounts_effective ON accounts (station_id, effective);
CREATE INDEX accounts_by_site ON accounts (site_id);

-- Alarm library overrides: one row per (dealer or site, zone type); NULL code or enabled
-- means "inherit from the level below".
CREATE TABLE library_overrides (
    id        INTEGER PRIMARY KEY,
    dealer_id INTEGER REFERENCES dealers (id),
    site_id   INTEGER REFERENCES sites (id),
    zone_type TEXT    NOT NULL,
    code      TEXT,
    enabled   INTEGER,
    CHECK ((dealer_id IS NULL) <> (site_id IS NULL))
);
CREATE UNIQUE INDEX library_dealer ON library_overrides (dealer_id, zone_type)
    WHERE dealer_id IS NOT NULL;
CREATE UNIQUE INDEX library_site ON library_overrides (site_id, zone_type)
    WHERE site_id IS NOT NULL;

CREATE TABLE bridges (
    id         INTEGER PRIMARY KEY,
    serial     TEXT    NOT NULL UNIQUE,       -- upper-cased
    token      TEXT    NOT NULL,
    model      TEXT,
    channels   INTEGER NOT NULL CHECK (channels IN (4, 8, 12, 16)),
    site_id    INTEGER NOT NULL REFERENCES sites (id),
    account_id INTEGER NOT NULL REFERENCES accounts (id)
);

-- code / enabled: the per-channel alarm library override (NULL: inherit from the site).
CREATE TABLE bridge_channels (
    bridge_id  INTEGER NOT NULL REFERENCES bridges (id),
    channel    INTEGER NOT NULL,
    account_id INTEGER NOT NULL REFERENCES accounts (id),
    zone       INTEGER NOT NULL CHECK (zone BETWEEN 1 AND 999),
    zone_type  TEXT    NOT NULL DEFAULT 'instant',
    camera     TEXT,
    code       TEXT,
    enabled    INTEGER,
    PRIMARY KEY (bridge_id, channel)
);
CREATE UNIQUE INDEX bridge_channels_zone ON bridge_channels (account_id, zone);

CREATE TRIGGER stations_ins AFTER INSERT ON stations BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER stations_upd AFTER UPDATE ON stations BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER stations_del AFTER DELETE ON stations BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER lines_ins AFTER INSERT ON lines BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER lines_upd AFTER UPDATE ON lines BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER lines_del AFTER DELETE ON lines BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER dealers_ins AFTER INSERT ON dealers BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER dealers_upd AFTER UPDATE ON dealers BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER dealers_del AFTER DELETE ON dealers BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER sites_ins AFTER INSERT ON sites BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER sites_upd AFTER UPDATE ON sites BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER sites_del AFTER DELETE ON sites BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER accounts_ins AFTER INSERT ON accounts BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER accounts_upd AFTER UPDATE ON accounts BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER accounts_del AFTER DELETE ON accounts BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER library_overrides_ins AFTER INSERT ON library_overrides BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER library_overrides_upd AFTER UPDATE ON library_overrides BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
CREATE TRIGGER library_overrides_del AFTER DELETE ON library_overrides BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'registry_generation'; END;
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
