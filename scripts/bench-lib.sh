# Sourced by scripts/bench-series.sh and scripts/bench-ab.sh: start and stop
# the throw-away cluster of scripts/bench-cluster.sh on $PORT, its output in
# $OUT/.cluster.out and its logs in a new temporary dir.

cluster_pid=

start_cluster() { # BIN, reconfd flags...
  local bin=$1
  shift
  LOGDIR=$(mktemp -d) BIN=$bin PORT=$PORT scripts/bench-cluster.sh "$@" >"$OUT/.cluster.out" 2>&1 &
  cluster_pid=$!
  for _ in $(seq 1 150); do
    grep -q "bench cluster ready" "$OUT/.cluster.out" 2>/dev/null && break
    if ! kill -0 "$cluster_pid" 2>/dev/null; then
      cat "$OUT/.cluster.out" >&2
      echo "bench: the cluster did not start" >&2
      exit 1
    fi
    sleep 0.2
  done
  sleep 1
}

stop_cluster() {
  if [ -n "$cluster_pid" ]; then
    kill -TERM "$cluster_pid" 2>/dev/null || true
    wait "$cluster_pid" 2>/dev/null || true
    cluster_pid=
  fi
}

trap stop_cluster EXIT INT TERM
