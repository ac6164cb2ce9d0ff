-- The set-wise functions after migration 20261204000001_one_statement_per_level.sql alone (2e7e998): lean_calls' inventory, one statement per level in orders and sales.
CREATE OR REPLACE FUNCTION switchyard_apply_orders(lock_ids BIGINT[], batch JSONB)
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
    -- A copy: a later event with an earlier one's id, or one processed
    -- before (one index probe per event, whatever the statistics say).
    SELECT coalesce(array_agg(d.i) FILTER (WHERE NOT d.copy), '{}'),
           coalesce(array_agg(d.i) FILTER (WHERE d.copy), '{}'),
           coalesce(max(d.lvl) FILTER (WHERE NOT d.copy), 0),
           coalesce(array_agg(DISTINCT d.type) FILTER (WHERE NOT d.copy), '{}')
    INTO todo, copies, top_level, batch_types
    FROM (SELECT e.i, e.lvl, e.type,
                 row_number() OVER (PARTITION BY e.id ORDER BY e.i) > 1
                 OR (SELECT true FROM processed_events p
                     WHERE p.consumer_group = 'orders' AND p.event_id = e.id) IS NOT NULL AS copy
          FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT, lvl INTEGER)) AS d;
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
        IF 'customer.registered' = ANY (step.types) THEN
            INSERT INTO customers (customer_id, email, name, registered_at)
            SELECT e.customer_id, e.email, e.name, e.t
            FROM jsonb_to_recordset(step.events)
                AS e(i INTEGER, type TEXT, lvl INTEGER, t TIMESTAMPTZ, customer_id UUID, email TEXT, name TEXT)
            WHERE e.type = 'customer.registered'
            ORDER BY e.customer_id
            ON CONFLICT (customer_id) DO NOTHING;
        END IF;
        IF 'order.placed' = ANY (step.types) THEN
            WITH placed AS (
                SELECT e.i, e.order_id, e.customer_id, e.currency, e.total, e.t, e.lines
                FROM jsonb_to_recordset(step.events)
                    AS e(i INTEGER, type TEXT, lvl INTEGER, t TIMESTAMPTZ, order_id UUID,
                         customer_id UUID, currency TEXT, total BIGINT, lines JSONB)
                WHERE e.type = 'order.placed'
            ), inserted AS (
                INSERT INTO orders (order_id, customer_id, currency, total_cents, status, placed_at)
                SELECT p.order_id, p.customer_id, p.currency, p.total, 'placed', p.t
                FROM placed p ORDER BY p.order_id
                ON CONFLICT (order_id) DO NOTHING
                RETURNING order_id
            ), lines AS (
                INSERT INTO order_lines (order_id, line_number, sku, category, quantity, unit_price_cents)
                SELECT p.order_id, l.n, l.sku, l.category, l.quantity, l.unit_price
                FROM placed p
                JOIN inserted USING (order_id)
                CROSS JOIN LATERAL jsonb_to_recordset(p.lines)
                    AS l(n INTEGER, sku TEXT, category TEXT, quantity BIGINT, unit_price BIGINT)
            )
            SELECT coalesce(array_agg(ROW(p.i, 'duplicate_order'::TEXT, NULL::TEXT, NULL::BIGINT)::switchyard_failure), '{}') INTO step_failures
            FROM placed p
            WHERE p.order_id NOT IN (SELECT order_id FROM inserted);
            failures := failures || step_failures;
        END IF;
        IF 'payment.captured' = ANY (step.types) THEN
            WITH paid AS (
                SELECT e.i, e.order_id, e.payment_id, e.amount, e.currency, e.t
                FROM jsonb_to_recordset(step.events)
                    AS e(i INTEGER, type TEXT, lvl INTEGER, t TIMESTAMPTZ, order_id UUID,
                         payment_id UUID, amount BIGINT, currency TEXT)
                WHERE e.type = 'payment.captured'
            ), current AS (
                SELECT o.order_id FROM orders o
                WHERE o.order_id = ANY (ARRAY(SELECT paid.order_id FROM paid))
                ORDER BY o.order_id FOR UPDATE
            ), recorded AS (
                INSERT INTO payments (payment_id, order_id, outcome, amount_cents, currency, occurred_at)
                SELECT p.payment_id, p.order_id, 'captured', p.amount, p.currency, p.t
                FROM paid p JOIN current USING (order_id)
                ORDER BY p.payment_id
                ON CONFLICT (payment_id) DO NOTHING
            ), updated AS (
                -- A capture never moves a cancelled or shipped order backwards.
                UPDATE orders o
                SET status = CASE WHEN o.status = 'placed' THEN 'paid' ELSE o.status END,
                    paid_at = COALESCE(o.paid_at, p.t)
                FROM paid p JOIN current USING (order_id)
                WHERE o.order_id = p.order_id AND o.order_id = ANY (ARRAY(SELECT order_id FROM current))
            )
            SELECT coalesce(array_agg(ROW(p.i, 'order_unknown'::TEXT, NULL::TEXT, NULL::BIGINT)::switchyard_failure), '{}') INTO step_failures
            FROM paid p
            WHERE p.order_id NOT IN (SELECT order_id FROM current);
            failures := failures || step_failures;
        END IF;
        IF 'payment.failed' = ANY (step.types) THEN
            WITH declined AS (
                SELECT e.i, e.order_id, e.payment_id, e.amount, e.currency, e.reason, e.t
                FROM jsonb_to_recordset(step.events)
                    AS e(i INTEGER, type TEXT, lvl INTEGER, t TIMESTAMPTZ, order_id UUID,
                         payment_id UUID, amount BIGINT, currency TEXT, reason TEXT)
                WHERE e.type = 'payment.failed'
            ), current AS (
                SELECT o.order_id FROM orders o
                WHERE o.order_id = ANY (ARRAY(SELECT declined.order_id FROM declined))
                ORDER BY o.order_id FOR UPDATE
            ), recorded AS (
                INSERT INTO payments (payment_id, order_id, outcome, amount_cents, currency, reason, occurred_at)
                SELECT d.payment_id, d.order_id, 'failed', d.amount, d.currency, d.reason, d.t
                FROM declined d JOIN current USING (order_id)
                ORDER BY d.payment_id
                ON CONFLICT (payment_id) DO NOTHING
            )
            SELECT coalesce(array_agg(ROW(d.i, 'order_unknown'::TEXT, NULL::TEXT, NULL::BIGINT)::switchyard_failure), '{}') INTO step_failures
            FROM declined d
            WHERE d.order_id NOT IN (SELECT order_id FROM current);
            failures := failures || step_failures;
        END IF;
        IF 'order.shipped' = ANY (step.types) THEN
            WITH sent AS (
                SELECT e.i, e.order_id, e.shipment_id, e.carrier, e.tracking_number, e.t
                FROM jsonb_to_recordset(step.events)
                    AS e(i INTEGER, type TEXT, lvl INTEGER, t TIMESTAMPTZ, order_id UUID,
                         shipment_id UUID, carrier TEXT, tracking_number TEXT)
                WHERE e.type = 'order.shipped'
            ), current AS (
                SELECT o.order_id, o.status FROM orders o
                WHERE o.order_id = ANY (ARRAY(SELECT sent.order_id FROM sent))
                ORDER BY o.order_id FOR UPDATE
            ), shippable AS (
                -- Written only when the order is paid (or already shipped).
                SELECT s.* FROM sent s JOIN current c USING (order_id)
                WHERE c.status IN ('paid', 'shipped')
            ), recorded AS (
                INSERT INTO shipments (shipment_id, order_id, carrier, tracking_number, shipped_at)
                SELECT s.shipment_id, s.order_id, s.carrier, s.tracking_number, s.t
                FROM shippable s ORDER BY s.shipment_id
                ON CONFLICT (shipment_id) DO NOTHING
            ), updated AS (
                UPDATE orders o SET status = 'shipped', shipped_at = COALESCE(o.shipped_at, s.t)
                FROM shippable s
                WHERE o.order_id = s.order_id AND o.order_id = ANY (ARRAY(SELECT order_id FROM shippable))
            )
            SELECT coalesce(array_agg(ROW(s.i,
                   CASE WHEN c.status IS NULL THEN 'order_unknown'
                        WHEN c.status = 'cancelled' THEN 'ship_cancelled_order'
                        ELSE 'order_unpaid' END,
                   NULL::TEXT, NULL::BIGINT)::switchyard_failure), '{}') INTO step_failures
            FROM sent s LEFT JOIN current c USING (order_id)
            WHERE c.status IS NULL OR c.status NOT IN ('paid', 'shipped');
            failures := failures || step_failures;
        END IF;
        IF 'order.cancelled' = ANY (step.types) THEN
            WITH cancelling AS (
                SELECT e.i, e.order_id, e.t
                FROM jsonb_to_recordset(step.events)
                    AS e(i INTEGER, type TEXT, lvl INTEGER, t TIMESTAMPTZ, order_id UUID)
                WHERE e.type = 'order.cancelled'
            ), current AS (
                SELECT o.order_id, o.status FROM orders o
                WHERE o.order_id = ANY (ARRAY(SELECT cancelling.order_id FROM cancelling))
                ORDER BY o.order_id FOR UPDATE
            ), updated AS (
                -- Written only when the order has not shipped.
                UPDATE orders o SET status = 'cancelled', cancelled_at = COALESCE(o.cancelled_at, x.t)
                FROM cancelling x JOIN current c USING (order_id)
                WHERE o.order_id = x.order_id AND c.status <> 'shipped'
                  AND o.order_id = ANY (ARRAY(SELECT order_id FROM current))
            )
            SELECT coalesce(array_agg(ROW(x.i,
                   CASE WHEN c.status IS NULL THEN 'order_unknown' ELSE 'cancel_shipped_order' END,
                   NULL::TEXT, NULL::BIGINT)::switchyard_failure), '{}') INTO step_failures
            FROM cancelling x LEFT JOIN current c USING (order_id)
            WHERE c.status IS NULL OR c.status = 'shipped';
            failures := failures || step_failures;
        END IF;
    END LOOP;
    INSERT INTO processed_events (consumer_group, event_id, event_type)
    SELECT 'orders', e.id, e.type
    FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT)
    JOIN UNNEST(todo) AS t(i) ON t.i = e.i
    WHERE NOT EXISTS (SELECT FROM UNNEST(failures) AS f WHERE f.i = e.i)
    ORDER BY e.id;
    RETURN QUERY
        SELECT c.i, 'duplicate'::TEXT, NULL::TEXT, NULL::BIGINT FROM UNNEST(copies) AS c(i)
        UNION ALL
        SELECT * FROM UNNEST(failures);
