-- Projections of the store's events, one set of tables per consumer group.

-- orders group ------------------------------------------------------------
CREATE TABLE customers (
    customer_id   UUID PRIMARY KEY,
    email         TEXT        NOT NULL,
    name          TEXT        NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE orders (
    order_id     UUID PRIMARY KEY,
    customer_id  UUID        NOT NULL,
    currency     TEXT        NOT NULL,
    total_cents  BIGINT      NOT NULL,
    status       TEXT        NOT NULL CHECK (status IN ('placed', 'paid', 'shipped', 'cancelled')),
    placed_at    TIMESTAMPTZ NOT NULL,
    paid_at      TIMESTAMPTZ,
    shipped_at   TIMESTAMPTZ,
    cancelled_at TIMESTAMPTZ
);

CREATE TABLE order_lines (
    order_id         UUID    NOT NULL REFERENCES orders (order_id),
    line_number      INTEGER NOT NULL,
    sku              TEXT    NOT NULL,
    category         TEXT    NOT NULL,
    quantity         BIGINT  NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT  NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_number)
);

CREATE TABLE payments (
    payment_id   UUID PRIMARY KEY,
    order_id     UUID        NOT NULL,
    outcome      TEXT        NOT NULL CHECK (outcome IN ('captured', 'failed')),
    amount_cents BIGINT      NOT NULL,
    currency     TEXT        NOT NULL,
    reason       TEXT,
    occurred_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE shipments (
    shipment_id     UUID PRIMARY KEY,
    order_id        UUID        NOT NULL,
    carrier         TEXT        NOT NULL,
    tracking_number TEXT        NOT NULL,
    shipped_at      TIMESTAMPTZ NOT NULL
);

-- inventory group ---------------------------------------------------------
CREATE TABLE products (
    sku            TEXT PRIMARY KEY,
    name           TEXT,
    category       TEXT,
    price_cents    BIGINT      NOT NULL,
    currency       TEXT        NOT NULL,
    -- Last writer wins by (event time, event id), whatever the delivery order.
    price_as_of    TIMESTAMPTZ NOT NULL,
    price_event_id UUID        NOT NULL
);

CREATE TABLE stock (
    sku      TEXT PRIMARY KEY,
    on_hand  BIGINT NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand)
);

CREATE TABLE stock_reservations (
    order_id UUID    NOT NULL,
    sku      TEXT    NOT NULL,
    quantity BIGINT  NOT NULL CHECK (quantity > 0),
    released BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (order_id, sku)
);

-- sales group -------------------------------------------------------------
CREATE TABLE sales_orders (
    order_id   UUID PRIMARY KEY,
    currency   TEXT    NOT NULL,
    -- Per category: {"kitchen": {"revenue_cents": 3000, "units": 2}, ...}
    categories JSONB   NOT NULL,
    paid_on    DATE,
    counted    BOOLEAN NOT NULL DEFAULT false,
    cancelled  BOOLEAN NOT NULL DEFAULT false
);

-- Revenue and units per category per day, counted on payment and reversed
-- on cancellation: a view over per-order facts, so concurrent workers never
-- contend on shared counter rows and the result cannot drift.
CREATE INDEX sales_orders_counted_paid_on ON sales_orders (paid_on) WHERE counted;

CREATE VIEW sales_daily AS
SELECT o.paid_on                                  AS day,
       c.key                                      AS category,
       o.currency                                 AS currency,
       sum((c.value ->> 'revenue_cents')::bigint) AS revenue_cents,
       sum((c.value ->> 'units')::bigint)         AS units
FROM sales_orders o
CROSS JOIN LATERAL jsonb_each(o.categories) AS c
WHERE o.counted
GROUP BY o.paid_on, c.key, o.currency;
