#!/usr/bin/env bash
# The "done when" of bounded state (docs/operations.md, "Bounded state"),
# against a make-run-style three-node cluster started here:
#
#  1. max_facts 2,000 and an export running (reconfctl facts export --follow):
#     70,001 delegations, each with a new request id (the first by curl, the
#     rest by reconfctl bench in batches of 1,000), are all in the export
#     exactly once, and a retry of the first request is answered deduped;
#  2. the consumer is dropped and 130,000 more delegations land:
#     GET /v1/facts?after=0 answers 410 facts_trimmed with first_seq;
#  3. each node's RSS after 200,000 delegations is within 25% of its RSS
#     after 100,000.
#
# Prints the figures; exits 1 if a check fails. Environment: DATA (default
# a new temp dir, removed at the end unless KEEP=1), PORT (first HTTP port,
# default 18101; Raft ports are PORT+100..), BATCHES1/BATCHES2/BATCHES3 to
# scale the phases down (defaults 70, 30, 100: 70,000 / +30,000 / +100,000).
set -euo pipefail
cd "$(dirname "$0")/.."
make build >/dev/null
BIN=$PWD/bin
DATA=${DATA:-$(mktemp -d /tmp/reconf-bounded.XXXXXX)}
mkdir -p "$DATA"
PORT=${PORT:-18101}
B1=${BATCHES1:-70} B2=${BATCHES2:-30} B3=${BATCHES3:-100}
ADDRS="127.0.0.1:$PORT,127.0.0.1:$((PORT+1)),127.0.0.1:$((PORT+2))"
ctl() { "$BIN/reconfctl" --addr "$ADDRS" "$@"; }
pids=() export_pid=
fail=0
cleanup() {
  [ -n "$export_pid" ] && kill "$export_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$DATA"
}
trap cleanup EXIT
check() { # check WHAT CONDITION-RESULT(0/1)
  if [ "$2" = 0 ]; then echo "PASS  $1"; else echo "FAIL  $1"; fail=1; fi
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
rss_parts() { awk '/^RssAnon|^RssFile/ {printf "%s %s kB ", $1, $2}' "/proc/$1/status"; }

echo "load before: $(cat /proc/loadavg)"
for i in 1 2 3; do
  args=(--id "n$i" --data-dir "$DATA/n$i" --http-addr "127.0.0.1:$((PORT+i-1))" --raft-addr "127.0.0.1:$((PORT+99+i))")
  if [ "$i" = 1 ]; then args+=(--bootstrap); else args+=(--join "127.0.0.1:$PORT"); fi
  "$BIN/reconfd" "${args[@]}" >"$DATA/n$i.log" 2>&1 &
  pids+=($!)
  [ "$i" = 1 ] && sleep 1
done
for _ in $(seq 1 150); do
  [ "$(ctl --timeout 2s --json cluster status 2>/dev/null | grep -o '"suffrage": *"voter"' | wc -l)" = 3 ] && break
  sleep 0.2
done
voters=$(ctl --json cluster status | grep -o '"suffrage": *"voter"' | wc -l)
echo "voters: $voters"
[ "$voters" = 3 ] || { echo "FAIL  the cluster did not form (see $DATA/n*.log)"; exit 1; }
ctl facts retention set --max-facts 2000 >/dev/null
echo "policy: $(ctl --json facts retention show | tr -d '\n' | head -c 300)"

# Phase 1: an export running, 70,001 delegations with new request ids.
mkdir -p "$DATA/export"
"$BIN/reconfctl" --addr "$ADDRS" facts export --consumer audit --out "$DATA/export" --follow 2>"$DATA/export.log" &
export_pid=$!
A=authority-aaaaaaaa-0000-0000-0000-000000000001
B=authority-aaaaaaaa-0000-0000-0000-000000000002
S=session-aaaaaaaa-0000-0000-0000-000000000001
ctl footprint add $A --session $S >/dev/null
FIRST='{"session_id":"'$S'","from_authority":"'$A'","to_authority":"'$B'","bundle_id":"device_migration","request_id":"check-first-request"}'
first=$(curl -sS -X POST "http://127.0.0.1:$PORT/v1/delegations" -d "$FIRST")
first_seq=$(echo "$first" | grep -o '"fact_seq":[0-9]*' | cut -d: -f2)
bench() { ctl --json bench --mix batch=1 --batch-size 1000 --concurrency 4 --warmup 0s --count "$1" --quiet >"$DATA/bench-$2.json"; }
t0=$(date +%s.%N)
bench "$B1" 1
t1=$(date +%s.%N)
last=$(ctl --json facts retention show | grep -o '"last_seq": *[0-9]*' | grep -o '[0-9]*$')
echo "phase 1: $last delegations (each with a new request id) in $(echo "$t1 - $t0" | bc) s"
# Wait for the export to catch up (its cursor reaches last_seq).
for _ in $(seq 1 600); do
  cur=$(ctl --json facts consumers list | grep -o '"cursor": *[0-9]*' | grep -o '[0-9]*$' || echo 0)
  [ "$cur" = "$last" ] && break
  sleep 0.2
done
kill "$export_pid"; wait "$export_pid" 2>/dev/null || true; export_pid=
lines=$(cat "$DATA"/export/facts-*.jsonl | wc -l)
uniq=$(cat "$DATA"/export/facts-*.jsonl | grep -o '"seq":[0-9]*' | sort -u | wc -l)
contig=$(cat "$DATA"/export/facts-*.jsonl | grep -o '"seq":[0-9]*' | cut -d: -f2 | awk 'NR==1{p=$1; ok=($1==1); next} {if ($1!=p+1) ok=0; p=$1} END{print ok+0}')
echo "export: $(ls "$DATA"/export | wc -l) files, $lines lines, $uniq distinct seqs, last_seq $last, first fact of the run at seq $first_seq"
check "every delegation in the export exactly once (lines = distinct = last_seq = $last, seqs 1..$last in order)" \
  "$([ "$lines" = "$last" ] && [ "$uniq" = "$last" ] && [ "$contig" = 1 ] && [ "$last" -ge $((B1*1000+1)) ] && echo 0 || echo 1)"
retry=$(curl -sS -X POST "http://127.0.0.1:$PORT/v1/delegations" -d "$FIRST")
echo "retry of the first request: $(echo "$retry" | grep -o '"deduped":[a-z]*'), fact_seq $(echo "$retry" | grep -o '"fact_seq":[0-9]*' | cut -d: -f2)"
check "a retry of the first request is answered deduped with its first fact" \
  "$(echo "$retry" | grep -q '"deduped":true' && echo "$retry" | grep -q "\"fact_seq\":$first_seq[,}]" && echo 0 || echo 1)"