END
$$;

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
    -- A copy: a later event with an earlier one's id, or one processed
    -- before (one index probe per event, whatever the statistics say).
    SELECT coalesce(array_agg(d.i) FILTER (WHERE NOT d.copy), '{}'),
           coalesce(array_agg(d.i) FILTER (WHERE d.copy), '{}'),
           coalesce(max(d.lvl) FILTER (WHERE NOT d.copy), 0),
           coalesce(array_agg(DISTINCT d.type) FILTER (WHERE NOT d.copy), '{}')
    INTO todo, copies, top_level, batch_types
    FROM (SELECT e.i, e.lvl, e.type,
                 row_number() OVER (PARTITION BY e.id ORDER BY e.i) > 1
                 OR (SELECT true FROM processed_events p
                     WHERE p.consumer_group = 'inventory' AND p.event_id = e.id) IS NOT NULL AS copy
          FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT, lvl INTEGER)) AS d;
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
            -- order short of any SKU (the first in byte order, as the
            -- per-event handler) reserves nothing, and the orders after it
            -- are tried again against what is left. One pass when none is
            -- short, one more per short order.
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
    INSERT INTO processed_events (consumer_group, event_id, event_type)
    SELECT 'inventory', e.id, e.type
    FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT)
    JOIN UNNEST(todo) AS t(i) ON t.i = e.i
    WHERE NOT EXISTS (SELECT FROM UNNEST(failures) AS f WHERE f.i = e.i)
    ORDER BY e.id;
    RETURN QUERY
        SELECT c.i, 'duplicate'::TEXT, NULL::TEXT, NULL::BIGINT FROM UNNEST(copies) AS c(i)
        UNION ALL
        SELECT * FROM UNNEST(failures);
