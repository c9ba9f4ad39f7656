#!/usr/bin/env bash
# Before/after on a shared machine: the write path of an older reconfd
# (BEFORE_BIN, on bolt) and this one (bolt and wal) in turns, ROUNDS times,
# so that all three see the same background load. Each turn starts a fresh
# cluster (scripts/bench-cluster.sh) and runs 1 and 64 clients (delegations,
# to the leader). JSON in $OUT; a table in $OUT/table.md.
#
#   BEFORE_BIN=/path/to/old/bin scripts/bench-ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BEFORE_BIN:?set BEFORE_BIN to a dir with an older reconfd and reconfctl}"
OUT=${OUT:-docs/bench/ab}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
PORT=${PORT:-9101}
mkdir -p "$OUT"
go build -o bin/reconfd ./cmd/node && go build -o bin/reconfctl ./cmd/ctl
A="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"

. scripts/bench-lib.sh # start_cluster, stop_cluster

turn() { # name, label, bin, reconfd flags...
  local name=$1 label=$2 bin=$3 round=$4
  shift 4
  start_cluster "$bin" "$@"
  for c in 1 64; do
    echo "$(date -u +%FT%TZ) $name-c$c-r$round: $(uptime)" >>"$OUT/load.txt"
    ./bin/reconfctl --addr "$A" bench --mix delegate=100 --concurrency "$c" --duration "$DURATION" --warmup 2s \
      --leader-only --quiet --json --label "$label" >"$OUT/$name-c$c-r$round.json"
  done
  stop_cluster
}

for r in $(seq 1 "$ROUNDS"); do
  turn before "${BEFORE_LABEL:-before}" "$BEFORE_BIN" "$r"
  turn bolt bolt ./bin "$r" --log-store bolt
  turn wal wal ./bin "$r" --log-store wal
done
go run ./scripts/plot-bench -table "$OUT"/*.json >"$OUT/table.md"
cat "$OUT/table.md"
