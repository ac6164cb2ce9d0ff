-- The set-wise functions keep one plan per statement for the session
-- again, made so that no table's size when it was planned can make it
-- slow later: sequential scans are off inside them, so every table is
-- read through an index, bounded by the batch's keys (each lookup is an
-- `= ANY (ARRAY(...))` of the batch's keys, a correlated probe or an
-- insert's arbiter index).
--
-- Migration `custom_plans` had them plan every call: PL/pgSQL's default
-- switched to a generic plan after five calls, and a plan made while a
-- table was small read all of it once it had grown (sequential scans of
-- `sales_orders` took 3.6-4.0 ms per call against 0.4-1.2 ms). Planning
-- every statement of every level on every call cost a fifth of the
-- database's time on a backlog, more on the small batches of a light
-- load. Draining 30,000 store events (`pg_stat_statements`, same
-- session): custom plans 76-89 us of PostgreSQL CPU per delivery, these
-- 56-63; the per-statement execution times stayed those of custom plans.
ALTER FUNCTION switchyard_apply_orders(BIGINT[], JSONB) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION switchyard_apply_inventory(BIGINT[], JSONB) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION switchyard_apply_sales(BIGINT[], JSONB) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION switchyard_lock_and_select(TEXT, BIGINT[], JSONB) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION switchyard_level_batches(JSONB, INTEGER[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION switchyard_claim(TEXT, JSONB, INTEGER[], switchyard_failure[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION switchyard_duplicates(JSONB, INTEGER[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION switchyard_apply_orders(BIGINT[], JSONB) SET enable_seqscan = off;
ALTER FUNCTION switchyard_apply_inventory(BIGINT[], JSONB) SET enable_seqscan = off;
ALTER FUNCTION switchyard_apply_sales(BIGINT[], JSONB) SET enable_seqscan = off;
ALTER FUNCTION switchyard_lock_and_select(TEXT, BIGINT[], JSONB) SET enable_seqscan = off;
ALTER FUNCTION switchyard_level_batches(JSONB, INTEGER[]) SET enable_seqscan = off;
ALTER FUNCTION switchyard_claim(TEXT, JSONB, INTEGER[], switchyard_failure[]) SET enable_seqscan = off;
ALTER FUNCTION switchyard_duplicates(JSONB, INTEGER[]) SET enable_seqscan = off;
