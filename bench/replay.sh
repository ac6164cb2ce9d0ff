#!/usr/bin/env bash
# Replaying a large set of dead letters: throughput and memory.
#
# For each size in SIZES (default "20000 200000") and REPEAT times (default
# 3): a fresh namespace and database, SIZE open dead letters of the
# inventory group (valid `inventory.restocked` events, ~300 bytes each)
# written straight into the store, then
#   1. the baseline: the same events published with confirms by
#      `producers publish` (they reach the same single queue), and the
#      queue purged;
#   2. `consumers dead-letters replay --group inventory --batch BATCH`
#      (default 500), timed, with its peak resident memory (/usr/bin/time).
# Each run is checked: every dead letter marked replayed once, and exactly
# SIZE messages in the inventory work queue. Prints each run, then per size
# the medians, the replay's rate as a share of the baseline's, and its peak
# memory as a multiple of the smallest size's: a replay reads, sends and
# marks one batch at a time, so memory must not grow with the set.
#
# Release binaries (built first, or those in BIN_DIR); the local RabbitMQ
# and PostgreSQL only. Not part of CI: `bash bench/replay.sh`
# (`SIZES="20000 1000000" REPEAT=1 bash bench/replay.sh` for a million).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"20000 200000"}
REPEAT=${REPEAT:-3}
BATCH=${BATCH:-500}
if [ -n "${BIN_DIR:-}" ]; then
  bin=$BIN_DIR
else
  cargo build --release --quiet -p producers -p consumers
  bin=target/release
fi
psql_admin=(env PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -U postgres -d postgres -qAt -v ON_ERROR_STOP=1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {m=int((NR+1)/2); if (NR%2) print a[m]; else printf "%.3f\n", (a[m]+a[m+1])/2}'; }

run_once() {
  local size=$1 run=$2
  local ns="bench-replay-$$-$size-$run" db="switchyard_bench_replay_$$"
  export SWITCHYARD_NAMESPACE=$ns
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
  export RUST_LOG=warn
  "${psql_admin[@]}" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  "$bin/producers" migrate >/dev/null
  "$bin/producers" declare >/dev/null
  local psql_db=(psql -h 127.0.0.1 -U postgres -d "$db" -qAt -v ON_ERROR_STOP=1)
  "${psql_db[@]}" <<SQL
INSERT INTO dead_letters (consumer_group, event_id, event_type, routing_key, body, reason,
                          error_kind, attempts, first_failed_at, last_failed_at, content_type, message_id)
SELECT 'inventory', id, 'inventory.restocked', 'inventory.restocked',
       convert_to(json_build_object(
         'specversion', '1.0', 'id', id, 'source', '/warehouse', 'type', 'inventory.restocked',
         'time', '2026-11-23T09:00:00Z',
         'data', json_build_object('sku', 'SKU-' || lpad((n % 5000)::text, 5, '0'), 'quantity', 1 + n % 50)
       )::text, 'UTF8'),
       'handler: the warehouse was unreachable', 'handler', 1, now(), now(),
       'application/cloudevents+json', id::text
FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, $size) AS n) AS rows;
SQL
  "${psql_db[@]}" -c "COPY (SELECT convert_from(body, 'UTF8') FROM dead_letters ORDER BY id) TO STDOUT" >"$work/events.ndjson"

  local started ended publish_seconds
  started=$(date +%s.%N)
  "$bin/producers" publish "$work/events.ndjson" >/dev/null
  ended=$(date +%s.%N)
  publish_seconds=$(echo "$ended - $started" | bc -l)
  rabbitmqctl -q purge_queue "$ns.inventory" >/dev/null

  /usr/bin/time -f "%e %M" -o "$work/time" \
    "$bin/consumers" dead-letters replay --group inventory --batch "$BATCH" >/dev/null 2>"$work/replay.err" || {
    cat "$work/replay.err" >&2
    exit 1
  }
  local replay_seconds rss_kib marked queued
  read -r replay_seconds rss_kib <"$work/time"
  marked=$("${psql_db[@]}" -c "SELECT count(*) FROM dead_letters WHERE status = 'replayed' AND operation_id IS NOT NULL")
  # The broker's queue counts lag by a few seconds.
  for _ in $(seq 1 60); do
    queued=$(rabbitmqctl -q list_queues name messages | awk -v q="$ns.inventory" '$1 == q {print $2}')
    [ "$queued" = "$size" ] && break
    sleep 0.5
  done
  if [ "$marked" != "$size" ] || [ "$queued" != "$size" ]; then
    echo "run $size/$run: $marked marked replayed and $queued queued; expected $size each" >&2
    exit 1
  fi
  "$bin/consumers" teardown --confirm "$ns" --discard-messages >/dev/null
  "${psql_admin[@]}" -c "DROP DATABASE $db"
  printf '%s %s %s %s\n' "$size" "$publish_seconds" "$replay_seconds" "$rss_kib" >>"$work/results"
  printf '%8d  run %d  publish %6.2f s %8.0f ev/s   replay %6.2f s %8.0f ev/s   peak %6.1f MiB\n' \
    "$size" "$run" "$publish_seconds" "$(echo "$size / $publish_seconds" | bc -l)" \
    "$replay_seconds" "$(echo "$size / $replay_seconds" | bc -l)" "$(echo "$rss_kib / 1024" | bc -l)"
}

echo "replaying dead letters: sizes $SIZES, $REPEAT runs each, batch $BATCH"
for size in $SIZES; do
  for run in $(seq 1 "$REPEAT"); do
    run_once "$size" "$run"
  done
done

echo
echo "medians     publish ev/s   replay ev/s   replay/publish   peak MiB   peak / smallest"
smallest_rss=
for size in $SIZES; do
  publish=$(awk -v s="$size" '$1 == s {print s / $2}' "$work/results" | median)
  replay=$(awk -v s="$size" '$1 == s {print s / $3}' "$work/results" | median)
  rss=$(awk -v s="$size" '$1 == s {print $4 / 1024}' "$work/results" | median)
  smallest_rss=${smallest_rss:-$rss}
  printf '%8d  %13.0f  %12.0f  %15.2f  %9.1f  %16.2f\n' "$size" "$publish" "$replay" \
    "$(echo "$replay / $publish" | bc -l)" "$rss" "$(echo "$rss / $smallest_rss" | bc -l)"
done
