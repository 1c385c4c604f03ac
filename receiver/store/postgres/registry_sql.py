"""Named SQL for the registry on PostgreSQL (tables in ``migrations/0002_registry.sql``).

The same names as ``receiver.store.registry_sql`` (SQLite), with ``%s`` placeholders; the
registry service and index run whichever module their store's backend gives them. Text is
ordered ``COLLATE "C"`` (byte order, as SQLite orders it), whatever the database's locale.
``IntegrityError`` is what psycopg raises when a unique index (or a check) refuses a row.
"""

from __future__ import annotations

from psycopg import errors

IntegrityError = errors.IntegrityError

# Registry writers serialize on one advisory lock (as SQLite's BEGIN IMMEDIATE serializes
# them), so check-then-write cannot interleave with another writer on any node; the unique
# indexes stay the last line of defence against a writer that does not take it.
REGISTRY_LOCK = 0x5245_4303  # "REC" 3 (schema.py holds 1 and 2)
BEGIN_WRITE = f"BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({REGISTRY_LOCK})"
# A consistent snapshot for readers (the index is loaded in one).
BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
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

STATION_BY_NAME = "SELECT id, name, xml_output, passkey FROM stations WHERE name = %s"
INSERT_STATION = "INSERT INTO stations (name, xml_output, passkey) VALUES (%s, %s, %s) RETURNING id"
UPDATE_STATION = "UPDATE stations SET name = %s, xml_output = %s, passkey = %s WHERE id = %s"
STATION_COUNT = "SELECT count(*) FROM stations"
STATION_LINES = """
SELECT l.number, l.prefix,
       (SELECT count(*) FROM accounts a WHERE a.line_id = l.id AND a.removed_at IS NULL)
           AS accounts
FROM lines l WHERE l.station_id = %s ORDER BY length(l.number), l.number COLLATE "C"
"""
STATIONS = 'SELECT id, name FROM stations ORDER BY name COLLATE "C"'
LINES_OF_STATION = (
    'SELECT id, number, prefix FROM lines WHERE station_id = %s ORDER BY number COLLATE "C"'
)
LINE = "SELECT id, number, prefix FROM lines WHERE station_id = %s AND number = %s"
LINE_BY_ID = "SELECT id, number, prefix FROM lines WHERE id = %s"
INSERT_LINE = "INSERT INTO lines (station_id, number, prefix) VALUES (%s, %s, %s)"
ALL_LINES = """
SELECT s.name AS station, l.number, l.prefix,
       (SELECT count(*) FROM accounts a WHERE a.line_id = l.id AND a.removed_at IS NULL)
           AS accounts
FROM lines l JOIN stations s ON s.id = l.station_id
ORDER BY s.name COLLATE "C", length(l.number), l.number COLLATE "C"
"""

DEALER_BY_NAME = "SELECT id, name FROM dealers WHERE name = %s"
INSERT_DEALER = "INSERT INTO dealers (name) VALUES (%s)"
DEALERS = 'SELECT id, name FROM dealers WHERE removed_at IS NULL ORDER BY name COLLATE "C"'
RENAME_DEALER = "UPDATE dealers SET name = %s WHERE id = %s"
# Removal frees the name: the row keeps "\x1f<id>" (no typed name holds \x1f).
REMOVE_DEALER = """
UPDATE dealers SET removed_at = %s, removed_name = name, name = chr(31) || id WHERE id = %s
"""
SITES_OF_DEALER = (
    'SELECT name FROM sites WHERE dealer_id = %s AND removed_at IS NULL ORDER BY name COLLATE "C"'
)

