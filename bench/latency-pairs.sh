#!/usr/bin/env bash
# Interleaved paired latency runs at one offered rate: the same binaries,
# alternating SWITCHYARD_RUNTIME_THREADS between one and two in each round,
# so a noisy spell of the host falls on both. Each run is the suite's
# latency part (broker alone, hand-written reference, Switchyard; store mix
# and order.placed) once.
#
#   bench/latency-pairs.sh [rounds (4)] [rate (2000)] [out (/tmp/latency-pairs)]
set -euo pipefail
rounds=${1:-4}
rate=${2:-2000}
out=$(realpath -m "${3:-/tmp/latency-pairs}")
cd "$(dirname "$0")/../consumers"
mkdir -p "$out"
# Built once and copied, so an edit during the runs changes nothing.
suite=$(cargo bench -p consumers --bench suite --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*suite[^"]*\)".*/\1/p' | tail -1)
cp "$suite" "$out/suite"
cp ../target/release/consumers "$out/consumers"
for round in $(seq 1 "$rounds"); do
  for threads in 1 2; do
    echo "round $round, $threads runtime thread(s), $(date -u +%H:%M:%S)"
    SWITCHYARD_RUNTIME_THREADS=$threads BENCH_ONLY=latency BENCH_RATES=$rate BENCH_REPEAT=1 \
      BENCH_OUT="$out/r$round-t$threads" BENCH_CONSUMERS="$out/consumers" \
      "$out/suite" --bench > "$out/r$round-t$threads.log" 2>&1
  done
done
echo "results in $out/r*-t*/results.md"
