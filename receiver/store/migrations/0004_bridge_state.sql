-- What the receiver last heard from each video bridge, for the bridge status report and for
-- deciding whether a disarmed bridge's alarm goes to automation.
--
-- Written by the bridge listener's state writer after the journal committed the frame that
-- changed it (coalesced: one worker-thread call for many bridges). Last seen and the offline
-- trouble live in `links` ("bridge:<serial>"), and per-zone troubles in `links` too
-- ("bridge:<serial>/camera/<channel>", ".../tamper/<channel>", ".../power"): those are written
-- in the same transaction as the signals. `armed_us` lets a restart prefer a newer arming
-- signal from the journal over this row.
CREATE TABLE bridge_state (
    serial        TEXT    PRIMARY KEY,          -- upper-cased, as in bridges.serial
    model         TEXT,                         -- as the bridge reported it in HELLO
    channels      INTEGER,
    firmware      TEXT,
    armed         TEXT    CHECK (armed IN ('armed', 'disarmed', 'partial')),
    armed_us      INTEGER,                      -- receiver time of the last arming change
    peer          TEXT,
    connected_us  INTEGER,                      -- when the last HELLO was accepted
    updated_us    INTEGER NOT NULL              -- when this row was written
);
