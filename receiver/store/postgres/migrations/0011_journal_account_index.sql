-- signals_by_account (effective_account, received_us) served no query: every account filter
-- (history, the console's list, history --follow) is `effective_account = %s OR
-- upper(account) = %s`, which no index on effective_account alone can answer, so the planner
-- reads signals_by_time or the primary key (EXPLAIN is the same with and without it, after
-- ANALYZE). It cost every append one more index entry per row. SQLite drops it too (its 0013).
DROP INDEX IF EXISTS signals_by_account;