END
$$;

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
    -- A copy: a later event with an earlier one's id, or one processed
    -- before (one index probe per event, whatever the statistics say).
    SELECT coalesce(array_agg(d.i) FILTER (WHERE NOT d.copy), '{}'),
           coalesce(array_agg(d.i) FILTER (WHERE d.copy), '{}'),
           coalesce(max(d.lvl) FILTER (WHERE NOT d.copy), 0),
           coalesce(array_agg(DISTINCT d.type) FILTER (WHERE NOT d.copy), '{}')
    INTO todo, copies, top_level, batch_types
    FROM (SELECT e.i, e.lvl, e.type,
                 row_number() OVER (PARTITION BY e.id ORDER BY e.i) > 1
                 OR (SELECT true FROM processed_events p
                     WHERE p.consumer_group = 'sales' AND p.event_id = e.id) IS NOT NULL AS copy
          FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT, lvl INTEGER)) AS d;
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
        IF 'order.placed' = ANY (step.types) THEN
            INSERT INTO sales_orders (order_id, currency, categories)
            SELECT e.order_id, e.currency, e.categories
            FROM jsonb_to_recordset(step.events)
                AS e(i INTEGER, type TEXT, lvl INTEGER, order_id UUID, currency TEXT, categories JSONB)
            WHERE e.type = 'order.placed'
            ORDER BY e.order_id
            ON CONFLICT (order_id) DO NOTHING;
        END IF;
        IF 'payment.captured' = ANY (step.types) THEN
            -- A payment for an order already cancelled nets to zero.
            WITH paid AS (
                SELECT e.i, e.order_id, e.day
                FROM jsonb_to_recordset(step.events)
                    AS e(i INTEGER, type TEXT, lvl INTEGER, order_id UUID, day DATE)
                WHERE e.type = 'payment.captured'
            ), current AS (
                SELECT o.order_id, o.paid_on FROM sales_orders o
                WHERE o.order_id = ANY (ARRAY(SELECT paid.order_id FROM paid))
                ORDER BY o.order_id FOR UPDATE
            ), updated AS (
                UPDATE sales_orders o SET paid_on = p.day, counted = NOT o.cancelled
                FROM paid p JOIN current c USING (order_id)
                WHERE o.order_id = p.order_id AND c.paid_on IS NULL
                  AND o.order_id = ANY (ARRAY(SELECT order_id FROM current))
            )
            SELECT coalesce(array_agg(ROW(p.i, 'order_unknown'::TEXT, NULL::TEXT, NULL::BIGINT)::switchyard_failure), '{}') INTO step_failures
            FROM paid p
            WHERE p.order_id NOT IN (SELECT order_id FROM current);
            failures := failures || step_failures;
        END IF;
        IF 'order.cancelled' = ANY (step.types) THEN
            WITH cancelling AS (
                SELECT e.i, e.order_id
                FROM jsonb_to_recordset(step.events)
                    AS e(i INTEGER, type TEXT, lvl INTEGER, order_id UUID)
                WHERE e.type = 'order.cancelled'
            ), current AS (
                SELECT o.order_id FROM sales_orders o
                WHERE o.order_id = ANY (ARRAY(SELECT cancelling.order_id FROM cancelling))
                ORDER BY o.order_id FOR UPDATE
            ), updated AS (
                UPDATE sales_orders o SET cancelled = true, counted = false
                FROM current c
                WHERE o.order_id = c.order_id AND o.order_id = ANY (ARRAY(SELECT order_id FROM current))
            )
            SELECT coalesce(array_agg(ROW(x.i, 'order_unknown'::TEXT, NULL::TEXT, NULL::BIGINT)::switchyard_failure), '{}') INTO step_failures
            FROM cancelling x
            WHERE x.order_id NOT IN (SELECT order_id FROM current);
            failures := failures || step_failures;
        END IF;
    END LOOP;
    INSERT INTO processed_events (consumer_group, event_id, event_type)
    SELECT 'sales', e.id, e.type
    FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT)
    JOIN UNNEST(todo) AS t(i) ON t.i = e.i
    WHERE NOT EXISTS (SELECT FROM UNNEST(failures) AS f WHERE f.i = e.i)
    ORDER BY e.id;
    RETURN QUERY
        SELECT c.i, 'duplicate'::TEXT, NULL::TEXT, NULL::BIGINT FROM UNNEST(copies) AS c(i)
        UNION ALL
        SELECT * FROM UNNEST(failures);
