-- Leases and node heartbeats, as on PostgreSQL (its 0006_nodes), so one code path serves
-- both: on SQLite a single node simply holds every lease.
--
-- A lease makes one node at a time handle an output or a supervised link: taken when free,
-- expired or already the taker's, renewed only by its holder before it expires, released at
-- a clean shutdown. Times are microseconds since the epoch on the machine's clock (the one
-- every process sharing the file reads).
--
-- `epoch` grows with every take (never with a renewal), even when the same node takes the
-- lease again: (name, holder, epoch) is the fencing token of that hold. A journal write made
-- under a lease carries its token and is refused, storing nothing of it, when the row no
-- longer has that holder and epoch, checked in the append's own transaction
-- (receiver/store/fencing.py, receiver/store/lease_sql.py). A sole SQLite node's writes carry
-- no token. (This comment was updated after the migration shipped; the schema is unchanged.)
CREATE TABLE leases (
    name        TEXT    PRIMARY KEY,
    holder      TEXT    NOT NULL,
    acquired_us INTEGER NOT NULL,
    expires_us  INTEGER NOT NULL,
    epoch       INTEGER NOT NULL DEFAULT 1
);

-- Each node's heartbeat, for `receiver nodes`; info is a JSON object.
CREATE TABLE nodes (
    name         TEXT    PRIMARY KEY,
    started_us   INTEGER NOT NULL,
    heartbeat_us INTEGER NOT NULL,
    info         TEXT    NOT NULL DEFAULT '{}'
);
