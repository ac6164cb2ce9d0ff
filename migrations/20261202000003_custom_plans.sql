-- The set-wise functions plan their statements for each call's batch.
-- PL/pgSQL keeps a statement's plan for the session and, after five calls,
-- may switch to a generic plan, blind to how many events the batch holds;
-- which plan a session ends up with depends on its first batches. Draining
-- the store mix with three worker processes, some sessions ran
-- switchyard_apply_orders four times slower (17.3 s against 4.1-4.4 s of
-- function time for the same 61,695 deliveries; PostgreSQL's CPU per
-- delivery 349 against 151-158 us) in one run of three, the runs with a
-- custom plan every call none. Planning each call costs less than one bad
-- generic plan.
ALTER FUNCTION switchyard_apply_orders(BIGINT[], JSONB) SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION switchyard_apply_inventory(BIGINT[], JSONB) SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION switchyard_apply_sales(BIGINT[], JSONB) SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION switchyard_lock_and_select(TEXT, BIGINT[], JSONB) SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION switchyard_level_batches(JSONB, INTEGER[]) SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION switchyard_claim(TEXT, JSONB, INTEGER[], switchyard_failure[]) SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION switchyard_duplicates(JSONB, INTEGER[]) SET plan_cache_mode = force_custom_plan;