END
$$;
CREATE OR REPLACE FUNCTION switchyard_apply_orders(lock_ids BIGINT[], batch JSONB)
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
    -- A copy: a later event with an earlier one's id, or one processed
    -- before (one index probe per event, whatever the statistics say).
    SELECT coalesce(array_agg(d.i) FILTER (WHERE NOT d.copy), '{}'),
           coalesce(array_agg(d.i) FILTER (WHERE d.copy), '{}'),
           coalesce(max(d.lvl) FILTER (WHERE NOT d.copy), 0),
           coalesce(array_agg(DISTINCT d.type) FILTER (WHERE NOT d.copy), '{}')
    INTO todo, copies, top_level, batch_types
    FROM (SELECT e.i, e.lvl, e.type,
                 row_number() OVER (PARTITION BY e.id ORDER BY e.i) > 1
                 OR (SELECT true FROM processed_events p
                     WHERE p.consumer_group = 'orders' AND p.event_id = e.id) IS NOT NULL AS copy
          FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT, lvl INTEGER)) AS d;
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
                AS e(i INTEGER, type TEXT, t TIMESTAMPTZ, customer_id UUID, email TEXT, name TEXT,
                     order_id UUID, currency TEXT, total BIGINT, lines JSONB, payment_id UUID,
                     amount BIGINT, reason TEXT, shipment_id UUID, carrier TEXT, tracking_number TEXT)
        ), registered AS (
            INSERT INTO customers (customer_id, email, name, registered_at)
            SELECT ev.customer_id, ev.email, ev.name, ev.t FROM ev
            WHERE ev.type = 'customer.registered'
            ORDER BY ev.customer_id
            ON CONFLICT (customer_id) DO NOTHING
        ), inserted AS (
            INSERT INTO orders (order_id, customer_id, currency, total_cents, status, placed_at)
            SELECT p.order_id, p.customer_id, p.currency, p.total, 'placed', p.t
            FROM ev p WHERE p.type = 'order.placed'
            ORDER BY p.order_id
            ON CONFLICT (order_id) DO NOTHING
            RETURNING order_id
        ), lines AS (
            INSERT INTO order_lines (order_id, line_number, sku, category, quantity, unit_price_cents)
            SELECT p.order_id, l.n, l.sku, l.category, l.quantity, l.unit_price
            FROM ev p
            JOIN inserted USING (order_id)
            CROSS JOIN LATERAL jsonb_to_recordset(p.lines)
                AS l(n INTEGER, sku TEXT, category TEXT, quantity BIGINT, unit_price BIGINT)
            WHERE p.type = 'order.placed'
        ), current AS (
            SELECT o.order_id, o.status FROM orders o
            WHERE o.order_id = ANY (ARRAY(
                SELECT ev.order_id FROM ev
                WHERE ev.type IN ('payment.captured', 'payment.failed', 'order.shipped', 'order.cancelled')))
            ORDER BY o.order_id FOR UPDATE
        ), judged AS (
            -- Shipped only when paid (or already shipped), cancelled only
            -- when not shipped; a capture never moves an order backwards.
            SELECT ev.*,
                   CASE WHEN c.status IS NULL THEN 'order_unknown'
                        WHEN ev.type = 'order.shipped' AND c.status = 'cancelled' THEN 'ship_cancelled_order'
                        WHEN ev.type = 'order.shipped' AND c.status NOT IN ('paid', 'shipped') THEN 'order_unpaid'
                        WHEN ev.type = 'order.cancelled' AND c.status = 'shipped' THEN 'cancel_shipped_order'
                   END AS failure
            FROM ev LEFT JOIN current c USING (order_id)
            WHERE ev.type IN ('payment.captured', 'payment.failed', 'order.shipped', 'order.cancelled')
        ), paid AS (
            INSERT INTO payments (payment_id, order_id, outcome, amount_cents, currency, reason, occurred_at)
            SELECT j.payment_id, j.order_id,
                   CASE WHEN j.type = 'payment.captured' THEN 'captured' ELSE 'failed' END,
                   j.amount, j.currency, CASE WHEN j.type = 'payment.failed' THEN j.reason END, j.t
            FROM judged j
            WHERE j.failure IS NULL AND j.type IN ('payment.captured', 'payment.failed')
            ORDER BY j.payment_id, j.type = 'payment.failed'
            ON CONFLICT (payment_id) DO NOTHING
        ), shipped AS (
            INSERT INTO shipments (shipment_id, order_id, carrier, tracking_number, shipped_at)
            SELECT j.shipment_id, j.order_id, j.carrier, j.tracking_number, j.t
            FROM judged j
            WHERE j.failure IS NULL AND j.type = 'order.shipped'
            ORDER BY j.shipment_id
            ON CONFLICT (shipment_id) DO NOTHING
        ), updated AS (
            UPDATE orders o
            SET status = CASE j.type
                             WHEN 'payment.captured' THEN CASE WHEN o.status = 'placed' THEN 'paid' ELSE o.status END
                             WHEN 'order.shipped' THEN 'shipped'
                             ELSE 'cancelled' END,
                paid_at = CASE WHEN j.type = 'payment.captured' THEN COALESCE(o.paid_at, j.t) ELSE o.paid_at END,
                shipped_at = CASE WHEN j.type = 'order.shipped' THEN COALESCE(o.shipped_at, j.t) ELSE o.shipped_at END,
                cancelled_at = CASE WHEN j.type = 'order.cancelled' THEN COALESCE(o.cancelled_at, j.t) ELSE o.cancelled_at END
            FROM judged j
            WHERE o.order_id = j.order_id AND j.failure IS NULL
              AND j.type IN ('payment.captured', 'order.shipped', 'order.cancelled')
              AND o.order_id = ANY (ARRAY(
                  SELECT judged.order_id FROM judged
                  WHERE judged.failure IS NULL
                    AND judged.type IN ('payment.captured', 'order.shipped', 'order.cancelled')))
        )
        SELECT coalesce(array_agg(ROW(f.i, f.failure, NULL::TEXT, NULL::BIGINT)::switchyard_failure), '{}')
        INTO step_failures
        FROM (SELECT p.i, 'duplicate_order'::TEXT AS failure FROM ev p
              WHERE p.type = 'order.placed' AND p.order_id NOT IN (SELECT order_id FROM inserted)
              UNION ALL
              SELECT j.i, j.failure FROM judged j WHERE j.failure IS NOT NULL) AS f;
        failures := failures || step_failures;
    END LOOP;
    INSERT INTO processed_events (consumer_group, event_id, event_type)
    SELECT 'orders', e.id, e.type
    FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT)
    JOIN UNNEST(todo) AS t(i) ON t.i = e.i
    WHERE NOT EXISTS (SELECT FROM UNNEST(failures) AS f WHERE f.i = e.i)
    ORDER BY e.id;
    RETURN QUERY
        SELECT c.i, 'duplicate'::TEXT, NULL::TEXT, NULL::BIGINT FROM UNNEST(copies) AS c(i)
        UNION ALL
        SELECT * FROM UNNEST(failures);
