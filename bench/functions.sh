#!/usr/bin/env bash
# The set-wise SQL functions, compared on the calls a real run makes.
#
#   bash bench/functions.sh [VARIANT.sql ...]
#
# Each variant is SQL applied on top of the migrations, typically
# `CREATE OR REPLACE FUNCTION switchyard_apply_…` bodies to compare: a
# file, or files joined by `+` applied in that order (earlier migrations
# that replace the functions give their earlier versions, e.g.
# `migrations/20261203000005_lean_calls.sql`); `-` is the migrations as
# they are. Without arguments the migrations are compared with
# themselves: the noise of this host.
#
#  1. A fresh namespace and database; `producers load` publishes
#     BASE_EVENTS store events (default 20000, seed 5) and `consumers run`
#     applies them: the starting state. A copy of the database keeps it.
#  2. In the original, each group's `switchyard_apply_*` is wrapped to
#     record its arguments; `consumers run` applies EVENTS more (default
#     6000, seed 13) published at RATE events/s (default 2000, the latency
#     scenario's batches of a few events), and the wrappers record every
#     call in the order made.
#  3. For each of REPEAT rounds (default 8), each variant in turn: a copy
#     of the starting state, the variant applied, every recorded call made
#     again in its order, one transaction each, by a procedure that adds
#     up the time spent inside the calls (no client, no commit). The end
#     state (projections and claims) is fingerprinted.
#
# Prints each run, then per variant the median milliseconds and the ratio
# to the first variant; fails when two variants end in different states.
# Release binaries (built first, or those in BIN_DIR); the local RabbitMQ
# and PostgreSQL only. Not part of CI's measurements (a smoke test runs it
# small).
set -euo pipefail
origin=$PWD # variants' relative paths are read from where the script was started
cd "$(dirname "$0")/.."

BASE_EVENTS=${BASE_EVENTS:-20000}
EVENTS=${EVENTS:-6000}
RATE=${RATE:-2000}
REPEAT=${REPEAT:-8}
if [ -n "${BIN_DIR:-}" ]; then
  bin=$BIN_DIR
else
  cargo build --release -q -p consumers -p producers
  bin=target/release
