-- Each level's events split out of the batch once, so a statement reads
-- only its level's events, and the batch's indexes matched by hash join:
-- the set-wise functions of `set_wise_batches` re-read the whole batch in
-- every statement of every level and compared every index with every
-- other (`= ANY (todo)`), a cost that grew with the square of the batch
-- size (a batch of 256 store events took five times one of 128).
-- Same signatures and same results: workers of the previous version call
-- these as they are.

-- The events to apply, per level (ascending), with the types present.
-- The helpers are PL/pgSQL, whose statement plans are kept for the
-- session: PostgreSQL plans the body of a SQL function that cannot be
-- inlined on every call, which cost a small batch more than its work.
CREATE FUNCTION switchyard_level_batches(batch JSONB, todo INTEGER[])
RETURNS TABLE (level INTEGER, types TEXT[], events JSONB)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT (e.value ->> 'lvl')::INTEGER,
           array_agg(DISTINCT e.value ->> 'type'),
           jsonb_agg(e.value ORDER BY (e.value ->> 'i')::INTEGER)
    FROM jsonb_array_elements(batch) AS e
    JOIN UNNEST(todo) AS t(i) ON t.i = (e.value ->> 'i')::INTEGER
    GROUP BY 1
    ORDER BY 1;
END
$$;

CREATE OR REPLACE FUNCTION switchyard_claim(consumer_group TEXT, batch JSONB, todo INTEGER[], failures switchyard_failure[])
RETURNS SETOF switchyard_failure
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO processed_events (consumer_group, event_id, event_type)
    SELECT switchyard_claim.consumer_group, e.id, e.type
    FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT)
    JOIN UNNEST(todo) AS t(i) ON t.i = e.i
    WHERE NOT EXISTS (SELECT FROM UNNEST(failures) AS f WHERE f.i = e.i)
    ORDER BY e.id;
    RETURN QUERY SELECT * FROM UNNEST(failures);
END
$$;

CREATE OR REPLACE FUNCTION switchyard_duplicates(batch JSONB, todo INTEGER[])
RETURNS SETOF switchyard_failure
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT e.i, 'duplicate'::TEXT, NULL::TEXT, NULL::BIGINT
    FROM jsonb_to_recordset(batch) AS e(i INTEGER)
    LEFT JOIN UNNEST(todo) AS t(i) ON t.i = e.i
    WHERE t.i IS NULL;
END
$$;

CREATE OR REPLACE FUNCTION switchyard_apply_orders(lock_ids BIGINT[], batch JSONB)
RETURNS TABLE (failed_index INTEGER, failure TEXT, failed_sku TEXT, failed_quantity BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    todo          INTEGER[];
    step          RECORD;
    step_failures switchyard_failure[];
    failures      switchyard_failure[] := '{}';
BEGIN
    todo := switchyard_lock_and_select('orders', lock_ids, batch);
    RETURN QUERY SELECT * FROM switchyard_duplicates(batch, todo);
    FOR step IN SELECT * FROM switchyard_level_batches(batch, todo) LOOP
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
    RETURN QUERY SELECT * FROM switchyard_claim('orders', batch, todo, failures);
END
$$;

CREATE OR REPLACE FUNCTION switchyard_apply_inventory(lock_ids BIGINT[], batch JSONB)
RETURNS TABLE (failed_index INTEGER, failure TEXT, failed_sku TEXT, failed_quantity BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    todo          INTEGER[];
    step          RECORD;
    step_failures switchyard_failure[];
    failures      switchyard_failure[] := '{}';
BEGIN
    todo := switchyard_lock_and_select('inventory', lock_ids, batch);
    RETURN QUERY SELECT * FROM switchyard_duplicates(batch, todo);
    FOR step IN SELECT * FROM switchyard_level_batches(batch, todo) LOOP
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
            -- Every line's units or none: an order short of any SKU (the
            -- first in byte order, as the per-event handler) reserves nothing.
            WITH wanted AS (
                SELECT e.i, e.order_id, w.sku, w.quantity
                FROM jsonb_to_recordset(step.events)
                    AS e(i INTEGER, type TEXT, lvl INTEGER, order_id UUID, wanted JSONB)
                CROSS JOIN LATERAL jsonb_to_recordset(e.wanted) AS w(sku TEXT, quantity BIGINT)
                WHERE e.type = 'order.placed'
            ), available AS (
                SELECT s.sku, s.on_hand - s.reserved AS free FROM stock s
                WHERE s.sku = ANY (ARRAY(SELECT wanted.sku FROM wanted))
                ORDER BY s.sku FOR UPDATE
            ), short AS (
                SELECT DISTINCT ON (w.i) w.i, w.sku, w.quantity
                FROM wanted w LEFT JOIN available a USING (sku)
                WHERE a.free IS NULL OR a.free < w.quantity
                ORDER BY w.i, w.sku COLLATE "C"
            ), reserved AS (
                UPDATE stock s SET reserved = s.reserved + w.quantity
                FROM wanted w
                WHERE s.sku = w.sku AND w.i NOT IN (SELECT short.i FROM short)
                  AND s.sku = ANY (ARRAY(SELECT sku FROM wanted))
            ), held AS (
                INSERT INTO stock_reservations (order_id, sku, quantity)
                SELECT w.order_id, w.sku, w.quantity FROM wanted w
                WHERE w.i NOT IN (SELECT short.i FROM short)
            )
            SELECT coalesce(array_agg(ROW(short.i, 'insufficient_stock'::TEXT, short.sku, short.quantity)::switchyard_failure), '{}') INTO step_failures
            FROM short;
            failures := failures || step_failures;
        END IF;
    END LOOP;
    RETURN QUERY SELECT * FROM switchyard_claim('inventory', batch, todo, failures);
END
$$;

CREATE OR REPLACE FUNCTION switchyard_apply_sales(lock_ids BIGINT[], batch JSONB)
RETURNS TABLE (failed_index INTEGER, failure TEXT, failed_sku TEXT, failed_quantity BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    todo          INTEGER[];
    step          RECORD;
    step_failures switchyard_failure[];
    failures      switchyard_failure[] := '{}';
BEGIN
    todo := switchyard_lock_and_select('sales', lock_ids, batch);
    RETURN QUERY SELECT * FROM switchyard_duplicates(batch, todo);
    FOR step IN SELECT * FROM switchyard_level_batches(batch, todo) LOOP
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
    RETURN QUERY SELECT * FROM switchyard_claim('sales', batch, todo, failures);
END
$$;
