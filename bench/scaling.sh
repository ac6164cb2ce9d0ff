#!/usr/bin/env bash
# Worker scaling on a pre-loaded backlog of the store workload.
#
# For each process count in PROCESSES (default "1 2 3"), REPEAT times
# (default 3): a fresh namespace and database, `producers load` publishes
# EVENTS store events (default 30000; the store mix: orders, payments,
# shipments, cancellations, restocks, price changes, customers) with
# confirms, then that many `consumers run` processes (every group, default
# workers) drain the backlog. Prints, per run, the wall time from spawning
# the processes to the backlog reading empty (for good), and the processing span — first to
# last commit, from processed_events.processed_at (each batch's transaction
# start), so process start-up (migrations check, topology declaration,
# connections: several processes start on the same cores) is not counted —
# with events/s for both; then the medians per process count and their
# ratios to one process.
#
# Uses the release binaries (built first; or those in BIN_DIR, as the
# smoke test does) and the local RabbitMQ and PostgreSQL only. The
# measurement is not part of CI: `bash bench/scaling.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-30000}
REPEAT=${REPEAT:-3}
PROCESSES=${PROCESSES:-"1 2 3"}
WORKERS=${WORKERS:-1}
GROUP=${GROUP:-}   # one group only (orders, inventory, sales); all when empty
if [ -n "${BIN_DIR:-}" ]; then
  bin=$BIN_DIR
else
  cargo build --release -q -p consumers -p producers
  bin=target/release
fi
calc() { awk "BEGIN { print $* }"; }
source bench/lib.sh # queued, until_drained, PGPORT

results=$(mktemp)
for processes in $PROCESSES; do
  for run in $(seq "$REPEAT"); do
    namespace="scale-$processes-$run-$$"
    database="scale_${processes}_${run}_$$"
    export SWITCHYARD_NAMESPACE=$namespace
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/$database"
    export RUST_LOG=error
    "$bin/producers" migrate >/dev/null
    "$bin/producers" declare >/dev/null
    "$bin/producers" load --count "$EVENTS" --seed "$run" >/dev/null 2>&1
    pids=()
    started=$(date +%s.%N)
    for _ in $(seq "$processes"); do
      "$bin/consumers" run --workers "$WORKERS" ${GROUP:+--group "$GROUP"} ${RUN_ARGS:-} \
        --http-address 127.0.0.1:0 >/dev/null 2>&1 &
      pids+=($!)
    done
    # Ready, unacked and waiting-to-retry messages gone: the clock stops;
    # then a graceful stop.
    finished=$(until_drained)
    kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
    left=$(queued)
    [ "$left" = 0 ] || { echo "messages left after the stop: $left" >&2; "$bin/consumers" stats >&2; exit 1; }
    seconds=$(calc "$finished - $started")
    per_group=$(psql -h 127.0.0.1 -U postgres -d "$database" -Atc \
      "SELECT string_agg(consumer_group || '=' || n, ' ' ORDER BY consumer_group)
       FROM (SELECT consumer_group, count(*) n FROM processed_events GROUP BY 1) g")
    applied=$(psql -h 127.0.0.1 -U postgres -d "$database" -Atc "SELECT count(*) FROM processed_events")
    dead=$(psql -h 127.0.0.1 -U postgres -d "$database" -Atc "SELECT count(*) FROM dead_letters")
    span=$(psql -h 127.0.0.1 -U postgres -d "$database" -Atc \
      "SELECT extract(epoch FROM max(processed_at) - min(processed_at)) FROM processed_events")
    rate=$(calc "$applied / $seconds")
    span_rate=$(calc "$applied / $span")
    printf '%s processes, run %s: %d applied; wall %.1f s = %.0f/s; processing %.1f s = %.0f/s (%s), %s dead letters\n' \
      "$processes" "$run" "$applied" "$seconds" "$rate" "$span" "$span_rate" "$per_group" "$dead"
    echo "$processes $rate $span_rate" >> "$results"
    "$bin/consumers" teardown --confirm "$namespace" --discard-messages >/dev/null 2>&1 || true
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE \"$database\" WITH (FORCE)"
  done
done

median() { # column $2 of the results for $1 processes
  awk -v p="$1" -v c="$2" '$1 == p { print $c }' "$results" | sort -g | awk '
    { v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo
echo "median events/s applied (all groups), and ratio to 1 process:"
base_wall="" base_span=""
for processes in $PROCESSES; do
  wall=$(median "$processes" 2) span=$(median "$processes" 3)
  [ -n "$base_wall" ] || { base_wall=$wall; base_span=$span; }
  printf '  %s processes: wall %.0f/s (%.2fx), processing %.0f/s (%.2fx)\n' "$processes" \
    "$wall" "$(calc "$wall / $base_wall")" "$span" "$(calc "$span / $base_span")"
done
rm -f "$results"