fi
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(- -)
for index in "${!variants[@]}"; do
  variant=${variants[$index]}
  [ "$variant" = - ] && continue
  IFS=+ read -ra files <<< "$variant"
  absolute=()
  for file in "${files[@]}"; do
    [[ $file = /* ]] || file="$origin/$file"
    [ -r "$file" ] || { echo "cannot read $file (of variant $variant)" >&2; exit 2; }
    absolute+=("$file")
  done
  variants[$index]=$(IFS=+; echo "${absolute[*]}")
done

source bench/lib.sh # queued, until_drained, PGPORT
namespace="functions-$$"
database="functions_$$"
start_state="${database}_start"
work=$(mktemp -d)
export SWITCHYARD_NAMESPACE=$namespace
export DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/$database"
export RUST_LOG=info NO_COLOR=1
sql() { # database, psql arguments...
  local db=$1; shift
  PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -U postgres -d "$db" -qAt -v ON_ERROR_STOP=1 "$@"
}
cleanup() {
  [ -z "${consumers:-}" ] || kill -TERM "$consumers" 2>/dev/null || true
  "$bin/consumers" teardown --confirm "$namespace" --discard-messages >/dev/null 2>&1 || true
  for db in "$database" "$start_state" "${database}_replay"; do
    sql postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

GROUP="" # every group's backlog
run_consumers() { # until every group's lease is held; sets $consumers
  "$bin/consumers" run --http-address 127.0.0.1:0 > "$work/consumers.log" 2>&1 &
  consumers=$!
  local address="" leases=0
  for _ in $(seq 300); do
    address=$(grep -o 'serving /healthz.*address=127\.0\.0\.1:[0-9]*' "$work/consumers.log" \
      | grep -o '127\.0\.0\.1:[0-9]*$' || true)
    if [ -n "$address" ]; then
      leases=$(curl -fs "http://$address/metrics" | grep -c '^switchyard_group_lease{.*} 1$' || true)
      [ "$leases" -ge 3 ] && return 0
    fi
    kill -0 "$consumers" 2>/dev/null || { cat "$work/consumers.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "consumers run held $leases group leases after 60 s" >&2
  exit 1
}
drain() { # wait until the backlog is gone for good, stop
  until_drained >/dev/null
  kill -TERM "$consumers"; wait "$consumers" 2>/dev/null || true
  consumers=""
}

echo "starting state: $BASE_EVENTS store events (seed 5)"
"$bin/producers" migrate >/dev/null
"$bin/producers" declare >/dev/null
run_consumers
"$bin/producers" load --count "$BASE_EVENTS" --seed 5 >/dev/null 2>&1
drain
sql postgres -c "CREATE DATABASE \"$start_state\" TEMPLATE \"$database\""

echo "recording the calls for $EVENTS events (seed 13) at $RATE/s"
sql "$database" <<'SQL'
CREATE TABLE recorded_calls (n BIGSERIAL PRIMARY KEY, grp TEXT NOT NULL, lock_ids BIGINT[] NOT NULL, batch JSONB NOT NULL);
DO $$
DECLARE grp TEXT;
BEGIN
  FOREACH grp IN ARRAY ARRAY['orders', 'inventory', 'sales'] LOOP
    EXECUTE format('ALTER FUNCTION switchyard_apply_%s(BIGINT[], JSONB) RENAME TO switchyard_apply_%s_recorded', grp, grp);
    EXECUTE format($f$
      CREATE FUNCTION switchyard_apply_%1$s(lock_ids BIGINT[], batch JSONB)
      RETURNS TABLE (failed_index INTEGER, failure TEXT, failed_sku TEXT, failed_quantity BIGINT)
      LANGUAGE plpgsql AS $b$
      BEGIN
        INSERT INTO recorded_calls (grp, lock_ids, batch) VALUES (%1$L, lock_ids, batch);
        RETURN QUERY SELECT * FROM switchyard_apply_%1$s_recorded(lock_ids, batch);
      END $b$ $f$, grp);
  END LOOP;
END $$;
SQL
run_consumers
"$bin/producers" load --count "$EVENTS" --seed 13 --rate "$RATE" >/dev/null 2>&1
drain
calls=$(sql "$database" -c "SELECT count(*) FROM recorded_calls")
echo "recorded $calls calls ($(sql "$database" -c \
  "SELECT string_agg(grp || ' ' || n || ' calls, ' || e || ' events', '; ' ORDER BY grp)
   FROM (SELECT grp, count(*) n, sum(jsonb_array_length(batch)) e FROM recorded_calls GROUP BY grp) g"))"
[ "$calls" -gt 0 ] || { echo "no calls recorded" >&2; exit 1; }

sql "$start_state" <<'SQL'
CREATE TABLE recorded_calls (n BIGINT PRIMARY KEY, grp TEXT NOT NULL, lock_ids BIGINT[] NOT NULL, batch JSONB NOT NULL);
CREATE PROCEDURE replay_recorded_calls(INOUT milliseconds DOUBLE PRECISION DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
  recorded RECORD;
  started TIMESTAMPTZ;
  inside INTERVAL := '0';
BEGIN
  FOR recorded IN SELECT * FROM recorded_calls ORDER BY n LOOP
    started := clock_timestamp();
    CASE recorded.grp
      WHEN 'orders' THEN PERFORM * FROM switchyard_apply_orders(recorded.lock_ids, recorded.batch);
      WHEN 'inventory' THEN PERFORM * FROM switchyard_apply_inventory(recorded.lock_ids, recorded.batch);
      ELSE PERFORM * FROM switchyard_apply_sales(recorded.lock_ids, recorded.batch);
    END CASE;
    inside := inside + (clock_timestamp() - started);
    COMMIT;
  END LOOP;
  milliseconds := extract(epoch FROM inside) * 1000;
END $$;
SQL
sql "$database" -c "\\copy (SELECT n, grp, lock_ids, batch FROM recorded_calls ORDER BY n) TO '$work/calls.tsv'"
sql "$start_state" -c "\\copy recorded_calls FROM '$work/calls.tsv'"

fingerprint() { # the projections and claims of a database, one md5
  sql "$1" -c "SELECT md5(string_agg(part, '|' ORDER BY part)) FROM (
      SELECT 'customers' || md5(string_agg(t::text, ',' ORDER BY customer_id)) FROM customers t
      UNION ALL SELECT 'orders' || md5(string_agg(t::text, ',' ORDER BY order_id)) FROM orders t
      UNION ALL SELECT 'lines' || md5(string_agg(t::text, ',' ORDER BY order_id, line_number)) FROM order_lines t
      UNION ALL SELECT 'payments' || md5(string_agg(t::text, ',' ORDER BY payment_id)) FROM payments t
      UNION ALL SELECT 'shipments' || md5(string_agg(t::text, ',' ORDER BY shipment_id)) FROM shipments t
      UNION ALL SELECT 'products' || md5(string_agg(t::text, ',' ORDER BY sku)) FROM products t
      UNION ALL SELECT 'stock' || md5(string_agg(t::text, ',' ORDER BY sku)) FROM stock t
      UNION ALL SELECT 'reservations' || md5(string_agg(t::text, ',' ORDER BY order_id, sku)) FROM stock_reservations t
      UNION ALL SELECT 'sales' || md5(string_agg(t::text, ',' ORDER BY order_id)) FROM sales_orders t
      UNION ALL SELECT 'claims' || md5(string_agg(consumer_group || event_id || event_type, ',' ORDER BY consumer_group, event_id))
        FROM processed_events) AS parts(part)"
}

replay="${database}_replay"
results="$work/results"
for round in $(seq "$REPEAT"); do
  for index in "${!variants[@]}"; do
    variant=${variants[$index]}
    sql postgres -c "DROP DATABASE IF EXISTS \"$replay\"" -c "CREATE DATABASE \"$replay\" TEMPLATE \"$start_state\""
    if [ "$variant" != - ]; then
      IFS=+ read -ra files <<< "$variant"
      for file in "${files[@]}"; do sql "$replay" -f "$file" >/dev/null; done
    fi
    milliseconds=$(sql "$replay" -c "CALL replay_recorded_calls()")
    state=$(fingerprint "$replay")
    printf 'round %s, variant %s (%s): %.1f ms inside the calls, end state %s\n' \
      "$round" "$((index + 1))" "$variant" "$milliseconds" "$state"
    echo "$index $milliseconds $state" >> "$results"
  done
done

echo
echo "median milliseconds inside the $calls calls, and ratio to variant 1:"
first=""
for index in "${!variants[@]}"; do
  median=$(awk -v i="$index" '$1 == i { print $2 }' "$results" | sort -g | awk '
    { v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
  [ -n "$first" ] || first=$median
  printf '  variant %s (%s): %.1f ms (%.2fx)\n' "$((index + 1))" "${variants[$index]}" "$median" \
    "$(awk "BEGIN { print $median / $first }")"
done
states=$(awk '{ print $3 }' "$results" | sort -u | wc -l)
if [ "$states" != 1 ]; then
  echo "the variants end in $states different states" >&2
  exit 1
fi
echo "every run ended in the same state"