END
$$;

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
    -- A copy: a later event with an earlier one's id, or one processed
    -- before (one index probe per event, whatever the statistics say).
    SELECT coalesce(array_agg(d.i) FILTER (WHERE NOT d.copy), '{}'),
           coalesce(array_agg(d.i) FILTER (WHERE d.copy), '{}'),
           coalesce(max(d.lvl) FILTER (WHERE NOT d.copy), 0),
           coalesce(array_agg(DISTINCT d.type) FILTER (WHERE NOT d.copy), '{}')
    INTO todo, copies, top_level, batch_types
    FROM (SELECT e.i, e.lvl, e.type,
                 row_number() OVER (PARTITION BY e.id ORDER BY e.i) > 1
                 OR (SELECT true FROM processed_events p
                     WHERE p.consumer_group = 'sales' AND p.event_id = e.id) IS NOT NULL AS copy
          FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT, lvl INTEGER)) AS d;
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
    INSERT INTO processed_events (consumer_group, event_id, event_type)
    SELECT 'sales', e.id, e.type
    FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT)
    JOIN UNNEST(todo) AS t(i) ON t.i = e.i
    WHERE NOT EXISTS (SELECT FROM UNNEST(failures) AS f WHERE f.i = e.i)
    ORDER BY e.id;
    RETURN QUERY
        SELECT c.i, 'duplicate'::TEXT, NULL::TEXT, NULL::BIGINT FROM UNNEST(copies) AS c(i)
        UNION ALL
        SELECT * FROM UNNEST(failures);
END
$$;
