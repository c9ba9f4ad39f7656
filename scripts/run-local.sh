#!/usr/bin/env bash
# make run: a local three-node reconf cluster in the foreground.
# Data lives in ./data/n1..n3, so running it again resumes the same state.
# Ctrl-C stops all three nodes gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin
mkdir -p data
pids=()
stop() {
  trap - INT TERM
  echo
  echo "stopping the cluster..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait
  echo "stopped. State is kept in ./data; 'make run' resumes it."
}
trap stop INT TERM

for i in 1 2 3; do
  args=(--id "n$i" --data-dir "data/n$i" --http-addr "127.0.0.1:810$i" --raft-addr "127.0.0.1:820$i")
  if [ "$i" = 1 ]; then args+=(--bootstrap); else args+=(--join 127.0.0.1:8101); fi
  # Process substitution keeps $! the node's pid, not the prefixing sed's.
  "$BIN/reconfd" "${args[@]}" > >(sed -u "s/^/[n$i] /") 2>&1 &
  pids+=($!)
  [ "$i" = 1 ] && sleep 1
done

for _ in $(seq 1 100); do
  if "$BIN/reconfctl" cluster status >/dev/null 2>&1; then break; fi
  sleep 0.2
done

cat <<'MSG'

reconf is running: three nodes, HTTP API on 127.0.0.1:8101-8103, Raft on 8201-8203,
data in ./data/n1..n3. In another terminal, try (ids shortened below are full UUIDs):

  export PATH=$PWD/bin:$PATH
  reconfctl cluster status
  reconfctl bundle list
  reconfctl footprint add authority-11111111-1111-1111-1111-111111111111 --session session-99999999-9999-9999-9999-999999999999
  reconfctl delegate --session session-99999999-9999-9999-9999-999999999999 \
      --from authority-11111111-1111-1111-1111-111111111111 \
      --to authority-22222222-2222-2222-2222-222222222222 --bundle device_migration
  reconfctl footprint show authority-11111111-1111-1111-1111-111111111111
  reconfctl footprint show authority-22222222-2222-2222-2222-222222222222
  reconfctl facts
  reconfctl coherence

Press Ctrl-C here to stop the cluster.
MSG
wait
