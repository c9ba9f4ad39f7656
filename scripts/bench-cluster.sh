#!/usr/bin/env bash
# A throw-away local three-node cluster for benchmarks, in the foreground:
#
#   scripts/bench-cluster.sh [--log-store wal] [other reconfd flags...]
#
# Nodes b1..b3 serve the API on 127.0.0.1:${PORT:-9101}..+2 and Raft on
# ${PORT}+100..+102, with data in a fresh temporary dir (removed on exit) and
# logs in $LOGDIR (default: that dir). Extra arguments go to every reconfd.
# PPROF_PORT=6061 serves /debug/pprof of node i on 127.0.0.1:6060+i.
# Ctrl-C (or SIGTERM) stops the nodes. Point reconfctl bench at it with
#   --addr 127.0.0.1:9101,127.0.0.1:9102,127.0.0.1:9103
# `make run` is the same cluster on 8101-8103 with data in ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-9101}
BIN=${BIN:-./bin}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/reconf-bench-XXXXXX")
LOGDIR=${LOGDIR:-$DIR}
pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait || true
  rm -rf "$DIR"
}
trap stop INT TERM EXIT
# A cluster left running on these ports would answer in this one's place.
for p in $PORT $((PORT + 1)) $((PORT + 2)) $((PORT + 100)) $((PORT + 101)) $((PORT + 102)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "bench-cluster: port $p is in use (another cluster still running?); stop it or pick another PORT" >&2
    exit 1
  fi
done
addrs=()
for i in 1 2 3; do
  http=127.0.0.1:$((PORT + i - 1)) raft=127.0.0.1:$((PORT + 99 + i))
  addrs+=("$http")
  args=(--id "b$i" --data-dir "$DIR/b$i" --http-addr "$http" --raft-addr "$raft")
  if [ "$i" = 1 ]; then args+=(--bootstrap); else args+=(--join "127.0.0.1:$PORT"); fi
  if [ -n "${PPROF_PORT:-}" ]; then args+=(--pprof "127.0.0.1:$((PPROF_PORT + i - 1))"); fi
  "$BIN/reconfd" "${args[@]}" "$@" >"$LOGDIR/b$i.log" 2>&1 &
  pids+=($!)
  [ "$i" = 1 ] && sleep 1
done
all=$(IFS=,; echo "${addrs[*]}")
for _ in $(seq 1 150); do
  if "$BIN/reconfctl" --addr "$all" --json cluster status 2>/dev/null | grep -c '"state": "follower"' | grep -q 2; then break; fi
  sleep 0.2
done
echo "bench cluster ready: --addr $all (data $DIR, logs $LOGDIR, flags: $*)"
wait