SITE_BY_NAME = """
SELECT s.id, s.name, s.dealer_id, d.name AS dealer
FROM sites s JOIN dealers d ON d.id = s.dealer_id WHERE s.name = %s
"""
SITE_BY_ID = """
SELECT s.id, s.name, s.dealer_id, d.name AS dealer
FROM sites s JOIN dealers d ON d.id = s.dealer_id WHERE s.id = %s
"""
SITE_DETAILS = "SELECT address, arming_source FROM sites WHERE id = %s"
SITE_IDS = "SELECT id, name FROM sites WHERE removed_at IS NULL"
UPDATE_SITE = (
    "UPDATE sites SET name = %s, dealer_id = %s, address = %s, arming_source = %s WHERE id = %s"
)
REMOVE_SITE = """
UPDATE sites SET removed_at = %s, removed_name = name, name = chr(31) || id WHERE id = %s
"""
INSERT_SITE = "INSERT INTO sites (name, dealer_id, address, arming_source) VALUES (%s, %s, %s, %s)"
SITES = """
SELECT s.name, d.name AS dealer, s.address, s.arming_source
FROM sites s JOIN dealers d ON d.id = s.dealer_id
WHERE s.removed_at IS NULL ORDER BY s.name COLLATE "C"
"""

# The holder of an effective number, for collision messages.
HOLDER = """
SELECT a.id, a.number, a.effective, l.number AS line, s.name AS site
FROM accounts a
JOIN lines l ON l.id = a.line_id
LEFT JOIN sites s ON s.id = a.site_id
WHERE a.station_id = %s AND a.effective = %s
"""
HOLDERS_OF_STATION = """
SELECT a.id, a.number, a.effective, l.number AS line, s.name AS site
FROM accounts a
JOIN lines l ON l.id = a.line_id
LEFT JOIN sites s ON s.id = a.site_id
WHERE a.station_id = %s AND a.removed_at IS NULL
"""
INSERT_ACCOUNT = """
INSERT INTO accounts (station_id, line_id, number, effective, site_id, key_text, key_format,
                      supervision, window_past, window_future, window_policy)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
ACCOUNTS_OF_SITE = """
SELECT a.id, a.number, a.effective, st.name AS station
FROM accounts a JOIN stations st ON st.id = a.station_id
WHERE a.site_id = %s AND a.removed_at IS NULL ORDER BY a.id
"""
ACCOUNT_BY_ID = "SELECT effective FROM accounts WHERE id = %s"
ACCOUNT_BY_EFFECTIVE = """
SELECT a.id, a.number, a.effective, a.line_id, a.site_id, a.key_text, a.key_format
FROM accounts a WHERE a.station_id = %s AND a.effective = %s AND a.removed_at IS NULL
"""
UPDATE_ACCOUNT = """
UPDATE accounts SET line_id = %s, number = %s, effective = %s, site_id = %s, supervision = %s,
                    window_past = %s, window_future = %s, window_policy = %s
WHERE id = %s
"""
ACCOUNT_SETTINGS = """
SELECT supervision, window_past, window_future, window_policy FROM accounts WHERE id = %s
"""
SET_ACCOUNT_KEY = """
UPDATE accounts SET key_text = %s, key_format = %s, previous_key_text = %s,
                    previous_key_format = %s, key_grace_until = %s
