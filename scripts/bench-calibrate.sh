#!/usr/bin/env bash
# reconf next to the reference harnesses of scripts/refbench, in turns, so
# that every run of a round sees the same background load: the issue's
# targets are stated against those references on "this machine class", and
# their ratio is what carries over to another machine.
#
#   scripts/bench-calibrate.sh                       # into docs/bench/calibrate
#   ROUNDS=3 DURATION=10s scripts/bench-calibrate.sh
#   BEFORE_BIN=/path/to/old/bin scripts/bench-calibrate.sh   # also an older reconfd (bolt)
#
# Each round: the disk's fsync rate; the HTTP-only ceiling (the KV server's
# nodes answering without Raft, 64 clients); the minimal hraftd-style KV
# server at 64 clients and at 1; raw hashicorp/raft Apply with leader-side packing on
# bolt and wal (64 concurrent); then reconf on bolt and on wal, each on a
# fresh cluster: delegations at 64 clients and at 1, linearizable reads at
# 1 and 64, and the batch API (4 clients x 1000 delegations). JSON per run in $OUT,
# a table (median over rounds) in $OUT/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/bench/calibrate}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8s}
PORT=${PORT:-9101}
mkdir -p "$OUT"
go build -o bin/reconfd ./cmd/node && go build -o bin/reconfctl ./cmd/ctl && go build -o bin/refbench ./scripts/refbench
A="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"

. scripts/bench-lib.sh # start_cluster, stop_cluster

note() { echo "$(date -u +%FT%TZ) $1: $(uptime)" >>"$OUT/load.txt"; }

ref() { # name, refbench args...
  local name=$1
  shift
  note "$name"
  ./bin/refbench "$@" --json >"$OUT/$name.json"
}

reconf() { # name, bench args...
  local name=$1
  shift
  note "$name"
  "$CTL" --addr "$A" bench --warmup 2s --quiet --json --leader-only "$@" >"$OUT/$name.json"
}

turn() { # label, bin dir, round, reconfd flags...
  local label=$1 bin=$2 r=$3
  shift 3
  start_cluster "$bin" "$@"
  CTL=$bin/reconfctl
  reconf "$label-c64-r$r" --label "$label" --mix delegate=100 --concurrency 64 --duration "$DURATION"
  reconf "$label-c1-r$r" --label "$label" --mix delegate=100 --concurrency 1 --duration "$DURATION"
  reconf "$label-read-c1-r$r" --label "$label" --mix read=100 --concurrency 1 --duration "$DURATION"
  reconf "$label-read-c64-r$r" --label "$label" --mix read=100 --concurrency 64 --duration "$DURATION"
  reconf "$label-batch-c4-r$r" --label "$label" --mix batch=1 --batch-size 1000 --concurrency 4 --duration "$DURATION"
  stop_cluster
}

for r in $(seq 1 "$ROUNDS"); do
  ref "fsync-r$r" fsync --dir "${TMPDIR:-/tmp}" --duration 3s
  ref "ref-http-echo-c64-r$r" kv --echo --concurrency 64 --duration "$DURATION"
  ref "ref-kv-bolt-c64-r$r" kv --store bolt --concurrency 64 --duration "$DURATION"
  ref "ref-kv-bolt-c1-r$r" kv --store bolt --concurrency 1 --duration "$DURATION"
  ref "ref-raw-bolt-pack-r$r" raw --store bolt --pack --duration "$DURATION"
  ref "ref-raw-wal-pack-r$r" raw --store wal --pack --duration "$DURATION"
  if [ -n "${BEFORE_BIN:-}" ]; then turn before "$BEFORE_BIN" "$r" --log-store bolt; fi
  turn bolt ./bin "$r" --log-store bolt
  turn wal ./bin "$r" --log-store wal
done

python3 - "$OUT" >"$OUT/table.md" <<'PY'
import glob, json, os, re, statistics, sys
out = sys.argv[1]
runs = {}
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = re.sub(r"-r\d+$", "", os.path.basename(f)[:-5])
    r = json.load(open(f))
    if "total" in r:  # reconfctl bench
        rate = r["delegations_per_sec"] or r["total"]["ops_per_sec"]
        p50, p99 = r["total"]["p50_ms"], r["total"]["p99_ms"]
    elif "fsyncs_per_sec" in r:
        rate, p50, p99 = r["fsyncs_per_sec"], r.get("latency", {}).get("p50_ms"), r.get("latency", {}).get("p99_ms")
    else:
        rate, p50, p99 = r["ops_per_sec"], r["latency"]["p50_ms"], r["latency"]["p99_ms"]
    runs.setdefault(name, []).append((rate, p50, p99, r.get("machine", {}).get("load_after", "")))
print("| run | per second: median (all rounds) | p50 ms | p99 ms | load after |")
print("|---|---|---|---|---|")
for name, rs in runs.items():
    rs.sort(key=lambda x: x[0])
    med = rs[len(rs) // 2]
    ms = lambda v: "" if v is None else f"{v:.2f}"
    print(f"| {name} | {med[0]:.0f} ({', '.join(f'{x[0]:.0f}' for x in rs)}) | {ms(med[1])} | {ms(med[2])} | {med[3]} |")
PY
cat "$OUT/table.md"
