"""`python -m bjexp.train` itself on the local SLURM cluster: a sweep, and a requeue mid-training. Opt-in (`slow`: real
training on CPU takes minutes; `BJEXP_SLURM_TESTS=all slurm/ci.sh`). The fast tests use the toy app with the same
contract (test_slurm_cluster.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import submitit

from slurm_helpers import REPO, SLURM_OVERRIDES, slurm_env, wait_for  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

from conftest import TINY  # the suite's tiny settings (tests/conftest.py), one place


@pytest.fixture
def train_env(slurm_env, cache_dir):
    """Jobs share the session's tiny-world cache (built by the first job that needs it, atomically)."""
    return {**slurm_env, "HF_HUB_OFFLINE": "1", "BJEXP_CACHE": str(cache_dir), "BJEXP_PROGRESS": "0"}


def train_cmd(sweep: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "bjexp.train", "-m", *SLURM_OVERRIDES, "hydra.launcher.timeout_min=30",
            f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}", *TINY, *overrides]


def load_ckpt(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)  # written by this test's own runs


def test_train_sweep_completes_on_slurm(train_env, tmp_path):
    sweep = tmp_path / "sweep"
    res = subprocess.run(train_cmd(sweep, "seed=0,1"), env=train_env, cwd=REPO, capture_output=True, text=True,
                         timeout=1500)
    assert res.returncode == 0, res.stderr[-4000:]
    results = sorted(sweep.glob("*/results.json"))
    assert len(results) == 2
    jobs = {json.loads((r.parent / "run.json").read_text()).get("slurm_job_id") for r in results}
    assert len(jobs) == 2 and None not in jobs


def test_train_requeued_mid_training_resumes_to_the_same_weights(train_env, tmp_path):
    """Two identical trainings in one sweep (they differ only in an evaluation setting); job 0 is interrupted after
    its first checkpoint, requeued and resumed. Both must end at the same step with the same weights."""
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(train_cmd(sweep, "trainer.max_steps=40", "trainer.checkpoint_every_n_steps=5",
                                      "eval.n_bootstrap=20,21"),
                            env=train_env, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        run0 = sweep / "0"
        wait_for(lambda: (run0 / "checkpoints" / "last.ckpt").exists(), 900, "job 0's first checkpoint", interval=0.1)
        assert not (run0 / "results.json").exists(), "training finished before the interrupt; test inconclusive"
        (job0,) = [p.name for p in (sweep / ".submitit").glob("*_0")]
        submitit.SlurmJob(sweep / ".submitit" / "%j", job0)._interrupt(timeout=True)
        out, _ = proc.communicate(timeout=1500)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-4000:]
    log0 = (sweep / ".submitit" / job0 / f"{job0}_0_log.out").read_text()
    assert "Requeued job" in log0 and "Restoring states from the checkpoint" in log0
    run1 = sweep / "1"
    a, b = load_ckpt(run0 / "checkpoints" / "last.ckpt"), load_ckpt(run1 / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 40
    assert a["state_dict"].keys() == b["state_dict"].keys()
    import torch

    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
