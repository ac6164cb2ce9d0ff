-- The `sales` group's rule: per-order category totals, counted when an
-- order is paid and uncounted when it is cancelled; the `sales_daily` view
-- sums them per day, category and currency.
--
-- `switchyard_apply_sales(lock_ids, batch)`: same call and results as
-- `switchyard_apply_orders` (`orders.sql`); its failure is
-- `order_unknown` (a payment or cancellation before its order).
--
-- This file is the function's current source. It is applied at every
-- start after the migrations when it differs from the source the database
-- last applied (`db/functions/README.md`).

CREATE OR REPLACE FUNCTION switchyard_apply_sales(lock_ids BIGINT[], batch JSONB)
RETURNS TABLE (failed_index INTEGER, failure TEXT, failed_sku TEXT, failed_quantity BIGINT)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    todo          INTEGER[];
    copies        INTEGER[];
    top_level     INTEGER;
    batch_types   TEXT[];
    step          RECORD;
    step_failures switchyard_failure[];
    failures      switchyard_failure[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(id) FROM UNNEST(lock_ids) WITH ORDINALITY AS t(id, n) ORDER BY n;
    -- Claimed first: an event is new when its claim is inserted (the
    -- first copy of each id in the batch); the claims of events that fail
    -- are removed at the end.
    WITH events AS (
        SELECT e.i, e.id, e.type, e.lvl
        FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT, lvl INTEGER)
    ), claimed AS (
        INSERT INTO processed_events (consumer_group, event_id, event_type)
        SELECT DISTINCT ON (e.id) 'sales', e.id, e.type FROM events e
        ORDER BY e.id, e.i
        ON CONFLICT DO NOTHING
        RETURNING event_id
    )
    SELECT coalesce(array_agg(d.i) FILTER (WHERE NOT d.copy), '{}'),
           coalesce(array_agg(d.i) FILTER (WHERE d.copy), '{}'),
           coalesce(max(d.lvl) FILTER (WHERE NOT d.copy), 0),
           coalesce(array_agg(DISTINCT d.type) FILTER (WHERE NOT d.copy), '{}')
    INTO todo, copies, top_level, batch_types
    FROM (SELECT e.i, e.lvl, e.type,
                 row_number() OVER (PARTITION BY e.id ORDER BY e.i) > 1
                 OR e.id NOT IN (SELECT claimed.event_id FROM claimed) AS copy
          FROM events e) AS d;
    FOR step IN
        SELECT 0 AS level, batch_types AS types, batch AS events
        WHERE top_level = 0 AND cardinality(copies) = 0
        UNION ALL
        (SELECT (e.value ->> 'lvl')::INTEGER,
                array_agg(DISTINCT e.value ->> 'type'),
                jsonb_agg(e.value ORDER BY (e.value ->> 'i')::INTEGER)
         FROM jsonb_array_elements(batch) AS e
         JOIN UNNEST(todo) AS t(i) ON t.i = (e.value ->> 'i')::INTEGER
         WHERE top_level > 0 OR cardinality(copies) > 0
         GROUP BY 1
         ORDER BY 1)
    LOOP
        -- A level holds at most one event per order: every type of the
        -- level is applied in this one statement.
        WITH ev AS MATERIALIZED (
            SELECT e.* FROM jsonb_to_recordset(step.events)
                AS e(i INTEGER, type TEXT, order_id UUID, currency TEXT, categories JSONB, day DATE)
        ), placed AS (
            INSERT INTO sales_orders (order_id, currency, categories)
            SELECT ev.order_id, ev.currency, ev.categories FROM ev
            WHERE ev.type = 'order.placed'
            ORDER BY ev.order_id
            ON CONFLICT (order_id) DO NOTHING
        ), current AS (
            SELECT o.order_id, o.paid_on FROM sales_orders o
            WHERE o.order_id = ANY (ARRAY(
                SELECT ev.order_id FROM ev WHERE ev.type IN ('payment.captured', 'order.cancelled')))
            ORDER BY o.order_id FOR UPDATE
        ), updated AS (
            -- A payment counts once, and for an order already cancelled
            -- nets to zero; a cancellation uncounts.
            UPDATE sales_orders o
            SET paid_on = CASE WHEN x.type = 'payment.captured' THEN x.day ELSE o.paid_on END,
                counted = CASE WHEN x.type = 'payment.captured' THEN NOT o.cancelled ELSE false END,
                cancelled = x.type = 'order.cancelled' OR o.cancelled
            FROM ev x JOIN current c USING (order_id)
            WHERE o.order_id = x.order_id
              AND (x.type = 'order.cancelled' OR (x.type = 'payment.captured' AND c.paid_on IS NULL))
              AND o.order_id = ANY (ARRAY(SELECT order_id FROM current))
        )
        SELECT coalesce(array_agg(ROW(x.i, 'order_unknown'::TEXT, NULL::TEXT, NULL::BIGINT)::switchyard_failure), '{}')
        INTO step_failures
        FROM ev x
        WHERE x.type IN ('payment.captured', 'order.cancelled')
          AND x.order_id NOT IN (SELECT order_id FROM current);
        failures := failures || step_failures;
    END LOOP;
    IF cardinality(failures) > 0 THEN
        DELETE FROM processed_events p
        USING jsonb_to_recordset(batch) AS e(i INTEGER, id UUID)
        WHERE p.consumer_group = 'sales' AND p.event_id = e.id
          AND e.i IN (SELECT f.i FROM UNNEST(failures) AS f);
    END IF;
    RETURN QUERY
        SELECT c.i, 'duplicate'::TEXT, NULL::TEXT, NULL::BIGINT FROM UNNEST(copies) AS c(i)
        UNION ALL
        SELECT * FROM UNNEST(failures);
END
$$;

