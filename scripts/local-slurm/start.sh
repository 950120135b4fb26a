#!/usr/bin/env bash
# Start a one-node SLURM cluster on localhost: munged, slurmctld and slurmd as root, their state, logs and
# config under $EXPLORER_SLURM_DIR (default /tmp/explorer-local-slurm). Idempotent: a running cluster is left
# as it is. Afterwards clients need SLURM_CONF=$EXPLORER_SLURM_DIR/slurm.conf (printed on the last line).
# Exit code 2 with one line on stderr when it cannot start (not root, packages missing, a daemon fails).
set -euo pipefail
DIR="${EXPLORER_SLURM_DIR:-/tmp/explorer-local-slurm}"
HERE="$(cd "$(dirname "$0")" && pwd)"
NODE=localhost
export SLURM_CONF="$DIR/slurm.conf"
fail() { echo "local-slurm: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || fail "must run as root (the daemons run as root here)"
for cmd in munged slurmctld slurmd sinfo; do
  command -v "$cmd" >/dev/null || fail "$cmd not found: apt-get install -y slurm-wlm munge"
done

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
node_up() { sinfo -h -n "$NODE" -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }

if alive "$DIR/munged.pid" && alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && node_up; then
  echo "SLURM_CONF=$SLURM_CONF"; exit 0
fi

mkdir -p "$DIR/munge" "$DIR/ctld" "$DIR/slurmd"
chmod 700 "$DIR/munge"
if [ ! -s "$DIR/munge/munge.key" ]; then
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none
  chmod 400 "$DIR/munge/munge.key"
fi
memory_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)  # as free -m, without procps
host=$(uname -n); host=${host%%.*}  # slurmctld must run on SlurmctldHost (the short host name)
sed -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$host|g" -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$(nproc)|g" \
    -e "s|@MEMORY_MB@|$memory_mb|g" -e "s|@CTLD_PORT@|${EXPLORER_SLURMCTLD_PORT:-6817}|g" \
    -e "s|@SLURMD_PORT@|${EXPLORER_SLURMD_PORT:-6818}|g" "$HERE/slurm.conf.in" > "$DIR/slurm.conf.new"
mv "$DIR/slurm.conf.new" "$SLURM_CONF"

alive "$DIR/munged.pid" || munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
  --pid-file="$DIR/munged.pid" --log-file="$DIR/munged.log" --seed-file="$DIR/munge/munged.seed" \
  || fail "munged did not start (see $DIR/munged.log)"
alive "$DIR/slurmctld.pid" || slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start (see $DIR/slurmctld.log)"
alive "$DIR/slurmd.pid" || slurmd -f "$SLURM_CONF" -N "$NODE" || fail "slurmd did not start (see $DIR/slurmd.log)"

for _ in $(seq 100); do   # the node registers within a second or two
  if node_up; then echo "SLURM_CONF=$SLURM_CONF"; exit 0; fi
  scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
  sleep 0.2
done
fail "the node did not come up: $(sinfo -h -o '%t %E' 2>&1 | head -1) (see $DIR/slurmd.log)"
