"""Named SQL for the registry on SQLite (tables in ``migrations/0002_registry.sql``).

Plain SQL with ``?`` placeholders; ``receiver.store.postgres.registry_sql`` holds the same
names for PostgreSQL, so the registry service and index pick a module, never a dialect. The
SQLite-only parts are named as such (``BEGIN IMMEDIATE``; the generation triggers live in the
migration). ``IntegrityError`` is what the driver raises when a unique index refuses a row.
"""

from __future__ import annotations

import sqlite3

IntegrityError = sqlite3.IntegrityError

# SQLite: take the write lock up front so check-then-insert cannot interleave with another
# writer (PostgreSQL: SERIALIZABLE or a lock on the station row).
BEGIN_WRITE = "BEGIN IMMEDIATE"
# A consistent snapshot for readers (SQLite WAL: a deferred transaction is a snapshot).
BEGIN_READ = "BEGIN"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
# One waiting bridge attached at a time: a zone collision skips that bridge only.
SAVEPOINT_ATTACH = "SAVEPOINT attach_bridge"
ROLLBACK_ATTACH = "ROLLBACK TO attach_bridge"
RELEASE_ATTACH = "RELEASE attach_bridge"
# One CSV row of a bridge import at a time: a refused row leaves the others to be checked.
SAVEPOINT_ROW = "SAVEPOINT import_row"
ROLLBACK_ROW = "ROLLBACK TO import_row"
RELEASE_ROW = "RELEASE import_row"

GENERATION = "SELECT value FROM meta WHERE key = 'registry_generation'"
# What supervision resumes from at start (the receiver's view of each link).
LINKS = "SELECT link, last_seen_us, trouble_open FROM links"

STATION_BY_NAME = "SELECT id, name, xml_output, passkey FROM stations WHERE name = ?"
INSERT_STATION = "INSERT INTO stations (name, xml_output, passkey) VALUES (?, ?, ?) RETURNING id"
UPDATE_STATION = "UPDATE stations SET name = ?, xml_output = ?, passkey = ? WHERE id = ?"
STATION_COUNT = "SELECT count(*) FROM stations"
STATION_LINES = """
SELECT l.number, l.prefix,
       (SELECT count(*) FROM accounts a WHERE a.line_id = l.id AND a.removed_at IS NULL)
           AS accounts
FROM lines l WHERE l.station_id = ? ORDER BY length(l.number), l.number
"""
STATIONS = "SELECT id, name FROM stations ORDER BY name"
LINES_OF_STATION = "SELECT id, number, prefix FROM lines WHERE station_id = ? ORDER BY number"
LINE = "SELECT id, number, prefix FROM lines WHERE station_id = ? AND number = ?"
LINE_BY_ID = "SELECT id, number, prefix FROM lines WHERE id = ?"
INSERT_LINE = "INSERT INTO lines (station_id, number, prefix) VALUES (?, ?, ?)"
ALL_LINES = """
SELECT s.name AS station, l.number, l.prefix,
       (SELECT count(*) FROM accounts a WHERE a.line_id = l.id AND a.removed_at IS NULL)
           AS accounts
FROM lines l JOIN stations s ON s.id = l.station_id
ORDER BY s.name, length(l.number), l.number
"""

DEALER_BY_NAME = "SELECT id, name FROM dealers WHERE name = ?"
INSERT_DEALER = "INSERT INTO dealers (name) VALUES (?)"
DEALERS = "SELECT id, name FROM dealers WHERE removed_at IS NULL ORDER BY name"
RENAME_DEALER = "UPDATE dealers SET name = ? WHERE id = ?"
# Removal frees the name: the row keeps "\x1f<id>" (no typed name holds \x1f).
REMOVE_DEALER = """
UPDATE dealers SET removed_at = ?, removed_name = name, name = char(31) || id WHERE id = ?
"""
SITES_OF_DEALER = "SELECT name FROM sites WHERE dealer_id = ? AND removed_at IS NULL ORDER BY name"

