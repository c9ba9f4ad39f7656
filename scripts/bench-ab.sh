#!/usr/bin/env bash
# Before/after on a shared machine: an older reconfd (BEFORE_BIN, on bolt)
# and this one (each of STORES) in turns, ROUNDS times, so that all see the
# same background load. Each turn starts a fresh cluster
# (scripts/bench-cluster.sh) and runs MIX (default: delegations) at each of
# CLIENTS (default 1 and 64), to the leader. JSON in $OUT; a table in
# $OUT/table.md.
#
#   BEFORE_BIN=/path/to/old/bin scripts/bench-ab.sh
#   BEFORE_BIN=/tmp/old MIX=read=100 STORES=bolt OUT=docs/bench/reads-ab scripts/bench-ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BEFORE_BIN:?set BEFORE_BIN to a dir with an older reconfd and reconfctl}"
OUT=${OUT:-docs/bench/ab}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
PORT=${PORT:-9101}
MIX=${MIX:-delegate=100}
CLIENTS=${CLIENTS:-1 64}
STORES=${STORES:-bolt wal}
mkdir -p "$OUT"
go build -o bin/reconfd ./cmd/node && go build -o bin/reconfctl ./cmd/ctl
A="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"

. scripts/bench-lib.sh # start_cluster, stop_cluster

turn() { # name, label, bin, reconfd flags...
  local name=$1 label=$2 bin=$3 round=$4
  shift 4
  start_cluster "$bin" "$@"
  for c in $CLIENTS; do
    echo "$(date -u +%FT%TZ) $name-c$c-r$round: $(uptime)" >>"$OUT/load.txt"
    ./bin/reconfctl --addr "$A" bench --mix "$MIX" --concurrency "$c" --duration "$DURATION" --warmup 2s \
      --leader-only --quiet --json --label "$label" >"$OUT/$name-c$c-r$round.json"
  done
  stop_cluster
}

for r in $(seq 1 "$ROUNDS"); do
  turn before "${BEFORE_LABEL:-before}" "$BEFORE_BIN" "$r"
  for st in $STORES; do
    turn "$st" "$st" ./bin "$r" --log-store "$st"
  done
done
go run ./scripts/plot-bench -table "$OUT"/*.json >"$OUT/table.md"
cat "$OUT/table.md"
