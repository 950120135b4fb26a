#!/usr/bin/env bash
# Stop the cluster start.sh started (slurmd, slurmctld, munged, in this order) and remove its state.
# Idempotent: stopping a stopped cluster does nothing.
set -uo pipefail
DIR="${EXPLORER_SLURM_DIR:-/tmp/explorer-local-slurm}"
for daemon in slurmd slurmctld munged; do
  pidfile="$DIR/$daemon.pid"
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
done
rm -rf "$DIR"
