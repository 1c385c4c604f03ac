-- History by account (`receiver history --account`, the console's list, --follow) without
-- walking the journal. The filter is `effective_account = X OR upper(account) = X`; its rows
-- are found by index (receiver/store/history_sql.py, account_rows):
-- - effective_account in each ASCII spelling of X, with a dedupe key: signals_by_dedupe
--   (0009), already there; without one (the receiver's own signals, supervision troubles):
--   signals_by_account_unkeyed, which holds only those few rows;
-- - account = X COLLATE NOCASE (SQLite's upper folds ASCII only: the same rows as
--   upper(account) = X) among rows whose effective account is not the account received
--   (accounts on a line with a prefix, numbers typed otherwise): signals_by_account_as_received.
--   A row whose two accounts are the same is found by the first lookup.
-- Both are partial, and neither calls an SQL function: an index with one (upper(account), or
-- a WHERE calling upper, length or glob) cost every append 8-15 us per row in a 50-row INSERT,
-- even for rows it did not hold; these cost about nothing for a row they do not hold.
CREATE INDEX signals_by_account_unkeyed ON signals (effective_account)
    WHERE dedupe_key IS NULL;
CREATE INDEX signals_by_account_as_received ON signals (account COLLATE NOCASE)
    WHERE effective_account IS NOT account;
