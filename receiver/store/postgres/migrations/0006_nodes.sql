-- Several receiver nodes on one database.
--
-- A lease makes one node at a time handle an output or a supervised link: taken when free,
-- expired or already the taker's (one atomic upsert), renewed only by its holder before it
-- expires, released at a clean shutdown. Times are the database's clock, so nodes' clocks do
-- not matter. `epoch` grows when the lease changes hands (a fencing token).
CREATE TABLE leases (
    name        TEXT        PRIMARY KEY,
    holder      TEXT        NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    epoch       BIGINT      NOT NULL DEFAULT 1
);

-- Each node's heartbeat, for `receiver nodes` and for seeing a dead node.
CREATE TABLE nodes (
    name         TEXT        PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    info         JSONB       NOT NULL DEFAULT '{}'
);
