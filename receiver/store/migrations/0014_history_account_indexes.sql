-- History by account (`receiver history --account`, the console's list, --follow) without
-- walking the journal. The filter is `effective_account = X OR upper(account) = X`; it is read
-- as three disjoint indexed lookups (receiver/store/history_sql.py):
-- - effective_account = X with a dedupe key: signals_by_dedupe (0009), already there;
-- - effective_account = X without one (the receiver's own signals, supervision troubles): the
--   index below, which holds only those rows;
-- - upper(account) = X where the effective account is not the upper-cased account received
--   (accounts on a line with a prefix, bridges known by serial): the second index below. An
--   unknown account's effective account is its upper-cased number, so those rows are not in it.
-- Both are partial, so an append pays for a row only when it matches their WHERE.
CREATE INDEX signals_by_account_unkeyed ON signals (effective_account)
    WHERE dedupe_key IS NULL;
CREATE INDEX signals_by_account_as_received ON signals (upper(account))
    WHERE effective_account IS NOT upper(account);
