-- The `inventory` group's rule: products and their prices (the newest
-- event time wins), stock per SKU — restocks add, placed orders reserve
-- (all of an order's SKUs or none), cancellations release.
--
-- `switchyard_apply_inventory(lock_ids, batch)`: same call and results as
-- `switchyard_apply_orders` (`orders.sql`), with one statement per event
-- type per level; orders placed on one SKU share a level and reserve in
-- delivery order within it. Failures: `product_unknown`,
-- `insufficient_stock` (with the SKU and quantity), `order_unknown` (a
-- cancellation with no reservation yet); `handlers/inventory.rs` words
-- them.
--
-- This file is the function's current source. It is applied at every
-- start after the migrations when it differs from the source the database
-- last applied (`db/functions/README.md`).

CREATE OR REPLACE FUNCTION switchyard_apply_inventory(lock_ids BIGINT[], batch JSONB)
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
    tried_through  INTEGER;
    short_index    INTEGER;
    short_sku      TEXT;
    short_quantity BIGINT;
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
        SELECT DISTINCT ON (e.id) 'inventory', e.id, e.type FROM events e
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
        IF 'product.listed' = ANY (step.types) THEN
            -- Name and category from the listing; its price only when it is
            -- newer (by time, then id) than the one that set the current price.
            INSERT INTO products AS p (sku, name, category, price_cents, currency, price_as_of, price_event_id)
            SELECT e.sku, e.name, e.category, e.price, e.currency, e.t, e.id
            FROM jsonb_to_recordset(step.events)
                AS e(i INTEGER, id UUID, type TEXT, lvl INTEGER, t TIMESTAMPTZ, sku TEXT,
                     name TEXT, category TEXT, price BIGINT, currency TEXT)
            WHERE e.type = 'product.listed'
            ORDER BY e.sku
            ON CONFLICT (sku) DO UPDATE SET
                name = EXCLUDED.name,
                category = EXCLUDED.category,
                price_cents = CASE WHEN (p.price_as_of, p.price_event_id) < (EXCLUDED.price_as_of, EXCLUDED.price_event_id)
                                   THEN EXCLUDED.price_cents ELSE p.price_cents END,
                currency = CASE WHEN (p.price_as_of, p.price_event_id) < (EXCLUDED.price_as_of, EXCLUDED.price_event_id)
                                THEN EXCLUDED.currency ELSE p.currency END,
                price_event_id = CASE WHEN (p.price_as_of, p.price_event_id) < (EXCLUDED.price_as_of, EXCLUDED.price_event_id)
                                      THEN EXCLUDED.price_event_id ELSE p.price_event_id END,
                price_as_of = CASE WHEN (p.price_as_of, p.price_event_id) < (EXCLUDED.price_as_of, EXCLUDED.price_event_id)
                                   THEN EXCLUDED.price_as_of ELSE p.price_as_of END;
        END IF;
        IF 'product.price_changed' = ANY (step.types) THEN
            WITH changes AS (
                SELECT e.i, e.id, e.sku, e.price, e.currency, e.t
                FROM jsonb_to_recordset(step.events)
                    AS e(i INTEGER, id UUID, type TEXT, lvl INTEGER, t TIMESTAMPTZ, sku TEXT,
                         price BIGINT, currency TEXT)
                WHERE e.type = 'product.price_changed'
            ), known AS (
                SELECT p.sku FROM products p WHERE p.sku = ANY (ARRAY(SELECT changes.sku FROM changes))
            ), updated AS (
                UPDATE products p
                SET price_cents = c.price, currency = c.currency, price_as_of = c.t, price_event_id = c.id
                FROM changes c
                WHERE p.sku = c.sku AND (p.price_as_of, p.price_event_id) < (c.t, c.id)
                  AND p.sku = ANY (ARRAY(SELECT sku FROM changes))
            )
            SELECT coalesce(array_agg(ROW(c.i, 'product_unknown'::TEXT, NULL::TEXT, NULL::BIGINT)::switchyard_failure), '{}') INTO step_failures
            FROM changes c
            WHERE c.sku NOT IN (SELECT sku FROM known);
            failures := failures || step_failures;
        END IF;
        IF 'inventory.restocked' = ANY (step.types) THEN
            INSERT INTO stock (sku, on_hand)
            SELECT e.sku, e.quantity
            FROM jsonb_to_recordset(step.events)
                AS e(i INTEGER, type TEXT, lvl INTEGER, sku TEXT, quantity BIGINT)
            WHERE e.type = 'inventory.restocked'
            ORDER BY e.sku
            ON CONFLICT (sku) DO UPDATE SET on_hand = stock.on_hand + EXCLUDED.on_hand;
        END IF;
        IF 'order.cancelled' = ANY (step.types) THEN
            WITH cancelling AS (
                SELECT e.i, e.order_id
                FROM jsonb_to_recordset(step.events)
                    AS e(i INTEGER, type TEXT, lvl INTEGER, order_id UUID)
                WHERE e.type = 'order.cancelled'
            ), held AS (
                SELECT r.order_id, r.sku, r.quantity, r.released FROM stock_reservations r
                WHERE r.order_id = ANY (ARRAY(SELECT cancelling.order_id FROM cancelling))
                ORDER BY r.order_id, r.sku FOR UPDATE
            ), freed AS (
                UPDATE stock s SET reserved = s.reserved - h.quantity
                FROM (SELECT held.sku, sum(held.quantity) AS quantity
                      FROM held WHERE NOT held.released GROUP BY held.sku) AS h
                WHERE s.sku = h.sku AND s.sku = ANY (ARRAY(SELECT sku FROM held))
            ), marked AS (
                UPDATE stock_reservations r SET released = true
                WHERE r.order_id = ANY (ARRAY(SELECT held.order_id FROM held))
            )
            SELECT coalesce(array_agg(ROW(x.i, 'order_unknown'::TEXT, NULL::TEXT, NULL::BIGINT)::switchyard_failure), '{}') INTO step_failures
            FROM cancelling x
            WHERE x.order_id NOT IN (SELECT order_id FROM held);
            failures := failures || step_failures;
        END IF;
        IF 'order.placed' = ANY (step.types) THEN
            -- The orders of a level may share SKUs (orders placed on a SKU
            -- share a level; any other event on it starts a new one). Each
            -- reserves in delivery order, every line's units or none: an
            -- order short of any SKU (the first in byte order is reported)
            -- reserves nothing, and the orders after it are tried again
            -- against what is left. One pass when none is short, one more
            -- per short order.
            tried_through := -1;
            LOOP
                WITH wanted AS (
                    SELECT e.i, e.order_id, w.sku, w.quantity
                    FROM jsonb_to_recordset(step.events)
                        AS e(i INTEGER, type TEXT, lvl INTEGER, order_id UUID, wanted JSONB)
                    CROSS JOIN LATERAL jsonb_to_recordset(e.wanted) AS w(sku TEXT, quantity BIGINT)
                    WHERE e.type = 'order.placed' AND e.i > tried_through
                ), available AS (
                    SELECT s.sku, s.on_hand - s.reserved AS free FROM stock s
                    WHERE s.sku = ANY (ARRAY(SELECT wanted.sku FROM wanted))
                    ORDER BY s.sku FOR UPDATE
                ), demand AS (
                    -- What a line needs with the earlier orders' lines on its SKU.
                    SELECT w.i, w.order_id, w.sku, w.quantity, a.free,
                           sum(w.quantity) OVER (PARTITION BY w.sku ORDER BY w.i) AS needed
                    FROM wanted w LEFT JOIN available a USING (sku)
                ), first_short AS (
                    SELECT min(d.i) AS i FROM demand d WHERE d.free IS NULL OR d.free < d.needed
                ), fitting AS (
                    SELECT d.order_id, d.sku, d.quantity FROM demand d
                    WHERE d.i < coalesce((SELECT first_short.i FROM first_short), 2147483647)
                ), reserved AS (
                    UPDATE stock s SET reserved = s.reserved + f.quantity
                    FROM (SELECT fitting.sku, sum(fitting.quantity) AS quantity
                          FROM fitting GROUP BY fitting.sku) AS f
                    WHERE s.sku = f.sku AND s.sku = ANY (ARRAY(SELECT fitting.sku FROM fitting))
                ), held AS (
                    INSERT INTO stock_reservations (order_id, sku, quantity)
                    SELECT f.order_id, f.sku, f.quantity FROM fitting f
                )
                SELECT d.i, d.sku, d.quantity INTO short_index, short_sku, short_quantity
                FROM demand d
                WHERE d.i = (SELECT first_short.i FROM first_short)
                  AND (d.free IS NULL OR d.free < d.needed)
                ORDER BY d.sku COLLATE "C"
                LIMIT 1;
                EXIT WHEN short_index IS NULL;
                failures := failures
                    || ROW(short_index, 'insufficient_stock', short_sku, short_quantity)::switchyard_failure;
                tried_through := short_index;
            END LOOP;
        END IF;
    END LOOP;
    IF cardinality(failures) > 0 THEN
        DELETE FROM processed_events p
        USING jsonb_to_recordset(batch) AS e(i INTEGER, id UUID)
        WHERE p.consumer_group = 'inventory' AND p.event_id = e.id
          AND e.i IN (SELECT f.i FROM UNNEST(failures) AS f);
    END IF;
    RETURN QUERY
        SELECT c.i, 'duplicate'::TEXT, NULL::TEXT, NULL::BIGINT FROM UNNEST(copies) AS c(i)
        UNION ALL
        SELECT * FROM UNNEST(failures);
END
$$;