SITE_BY_NAME = """
SELECT s.id, s.name, s.dealer_id, d.name AS dealer
FROM sites s JOIN dealers d ON d.id = s.dealer_id WHERE s.name = ?
"""
SITE_BY_ID = """
SELECT s.id, s.name, s.dealer_id, d.name AS dealer
FROM sites s JOIN dealers d ON d.id = s.dealer_id WHERE s.id = ?
"""
SITE_DETAILS = "SELECT address, arming_source FROM sites WHERE id = ?"
SITE_IDS = "SELECT id, name FROM sites WHERE removed_at IS NULL"
UPDATE_SITE = (
    "UPDATE sites SET name = ?, dealer_id = ?, address = ?, arming_source = ? WHERE id = ?"
)
REMOVE_SITE = """
UPDATE sites SET removed_at = ?, removed_name = name, name = char(31) || id WHERE id = ?
"""
INSERT_SITE = "INSERT INTO sites (name, dealer_id, address, arming_source) VALUES (?, ?, ?, ?)"
SITES = """
SELECT s.name, d.name AS dealer, s.address, s.arming_source
FROM sites s JOIN dealers d ON d.id = s.dealer_id WHERE s.removed_at IS NULL ORDER BY s.name
"""

# The holder of an effective number, for collision messages.
HOLDER = """
SELECT a.id, a.number, a.effective, l.number AS line, s.name AS site
FROM accounts a
JOIN lines l ON l.id = a.line_id
LEFT JOIN sites s ON s.id = a.site_id
WHERE a.station_id = ? AND a.effective = ?
"""
HOLDERS_OF_STATION = """
SELECT a.id, a.number, a.effective, l.number AS line, s.name AS site
FROM accounts a
JOIN lines l ON l.id = a.line_id
LEFT JOIN sites s ON s.id = a.site_id
WHERE a.station_id = ? AND a.removed_at IS NULL
"""
INSERT_ACCOUNT = """
INSERT INTO accounts (station_id, line_id, number, effective, site_id, key_text, key_format,
                      supervision, window_past, window_future, window_policy)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
ACCOUNTS_OF_SITE = """
SELECT a.id, a.number, a.effective, st.name AS station
FROM accounts a JOIN stations st ON st.id = a.station_id
WHERE a.site_id = ? AND a.removed_at IS NULL ORDER BY a.id
"""
ACCOUNT_BY_ID = "SELECT effective FROM accounts WHERE id = ?"
ACCOUNT_BY_EFFECTIVE = """
SELECT a.id, a.number, a.effective, a.line_id, a.site_id, a.key_text, a.key_format
FROM accounts a WHERE a.station_id = ? AND a.effective = ? AND a.removed_at IS NULL
"""
UPDATE_ACCOUNT = """
UPDATE accounts SET line_id = ?, number = ?, effective = ?, site_id = ?, supervision = ?,
                    window_past = ?, window_future = ?, window_policy = ?
WHERE id = ?
"""
ACCOUNT_SETTINGS = """
SELECT supervision, window_past, window_future, window_policy FROM accounts WHERE id = ?
"""
SET_ACCOUNT_KEY = """
UPDATE accounts SET key_text = ?, key_format = ?, previous_key_text = ?, previous_key_format = ?,
                    key_grace_until = ?
WHERE id = ?
"""
REMOVE_ACCOUNT = """
UPDATE accounts SET removed_at = ?, removed_effective = effective, effective = char(31) || id
WHERE id = ?
"""
BRIDGES_OF_ACCOUNT = "SELECT id, serial FROM bridges WHERE account_id = ? AND removed_at IS NULL"
DETACH_BRIDGE = "UPDATE bridges SET account_id = NULL WHERE id = ?"
DETACH_CHANNELS = "UPDATE bridge_channels SET account_id = NULL WHERE bridge_id = ?"
# Every account with what the receiver needs to act on a frame (index and `accounts list`).
ACCOUNTS = """
SELECT a.id, st.name AS station, l.number AS line, a.number, a.effective,
       a.site_id, s.name AS site, d.name AS dealer,
       a.key_text, a.key_format, a.supervision,
       a.window_past, a.window_future, a.window_policy,
       a.previous_key_text, a.previous_key_format, a.key_grace_until
