"""Fixture and helpers for the SLURM tests: a running local cluster (slurm/start-local-cluster.sh; slurm/ci.sh starts
one, runs these and stops it) and helpers that run the app under test with a SLURM launcher profile.
Not a conftest.py: tests/conftest.py is imported by name (`from conftest import ...`), and a second one would shadow it.
Test modules import the fixture from here."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# The app under test and its tiny settings, in one place. The toy app keeps bjexp.train's contract (run dir,
# checkpoints/last.ckpt resume, results.json, returned metrics); swap in `-m bjexp.train` plus the tiny overrides
# (trainer.max_steps=20 data.n_patients=40 eval.n_bootstrap=50 logger=csv) once the tests should train for real.
APP = [str(HERE / "toy_app.py")]
APP_OVERRIDES = [f"hydra.searchpath=[file://{REPO / 'conf'}]"]
# Short limits so a stuck job cannot hold CI for long; requeues are bounded by the profile's max_num_timeout.
SLURM_OVERRIDES = ["hydra/launcher=slurm", "hydra.launcher.timeout_min=5"]


def _cluster_up() -> str | None:
    conf = os.environ.get("SLURM_CONF")
    if not conf or not Path(conf).is_file():
        return "no local SLURM cluster: run slurm/start-local-cluster.sh and export SLURM_CONF (slurm/ci.sh does both)"
    return None


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """Environment for submitting: SLURM_CONF from the caller, this checkout first on PYTHONPATH (so the jobs import
    this tree's bjexp and the toy app, not an installed copy). Fails if SLURM_CONF is set but the cluster is down."""
    reason = _cluster_up()
    if reason:
        pytest.skip(reason)
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    assert ping.returncode == 0 and "UP" in ping.stdout, f"SLURM_CONF is set but slurmctld is not up: {ping.stdout}"
    path = os.pathsep.join([str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "1"}


def multirun_cmd(sweep_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, *APP, "-m", *APP_OVERRIDES, *SLURM_OVERRIDES, f"hydra.sweep.dir={sweep_dir}", *overrides]


def run_multirun(env: dict[str, str], sweep_dir: Path, *overrides: str, timeout: float = 120) \
        -> subprocess.CompletedProcess:
    return subprocess.run(multirun_cmd(sweep_dir, *overrides), env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def sacct_states(job_id: str, duplicates: bool = False) -> list[str]:
    """Job-level states SLURM's accounting recorded (with `duplicates`, every requeued incarnation too)."""
    cmd = ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"] + (["-D"] if duplicates else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]
