-- What the workers call: `switchyard_apply_reported(group, lock_ids,
-- batch)`. It refuses, before anything is written, a batch holding a type
-- the group's function does not apply (SQLSTATE 22023: the batch is then
-- redone event by event, where that event is dead-lettered as
-- `type_not_handled`), calls the group's function, and returns one row per
-- event of the batch: `applied`, `duplicate`, or the failure's kind. The
-- caller treats an event with no row as an error, never as applied.
--
-- The types each function applies are listed here, beside
-- `ConsumerGroup::handles` (`shared/src/groups.rs`); the tests hold the
-- two to the same verdicts.
--
-- This file is the function's current source. It is applied at every
-- start after the migrations when it differs from the source the database
-- last applied (`db/functions/README.md`).

CREATE OR REPLACE FUNCTION switchyard_apply_reported(consumer_group TEXT, lock_ids BIGINT[], batch JSONB)
RETURNS TABLE (event_index INTEGER, verdict TEXT, verdict_sku TEXT, verdict_quantity BIGINT)
LANGUAGE plpgsql
AS $$
DECLARE
    applied_types TEXT[] := CASE consumer_group
        WHEN 'orders' THEN ARRAY['customer.registered', 'order.placed', 'payment.captured',
                                 'payment.failed', 'order.shipped', 'order.cancelled']
        WHEN 'inventory' THEN ARRAY['product.listed', 'product.price_changed',
                                    'inventory.restocked', 'order.placed', 'order.cancelled']
        WHEN 'sales' THEN ARRAY['order.placed', 'payment.captured', 'order.cancelled']
    END;
    indexes   INTEGER[];
    unapplied TEXT;
    reported  switchyard_failure[];
BEGIN
    IF applied_types IS NULL THEN
        RAISE EXCEPTION 'unknown consumer group %', consumer_group
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One pass over the batch (about 0.6 us an event, next to tens of us
    -- the group's function spends on it).
    SELECT coalesce(array_agg(e.i), '{}'),
           min(coalesce(e.type, 'untyped'))
               FILTER (WHERE e.type IS NULL OR NOT (e.type = ANY (applied_types)))
    INTO indexes, unapplied
    FROM jsonb_to_recordset(batch) AS e(i INTEGER, type TEXT);
    IF unapplied IS NOT NULL THEN
        RAISE EXCEPTION 'the % function applies no % events', consumer_group, unapplied
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF consumer_group = 'orders' THEN
        SELECT coalesce(array_agg(ROW(r.*)::switchyard_failure), '{}') INTO reported
        FROM switchyard_apply_orders(lock_ids, batch) AS r;
    ELSIF consumer_group = 'inventory' THEN
        SELECT coalesce(array_agg(ROW(r.*)::switchyard_failure), '{}') INTO reported
        FROM switchyard_apply_inventory(lock_ids, batch) AS r;
    ELSE
        SELECT coalesce(array_agg(ROW(r.*)::switchyard_failure), '{}') INTO reported
        FROM switchyard_apply_sales(lock_ids, batch) AS r;
    END IF;
    RETURN QUERY
        SELECT f.i, f.kind, f.sku, f.quantity FROM UNNEST(reported) AS f
        UNION ALL
        SELECT t.i, 'applied'::TEXT, NULL::TEXT, NULL::BIGINT
        FROM UNNEST(indexes) AS t(i)
        WHERE t.i <> ALL (SELECT f.i FROM UNNEST(reported) AS f);
END
$$;

