#!/usr/bin/env bash
# Stop the cluster started by start-local-cluster.sh: cancel jobs, then stop each daemon by the PID in its pid file.
# Idempotent (nothing running = nothing to do). `--purge` also deletes the state folder (job ids restart at 1).
set -uo pipefail

STATE="${BJEXP_SLURM_STATE:-${XDG_STATE_HOME:-$HOME/.local/state}/bjexp-slurm}"
[[ "$STATE" == /* ]] || STATE="$PWD/$STATE"
log() { echo "stop-local-cluster: $*"; }

stop_pid() {  # stop_pid <name>: TERM, wait up to 15 s, then KILL
  local f="$STATE/run/$1.pid" pid
  [[ -s "$f" ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "$1 ($pid) ignored SIGTERM; killing"; kill -KILL "$pid"; fi
    log "$1 stopped ($pid)"
  fi
  rm -f "$f"
}

if [[ -s "$STATE/slurm.conf" ]] && [[ -s "$STATE/run/slurmctld.pid" ]]; then
  # Cancel what is still queued or running so slurmd does not leave orphaned job processes behind.
  SLURM_CONF="$STATE/slurm.conf" timeout 10 scancel --quiet --user="$(id -un)" 2>/dev/null || true
  sleep 1
fi
for d in slurmd slurmctld slurmdbd mariadb munged; do stop_pid "$d"; done

if [[ "${1:-}" == --purge ]]; then
  rm -rf "$STATE"
  log "state folder removed: $STATE"
fi
