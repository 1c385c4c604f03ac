-- signals_by_account (effective_account, received_us) served no query: every account filter
-- (history, the console's list, history --follow) is `effective_account = ? OR
-- upper(account) = ?`, which no index on effective_account alone can answer, so the planner
-- reads signals_by_time, the primary key or the table (EXPLAIN QUERY PLAN is the same with and
-- without it, before and after ANALYZE). It cost every append one more scattered index page
-- per account in the batch: about a fifth of the append's CPU per row at 50 rows. The
-- duplicate lookup reads signals_by_dedupe. PostgreSQL drops it too (its 0011).
DROP INDEX IF EXISTS signals_by_account;