WHERE id = %s
"""
REMOVE_ACCOUNT = """
UPDATE accounts SET removed_at = %s, removed_effective = effective, effective = chr(31) || id
WHERE id = %s
"""
BRIDGES_OF_ACCOUNT = "SELECT id, serial FROM bridges WHERE account_id = %s AND removed_at IS NULL"
DETACH_BRIDGE = "UPDATE bridges SET account_id = NULL WHERE id = %s"
DETACH_CHANNELS = "UPDATE bridge_channels SET account_id = NULL WHERE bridge_id = %s"
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
ACCOUNTS_ORDERED = ACCOUNTS + ' ORDER BY st.name COLLATE "C", a.effective COLLATE "C"'
ACCOUNTS_OF_STATION = ACCOUNTS + ' AND st.name = %s ORDER BY a.effective COLLATE "C"'

DEALER_OVERRIDE = """
SELECT id, code, enabled FROM library_overrides WHERE dealer_id = %s AND zone_type = %s
"""
SITE_OVERRIDE = """
SELECT id, code, enabled FROM library_overrides WHERE site_id = %s AND zone_type = %s
"""
INSERT_OVERRIDE = """
INSERT INTO library_overrides (dealer_id, site_id, zone_type, code, enabled)
VALUES (%s, %s, %s, %s, %s)
"""
UPDATE_OVERRIDE = "UPDATE library_overrides SET code = %s, enabled = %s WHERE id = %s"
DELETE_OVERRIDE = "DELETE FROM library_overrides WHERE id = %s"
DEALER_OVERRIDES = """
SELECT dealer_id, zone_type, code, enabled FROM library_overrides WHERE dealer_id IS NOT NULL
"""
SITE_OVERRIDES = """
SELECT site_id, zone_type, code, enabled FROM library_overrides WHERE site_id IS NOT NULL
"""
SITE_DEALERS = "SELECT id, dealer_id FROM sites"

BRIDGE_BY_SERIAL = """
SELECT id, serial, token, model, channels, site_id, account_id FROM bridges WHERE serial = %s
"""
UPDATE_BRIDGE = (
    "UPDATE bridges SET serial = %s, model = %s, site_id = %s, account_id = %s WHERE id = %s"
)
SET_BRIDGE_TOKEN = (
    "UPDATE bridges SET token = %s, previous_token = %s, token_grace_until = %s WHERE id = %s"  # noqa: S105
)
BRIDGE_CHANNELS_ACCOUNT = "UPDATE bridge_channels SET account_id = %s WHERE bridge_id = %s"
SHIFT_BRIDGE_ZONES = "UPDATE bridge_channels SET zone = %s + channel - 1 WHERE bridge_id = %s"
BRIDGE_ZONES = "SELECT channel, zone FROM bridge_channels WHERE bridge_id = %s ORDER BY channel"
REMOVE_BRIDGE = """
UPDATE bridges SET removed_at = %s, removed_serial = serial, serial = chr(31) || id,
                   account_id = NULL
WHERE id = %s
"""
DELETE_BRIDGE_CHANNELS = "DELETE FROM bridge_channels WHERE bridge_id = %s"
BRIDGES_OF_SITE = "SELECT id, serial FROM bridges WHERE site_id = %s AND removed_at IS NULL"
INSERT_BRIDGE = """
INSERT INTO bridges (serial, token, model, channels, site_id, account_id)
VALUES (%s, %s, %s, %s, %s, %s)
RETURNING id
"""
INSERT_CHANNEL = """
INSERT INTO bridge_channels (bridge_id, channel, account_id, zone, zone_type)
VALUES (%s, %s, %s, %s, %s)
"""
CHANNEL = """
SELECT zone, zone_type, camera, code, enabled FROM bridge_channels
WHERE bridge_id = %s AND channel = %s
"""
UPDATE_CHANNEL = """
UPDATE bridge_channels SET zone = %s, zone_type = %s, camera = %s, code = %s, enabled = %s
WHERE bridge_id = %s AND channel = %s
"""
# Who holds a zone number on an account (across all its bridges).
ZONE_HOLDERS = """
SELECT c.zone, c.channel, b.serial FROM bridge_channels c JOIN bridges b ON b.id = c.bridge_id
WHERE c.account_id = %s
"""
# The same for a bridge still waiting for its site's account (its zones are its own).
ZONE_HOLDERS_OF_BRIDGE = """
SELECT c.zone, c.channel, b.serial FROM bridge_channels c JOIN bridges b ON b.id = c.bridge_id
WHERE c.bridge_id = %s
"""
WAITING_BRIDGES = """
SELECT id, serial FROM bridges
WHERE site_id = %s AND account_id IS NULL AND removed_at IS NULL ORDER BY id
"""
SITES_WAITING = """
SELECT DISTINCT site_id FROM bridges WHERE account_id IS NULL AND removed_at IS NULL
"""
ATTACH_BRIDGE = "UPDATE bridges SET account_id = %s WHERE id = %s"
ATTACH_CHANNELS = "UPDATE bridge_channels SET account_id = %s WHERE bridge_id = %s"
BRIDGES = """
SELECT b.id, b.serial, b.token, b.model, b.channels, b.site_id, s.name AS site, b.account_id,
       b.previous_token, b.token_grace_until
FROM bridges b JOIN sites s ON s.id = b.site_id
WHERE b.removed_at IS NULL
ORDER BY b.serial COLLATE "C"
"""
CHANNELS = """
SELECT bridge_id, channel, zone, zone_type, camera, code, enabled FROM bridge_channels
ORDER BY bridge_id, channel
"""
