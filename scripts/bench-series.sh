#!/usr/bin/env bash
# The benchmark series of docs/performance.md: for each log store, a fresh
# local three-node cluster (scripts/bench-cluster.sh), then reconfctl bench
# at several concurrencies and in a few other shapes, each run's --json in
# $OUT, and the plot drawn from them (scripts/plot-bench).
#
#   scripts/bench-series.sh                 # everything, into docs/bench/
#   STORES=wal CONC="1 64" DURATION=5s scripts/bench-series.sh
#   BEFORE_BIN=/path/to/old/bin scripts/bench-series.sh   # also an older reconfd, labelled $BEFORE_LABEL ("before")
#   REPEAT=3 scripts/bench-series.sh        # each run three times (the plot takes the median)
#   PARTS=state scripts/bench-series.sh     # only some parts: main (concurrency and shapes),
#                                           # state (1,000 vs 1,000,000 sessions), before
#
# Runs are closed-loop, delegations only, sent to the leader (--leader-only),
# 2s warm-up. `uptime` is recorded next to every run (load.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/bench}
STORES=${STORES:-bolt wal}
CONC=${CONC:-1 4 16 64 256}
DURATION=${DURATION:-10s}
REPEAT=${REPEAT:-1}
PORT=${PORT:-9101}
mkdir -p "$OUT"
go build -o bin/reconfd ./cmd/node && go build -o bin/reconfctl ./cmd/ctl
A="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
CTL="./bin/reconfctl --addr $A"

. scripts/bench-lib.sh # start_cluster, stop_cluster

bench() { # name, label, bench args... (REPEAT times: name-r1, name-r2, ...)
  local name=$1 label=$2
  shift 2
  for r in $(seq 1 "$REPEAT"); do
    bench1 "$name-r$r" "$label" "$@"
  done
}

bench1() {
  local name=$1 label=$2
  shift 2
  echo "$(date -u +%FT%TZ) $name: $(uptime)" >>"$OUT/load.txt"
  $CTL bench --warmup 2s --quiet --json --label "$label" "$@" >"$OUT/$name.json"
  python3 - "$OUT/$name.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
t = r["total"]
print(f'{sys.argv[1]}: {r["delegations_per_sec"]:.0f} delegations/s, {t["ops_per_sec"]:.0f} ops/s, p50 {t["p50_ms"]} ms, p99 {t["p99_ms"]} ms, errors {t["errors"]}, load {r["machine"]["load_after"]}')
PY
}

PARTS=${PARTS:-main state before}
part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

for store in $STORES; do
  if part main; then
    start_cluster ./bin --log-store "$store"
    for c in $CONC; do
      bench "$store-c$c" "$store" --mix delegate=100 --concurrency "$c" --duration "$DURATION" --leader-only
    done
    bench "$store-followers-c64" "$store via followers" --mix delegate=100 --concurrency 64 --duration "$DURATION"
    bench "$store-read-c1" "$store" --mix read=100 --concurrency 1 --duration "$DURATION" --leader-only
    bench "$store-mix-c64" "$store" --concurrency 64 --duration "$DURATION"
    bench "$store-batch-c4" "$store" --mix batch=1 --batch-size 1000 --concurrency 4 --duration "$DURATION" --leader-only
    stop_cluster
  fi
  if part state; then
    # The same load on a state of 1,000 sessions and on one of 1,000,000,
    # each on a fresh cluster: a cluster that has run the rows above holds
    # millions of facts already, and the snapshots of that state would
    # fall into both.
    for n in 1k:1000 1m:1000000; do
      start_cluster ./bin --log-store "$store"
      $CTL bench --preload "${n#*:}" --mix read=1 --count 1 --warmup 0s --quiet --timeout 10m >/dev/null
      bench "$store-state${n%%:*}-c64" "$store" --mix delegate=100 --concurrency 64 --duration "$DURATION" --leader-only
      stop_cluster
    done
  fi
done

if [ -n "${BEFORE_BIN:-}" ] && part before; then
  start_cluster "$BEFORE_BIN"
  for c in $CONC; do
    bench "before-c$c" "${BEFORE_LABEL:-before}" --mix delegate=100 --concurrency "$c" --duration "$DURATION" --leader-only
  done
  stop_cluster
fi

files=()
for f in "$OUT"/bolt-c*-r*.json "$OUT"/wal-c*-r*.json "$OUT"/before-c*-r*.json; do
  [ -e "$f" ] && files+=("$f")
done
go run ./scripts/plot-bench -o docs/bench.svg "${files[@]}"
go run ./scripts/plot-bench -table "$OUT"/*.json >"$OUT/table.md"
echo "plot: docs/bench.svg, table: $OUT/table.md"
