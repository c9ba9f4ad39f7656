#!/usr/bin/env bash
# The jepsen sweep: every fault alone, RUNS runs of TIME seconds each, then
# a Markdown table of the verdicts (the one in docs/jepsen.md). Needs root,
# like make jepsen. A rare violation needs many runs to show: one run per
# fault proves little.
#
#   sudo scripts/jepsen-sweep.sh                      # 10 runs x 30 s of each fault
#   sudo RUNS=3 FAULTS=pause-leader scripts/jepsen-sweep.sh
#   sudo BIN=/tmp/old/reconfd scripts/jepsen-sweep.sh # judge another build
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
TIME=${TIME:-30}
FAULTS=${FAULTS:-partition-halves isolate-leader majority-ring kill-minority pause-leader remove-readd}
OUT=${OUT:-jepsen/results/sweep-$(date -u +%Y%m%dT%H%M%S)}
go build -o bin/jepsen ./jepsen/cmd/jepsen
if [ -z "${BIN:-}" ]; then
  go build -o bin/reconfd ./cmd/node
  BIN=bin/reconfd
fi
mkdir -p "$OUT"
for f in $FAULTS; do
  for i in $(seq 1 "$RUNS"); do
    rc=0
    ./bin/jepsen -time "$TIME" -faults "$f" -bin "$BIN" -results "$OUT/$f" -quiet >"$OUT/$f-$i.txt" 2>&1 || rc=$?
    echo "$f run $i: exit $rc, $(head -1 "$OUT/$f-$i.txt"), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/runs.txt"
  done
done
./bin/jepsen -table "$OUT" | tee "$OUT/table.md"
