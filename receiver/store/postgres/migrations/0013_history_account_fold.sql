-- The account received is folded to upper case in ASCII letters only, as SQLite's upper()
-- folds it (receiver/store/history_sql.py, POSTGRES.received): PostgreSQL's upper() follows
-- the database's locale, so under en_US.UTF-8, C.UTF-8 or ICU "é12" typed also found a signal
-- received as "é12" (upper: "É12"), which SQLite and the in-memory store do not find. The
-- partial index of 0012 is rebuilt on the expression the history's lookup now uses.
DROP INDEX IF EXISTS signals_by_account_as_received;
CREATE INDEX signals_by_account_as_received ON signals (upper(account COLLATE "C"))
    WHERE effective_account IS DISTINCT FROM upper(account COLLATE "C");
