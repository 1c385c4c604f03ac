-- History by account without walking the journal (SQLite's 0014; receiver/store/history_sql.py).
-- The filter `effective_account = X OR upper(account) = X` is read as two disjoint indexed
-- lookups: effective_account = X by the first index (PostgreSQL's duplicate lookup has a table
-- of its own, so the journal had none on it), and upper(account) = X where the effective
-- account is not the upper-cased account received by the second, partial one (an unknown
-- account's effective account is its upper-cased number: those rows are not in it).
CREATE INDEX signals_by_effective_account ON signals (effective_account);
CREATE INDEX signals_by_account_as_received ON signals (upper(account))
    WHERE effective_account IS DISTINCT FROM upper(account);
