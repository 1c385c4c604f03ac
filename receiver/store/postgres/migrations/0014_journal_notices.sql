-- Every commit that stores signals tells the other nodes: one NOTIFY journal_committed per
-- transaction, its payload the newest seq (as text), delivered only once the transaction has
-- committed. Each node's coordinator LISTENs (receiver/store/postgres/store.py
-- `wait_commits`) and its dispatcher reads at once, where it polled the store 50 times a
-- second; a slow poll stays as the fallback for a notice missed (a lost connection).
-- A statement trigger: one per append's COPY, not one per row, and no extra round trip. The
-- newest seq is read under the journal lock the append holds, so it is this transaction's
-- last row; the payloads reach a listener in commit order, each covering every seq before it.
-- The NOTIFY's lock at commit serializes committing transactions that notify; appends are
-- serialized by the journal lock already.
CREATE FUNCTION journal_committed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('journal_committed', (SELECT max(seq) FROM signals)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER signals_committed AFTER INSERT ON signals
    FOR EACH STATEMENT EXECUTE FUNCTION journal_committed();
