-- The groups' functions have one current source each, in
-- `db/functions/*.sql`, applied after the migrations at every start when
-- it differs from what the database last applied (until now a chain of
-- migrations redefined them with CREATE OR REPLACE: `set_wise_batches`,
-- `level_batches`, `inventory_order_levels`, `lean_calls`,
-- `one_statement_per_level`, `claims_first`, `every_event_reported`).
-- This table records, per file, the source applied and the newest
-- migration of the build that applied it: a build older than that never
-- puts its own source back (during a rolling upgrade).

CREATE TABLE switchyard_function_sources (
    name          TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    applied_by    BIGINT NOT NULL,
    applied_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
