#!/usr/bin/env bash
# CPU per delegation, per process: runs reconfctl bench against a running
# local cluster (scripts/bench-cluster.sh or make run) and divides each
# process's CPU time over the run (user + system, from /proc) by the
# delegations committed in it. The nodes are the reconfd processes serving
# the given API ports; the load generator is reconfctl itself.
#
#   scripts/bench-cpu.sh [--addr A,B,C] [reconfctl bench flags...]
#   scripts/bench-cpu.sh --mix delegate=100 --concurrency 64 --duration 10s --leader-only
#
# --addr defaults to the bench cluster's 127.0.0.1:9101-9103. The run has no
# warm-up, so CPU time and delegations cover the same span (the bench's
# set-up, a request per client, is in the CPU time).
set -euo pipefail
cd "$(dirname "$0")/.."
ADDR=127.0.0.1:9101,127.0.0.1:9102,127.0.0.1:9103
if [ "${1:-}" = "--addr" ]; then
  ADDR=$2
  shift 2
fi
exec python3 - "$ADDR" "$@" <<'PY'
import json, os, resource, subprocess, sys

addr, args = sys.argv[1], sys.argv[2:]
tick = os.sysconf("SC_CLK_TCK")

def nodes():
    """pid and --http-addr of every reconfd serving one of addr's ports."""
    want = addr.split(",")
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"reconfd"):
            continue
        argv = [a.decode() for a in argv]
        for i, a in enumerate(argv[:-1]):
            if a in ("--http-addr", "-http-addr") and argv[i + 1] in want:
                found[int(pid)] = argv[i + 1]
    return found

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick  # utime, stime

procs = nodes()
if len(procs) != len(addr.split(",")):
    sys.exit(f"bench-cpu: found reconfd for {sorted(procs.values())}, want {addr}")
before = {p: cpu(p) for p in procs}
out = subprocess.run(["./bin/reconfctl", "--addr", addr, "bench", "--warmup", "0s", "--quiet", "--json", *args],
                     check=True, capture_output=True, text=True).stdout
after = {p: cpu(p) for p in procs}
gen = resource.getrusage(resource.RUSAGE_CHILDREN)
r = json.loads(out)
n = r["delegations_per_sec"] * r["seconds"]
if n == 0:
    sys.exit("bench-cpu: no delegations in this run (use a mix with delegate or batch)")
print(f"{r['delegations_per_sec']:.0f} delegations/s over {r['seconds']:.1f} s, load after {r['machine']['load_after']}")
total = 0.0
for p, a in sorted(procs.items(), key=lambda x: x[1]):
    us = (after[p] - before[p]) / n * 1e6
    total += us
    print(f"  reconfd {a:<16} {after[p] - before[p]:6.2f} s CPU  {us:6.1f} µs per delegation")
us = (gen.ru_utime + gen.ru_stime) / n * 1e6
total += us
print(f"  reconfctl bench          {gen.ru_utime + gen.ru_stime:6.2f} s CPU  {us:6.1f} µs per delegation")
print(f"  all processes                            {total:6.1f} µs per delegation")
PY