FROM accounts a
JOIN stations st ON st.id = a.station_id
JOIN lines l ON l.id = a.line_id
LEFT JOIN sites s ON s.id = a.site_id
LEFT JOIN dealers d ON d.id = s.dealer_id
WHERE a.removed_at IS NULL
"""
ACCOUNTS_ORDERED = ACCOUNTS + " ORDER BY st.name, a.effective"
ACCOUNTS_OF_STATION = ACCOUNTS + " AND st.name = ? ORDER BY a.effective"

DEALER_OVERRIDE = """
SELECT id, code, enabled FROM library_overrides WHERE dealer_id = ? AND zone_type = ?
"""
SITE_OVERRIDE = """
SELECT id, code, enabled FROM library_overrides WHERE site_id = ? AND zone_type = ?
"""
INSERT_OVERRIDE = """
INSERT INTO library_overrides (dealer_id, site_id, zone_type, code, enabled) VALUES (?, ?, ?, ?, ?)
"""
UPDATE_OVERRIDE = "UPDATE library_overrides SET code = ?, enabled = ? WHERE id = ?"
DELETE_OVERRIDE = "DELETE FROM library_overrides WHERE id = ?"
DEALER_OVERRIDES = """
SELECT dealer_id, zone_type, code, enabled FROM library_overrides WHERE dealer_id IS NOT NULL
"""
SITE_OVERRIDES = """
SELECT site_id, zone_type, code, enabled FROM library_overrides WHERE site_id IS NOT NULL
"""
SITE_DEALERS = "SELECT id, dealer_id FROM sites"

BRIDGE_BY_SERIAL = """
SELECT id, serial, token, model, channels, site_id, account_id FROM bridges WHERE serial = ?
"""
UPDATE_BRIDGE = "UPDATE bridges SET serial = ?, model = ?, site_id = ?, account_id = ? WHERE id = ?"
SET_BRIDGE_TOKEN = (
    "UPDATE bridges SET token = ?, previous_token = ?, token_grace_until = ? WHERE id = ?"  # noqa: S105
)
BRIDGE_CHANNELS_ACCOUNT = "UPDATE bridge_channels SET account_id = ? WHERE bridge_id = ?"
SHIFT_BRIDGE_ZONES = "UPDATE bridge_channels SET zone = ? + channel - 1 WHERE bridge_id = ?"
BRIDGE_ZONES = "SELECT channel, zone FROM bridge_channels WHERE bridge_id = ? ORDER BY channel"
REMOVE_BRIDGE = """
UPDATE bridges SET removed_at = ?, removed_serial = serial, serial = char(31) || id,
                   account_id = NULL
WHERE id = ?
"""
DELETE_BRIDGE_CHANNELS = "DELETE FROM bridge_channels WHERE bridge_id = ?"
BRIDGES_OF_SITE = "SELECT id, serial FROM bridges WHERE site_id = ? AND removed_at IS NULL"
INSERT_BRIDGE = """
INSERT INTO bridges (serial, token, model, channels, site_id, account_id) VALUES (?, ?, ?, ?, ?, ?)
RETURNING id
"""
INSERT_CHANNEL = """
INSERT INTO bridge_channels (bridge_id, channel, account_id, zone, zone_type) VALUES (?, ?, ?, ?, ?)
"""
CHANNEL = """
SELECT zone, zone_type, camera, code, enabled FROM bridge_channels
WHERE bridge_id = ? AND channel = ?
"""
UPDATE_CHANNEL = """
UPDATE bridge_channels SET zone = ?, zone_type = ?, camera = ?, code = ?, enabled = ?
WHERE bridge_id = ? AND channel = ?
"""
# Who holds a zone number on an account (across all its bridges).
ZONE_HOLDERS = """
SELECT c.zone, c.channel, b.serial FROM bridge_channels c JOIN bridges b ON b.id = c.bridge_id
WHERE c.account_id = ?
"""
# The same for a bridge still waiting for its site's account (its zones are its own).
ZONE_HOLDERS_OF_BRIDGE = """
SELECT c.zone, c.channel, b.serial FROM bridge_channels c JOIN bridges b ON b.id = c.bridge_id
WHERE c.bridge_id = ?
"""
WAITING_BRIDGES = """
SELECT id, serial FROM bridges
WHERE site_id = ? AND account_id IS NULL AND removed_at IS NULL ORDER BY id
"""
SITES_WAITING = """
SELECT DISTINCT site_id FROM bridges WHERE account_id IS NULL AND removed_at IS NULL
"""
ATTACH_BRIDGE = "UPDATE bridges SET account_id = ? WHERE id = ?"
ATTACH_CHANNELS = "UPDATE bridge_channels SET account_id = ? WHERE bridge_id = ?"
BRIDGES = """
SELECT b.id, b.serial, b.token, b.model, b.channels, b.site_id, s.name AS site, b.account_id,
       b.previous_token, b.token_grace_until
FROM bridges b JOIN sites s ON s.id = b.site_id
WHERE b.removed_at IS NULL
ORDER BY b.serial
"""
CHANNELS = """
SELECT bridge_id, channel, zone, zone_type, camera, code, enabled FROM bridge_channels
ORDER BY bridge_id, channel
"""
