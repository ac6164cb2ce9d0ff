-- The `orders` group's rule: customers, orders and their lines, payments
-- and shipments; status placed → paid → shipped, or cancelled.
--
-- `switchyard_apply_orders(lock_ids, batch)` applies a batch of events
-- (the JSON `handlers/fields.rs` builds: index `i`, `id`, `type`, level
-- `lvl`, time `t` and the type's fields). It takes the advisory locks,
-- claims each new event in `processed_events`, applies level by level
-- (one statement per level; a level holds at most one event per order),
-- removes the claims of the events that failed, and returns one row per
-- event it did not apply: `duplicate`, or the failure's kind
-- (`order_unknown`, `duplicate_order`, `ship_cancelled_order`,
-- `order_unpaid`, `cancel_shipped_order`; `handlers/orders.rs` words
-- them). Workers call it through `switchyard_apply_reported`, with a whole
-- batch (set-wise) or one event inside a savepoint (event by event).
--
-- This file is the function's current source. It is applied at every
-- start after the migrations when it differs from the source the database
-- last applied (`db/functions/README.md`).

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
    -- Claimed first: an event is new when its claim is inserted (the
    -- first copy of each id in the batch); the claims of events that fail
    -- are removed at the end.
    WITH events AS (
        SELECT e.i, e.id, e.type, e.lvl
        FROM jsonb_to_recordset(batch) AS e(i INTEGER, id UUID, type TEXT, lvl INTEGER)
    ), claimed AS (
        INSERT INTO processed_events (consumer_group, event_id, event_type)
        SELECT DISTINCT ON (e.id) 'orders', e.id, e.type FROM events e
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
    IF cardinality(failures) > 0 THEN
        DELETE FROM processed_events p
        USING jsonb_to_recordset(batch) AS e(i INTEGER, id UUID)
        WHERE p.consumer_group = 'orders' AND p.event_id = e.id
          AND e.i IN (SELECT f.i FROM UNNEST(failures) AS f);
    END IF;
    RETURN QUERY
        SELECT c.i, 'duplicate'::TEXT, NULL::TEXT, NULL::BIGINT FROM UNNEST(copies) AS c(i)
        UNION ALL
        SELECT * FROM UNNEST(failures);
END
$$;

