#!/usr/bin/env bash
# CI part for SLURM (called by .ci/run): start a fresh local cluster (apt-installs slurm-wlm, slurmdbd, munge and
# mariadb-server if missing; needs root), run the SLURM tests, and always stop the cluster by PID and delete its state.
#   slurm/ci.sh [extra pytest args]
# env: PYTHON (interpreter with bjexp's deps; default .venv/bin/python if present, else python3),
#      BJEXP_SLURM_TESTS=all (also the slow ones: real time limit, Lightning preemption, the real bjexp.train).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then PY=python3; [[ -x "$REPO/.venv/bin/python" ]] && PY="$REPO/.venv/bin/python"; fi

# A fresh state folder per run: job ids start at 1 and nothing from an earlier run can interfere. Its own port range,
# so a developer's cluster on the default ports (6817-6820) can keep running.
export BJEXP_SLURM_STATE
BJEXP_SLURM_STATE=$(mktemp -d "${TMPDIR:-/tmp}/bjexp-slurm-ci.XXXXXX")
export BJEXP_SLURM_PORT_BASE=${BJEXP_SLURM_PORT_BASE:-6917}
cleanup() { "$REPO/slurm/stop-local-cluster.sh" --purge || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

"$REPO/slurm/start-local-cluster.sh"
# shellcheck disable=SC1091
source "$BJEXP_SLURM_STATE/env.sh"
cd "$REPO"
# The slow real-time-limit test (~3 min) runs with BJEXP_SLURM_TESTS=all.
MARK="slurm and not slow"
[[ "${BJEXP_SLURM_TESTS:-}" == all ]] && MARK=slurm
HF_HUB_OFFLINE=1 "$PY" -m pytest -m "$MARK" tests/slurm -q -p no:cacheprovider "$@"