ctl facts retention show

# Phase 2: drop the consumer, 130,000 more.
ctl facts consumers drop audit
bench "$B2" 2
total=$(ctl --json facts retention show | grep -o '"last_seq": *[0-9]*' | grep -o '[0-9]*$')
declare -A rss1
for i in 0 1 2; do rss1[$i]=$(rss_kb "${pids[$i]}"); done
for i in 0 1 2; do echo "RSS after $total delegations: n$((i+1)) ${rss1[$i]} kB ($(rss_parts "${pids[$i]}"))"; done
bench "$B3" 3
total2=$(ctl --json facts retention show | grep -o '"last_seq": *[0-9]*' | grep -o '[0-9]*$')
for i in 0 1 2; do
  r2=$(rss_kb "${pids[$i]}")
  pct=$(echo "scale=1; ($r2 - ${rss1[$i]}) * 100 / ${rss1[$i]}" | bc)
  echo "RSS after $total2 delegations: n$((i+1)) $r2 kB ($pct% vs after $total; $(rss_parts "${pids[$i]}"))"
  check "n$((i+1)) RSS within 25% ($pct%)" "$(echo "$r2 <= ${rss1[$i]} * 1.25 && $r2 >= ${rss1[$i]} * 0.75" | bc | sed 's/1/0/;t;s/0/1/')"
done
code=$(curl -sS -o "$DATA/trimmed.json" -w '%{http_code}' "http://127.0.0.1:$PORT/v1/facts?after=0")
echo "GET /v1/facts?after=0: $code $(cat "$DATA/trimmed.json")"
check "GET /v1/facts?after=0 answers 410 facts_trimmed with first_seq" \
  "$([ "$code" = 410 ] && grep -q '"code":"facts_trimmed"' "$DATA/trimmed.json" && grep -q '"first_seq":[1-9]' "$DATA/trimmed.json" && echo 0 || echo 1)"
ctl facts retention show
digests=$(for i in 0 1 2; do curl -sS "http://127.0.0.1:$((PORT+i))/v1/cluster/digest"; echo; done)
echo "$digests"
echo "load after: $(cat /proc/loadavg)"
exit $fail
