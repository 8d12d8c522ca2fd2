"""The SLURM path against a real (local, one-node) cluster: sweeps, requeue + resume, arrays, failures, refusals."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import submitit
from omegaconf import OmegaConf

import toy_app
from slurm_helpers import (APP_OVERRIDES, HERE, REPO, SLURM_OVERRIDES, multirun_cmd, run_multirun, sacct_states,
                           slurm_env, wait_for)  # noqa: F401 (slurm_env is a fixture)

pytestmark = pytest.mark.slurm


def toy_cfg(**overrides):
    base = OmegaConf.load(HERE / "conf" / "toy.yaml")
    base.pop("hydra")
    return OmegaConf.merge(base, overrides)


def local_result(tmp_path: Path, **overrides) -> dict:
    """The same task run here, uninterrupted, without SLURM: the reference a SLURM run must reproduce."""
    run_dir = tmp_path / "reference"
    run_dir.mkdir(parents=True)
    return toy_app.train(toy_cfg(**overrides), run_dir)


def submitted_job_ids(sweep_dir: Path) -> list[str]:
    return sorted(p.name for p in (sweep_dir / ".submitit").glob("*") if p.is_dir())


def test_two_job_multirun_returns_metrics(slurm_env, tmp_path, monkeypatch):
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    for k, v in slurm_env.items():
        monkeypatch.setenv(k, v)
    sweep = tmp_path / "sweep"
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name="toy_app", config_search_path=create_config_search_path(
            str(HERE / "conf")))
        returns = hydra.multirun(config_name="toy", task_function=toy_app.task, overrides=[
            *APP_OVERRIDES, *SLURM_OVERRIDES, f"hydra.sweep.dir={sweep}", "seed=0,1"])
    finally:
        GlobalHydra.instance().clear()

    (batch,) = returns
    assert [r.overrides for r in batch] == [["seed=0"], ["seed=1"]]
    for num, r in enumerate(batch):
        metrics = r.return_value
        on_disk = json.loads((sweep / str(num) / "results.json").read_text())
        assert metrics == on_disk
        ref = local_result(tmp_path / str(num), seed=num)
        assert metrics["train/steps"] == 20
        assert metrics["weights"] == ref["weights"]
    job_ids = {r.return_value["slurm"]["job_id"] for r in batch}
    assert len(job_ids) == 2 and batch[0].return_value["weights"] != batch[1].return_value["weights"]
    array_id = batch[0].return_value["slurm"]["array_job_id"]
    # Accounting reaches slurmdbd asynchronously, a moment after the launcher has the results.
    wait_for(lambda: sacct_states(array_id) == ["COMPLETED", "COMPLETED"], 30, "sacct to record both jobs")


def test_one_task_per_device_and_rank_zero_writes(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    res = run_multirun(slurm_env, sweep, "trainer.devices=2")
    assert res.returncode == 0, res.stderr
    ranks = {p.stem: json.loads(p.read_text()) for p in (sweep / "0" / "ranks").glob("*.json")}
    assert sorted(ranks) == ["0", "1"]  # both tasks ran the job, in one allocation
    assert all(r["SLURM_NTASKS"] == "2" and r["SLURM_NTASKS_PER_NODE"] == "2" for r in ranks.values())
    assert len((sweep / "0" / "attempts.jsonl").read_text().splitlines()) == 1  # metadata from rank 0 only
    assert json.loads((sweep / "0" / "results.json").read_text())["slurm"]["ntasks"] == 2


def test_interrupted_job_is_requeued_and_resumes_to_the_same_result(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    ckpt = sweep / "0" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(multirun_cmd(sweep, "steps=20", "step_seconds=0.4"), env=slurm_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (toy_app.load_ckpt(ckpt) or (0,))[0] >= 5, 60, "the job to pass step 5")
        (job_id,) = submitted_job_ids(sweep)
        # What SLURM does `signal_delay_s` before the time limit (submitit's test helper: scancel --signal USR2).
        submitit.SlurmJob(sweep / ".submitit" / "%j", job_id)._interrupt(timeout=True)
        out, _ = proc.communicate(timeout=180)  # requeued jobs wait cred_expire (30 s) before they start again
    finally:
        proc.kill()
    assert proc.returncode == 0, out

    attempts = [json.loads(line) for line in (sweep / "0" / "attempts.jsonl").read_text().splitlines()]
    assert [(a["job_id"], a["restarts"]) for a in attempts] == [(job_id, 0), (job_id, 1)]
    assert attempts[0]["resumed_from"] == 0 and 5 <= attempts[1]["resumed_from"] < 20  # resumed, not restarted
    result = json.loads((sweep / "0" / "results.json").read_text())
    ref = local_result(tmp_path, steps=20)
    assert result["train/steps"] == 20
    assert np.array_equal(result["weights"], ref["weights"])  # bit-identical to the uninterrupted run
    wait_for(lambda: sacct_states(job_id) == ["COMPLETED"], 30, "sacct to record the completion")
    assert "REQUEUED" in sacct_states(job_id, duplicates=True)


def test_job_array_over_shards_unions_to_the_single_run(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    n_items = 10
    res = run_multirun(slurm_env, sweep, "kind=shard", f"n_items={n_items}", "shard=0/3,1/3,2/3")
    assert res.returncode == 0, res.stderr
    shards = [json.loads((sweep / str(i) / "shard.json").read_text()) for i in range(3)]
    # One SLURM job array, one task per shard.
    assert len({s["slurm"]["array_job_id"] for s in shards}) == 1
    assert sorted(s["slurm"]["array_task_id"] for s in shards) == ["0", "1", "2"]
    keys = [set(s["items"]) for s in shards]
    assert sum(map(len, keys)) == n_items and set().union(*keys) == {str(i) for i in range(n_items)}
    merged = {int(k): v for s in shards for k, v in s["items"].items()}
    single = toy_app.shard_stage(toy_cfg(kind="shard", n_items=n_items), tmp_path)["items"]
    assert merged == single


def test_failing_job_surfaces_its_remote_traceback(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    res = run_multirun(slurm_env, sweep, "fail_at_step=3")
    assert res.returncode != 0
    (job_id,) = submitted_job_ids(sweep)
    err = res.stderr
    assert "RuntimeError: toy failure at step 3" in err
    assert f"remote traceback (SLURM job {job_id}" in err
    assert "in train" in err.split("remote traceback", 1)[1]  # the frame that raised, from the node
    log = (sweep / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
    assert "toy failure at step 3" in log


def test_gpu_request_on_cpu_cluster_is_refused_clearly(slurm_env, tmp_path):
    sweep = tmp_path / "sweep"
    res = run_multirun(slurm_env, sweep, "trainer.accelerator=gpu", "trainer.devices=1", timeout=60)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("bjexp.slurm.SlurmSubmissionError: SLURM refused the job")
    assert "gpus_per_node=1" in last and "Invalid generic resource" in last
    assert submitted_job_ids(sweep) == []  # refused at submission: nothing queued, nothing left pending


def test_submit_runs_the_sweep_from_a_frozen_snapshot(slurm_env, tmp_path):
    env = {k: v for k, v in slurm_env.items() if k != "PYTHONPATH"}  # the snapshot alone must provide the code
    env["PYTHON"] = sys.executable
    sweep = tmp_path / "sweep"
    res = subprocess.run(
        [str(REPO / "slurm" / "submit"), "--snapshots", str(tmp_path / "snaps"), "--sweep-dir", str(sweep),
         "tests/slurm/toy_app.py", *SLURM_OVERRIDES, "hydra.searchpath=[file://conf]", "seed=3"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"resume    : {sweep / 'resume.sh'}" in res.stdout and (sweep / "resume.sh").is_file()
    (snap,) = (tmp_path / "snaps").glob("*/*")
    pid = int((sweep / "submit.pid").read_text())
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 90, "the background Hydra process to finish")
    result = json.loads((sweep / "0" / "results.json").read_text())
    assert result["code"] == str(snap / "bjexp")  # the job imported the snapshot, not the working tree
    assert result["weights"] == local_result(tmp_path, seed=3)["weights"]
    meta = json.loads((snap / ".bjexp-snapshot.json").read_text())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert meta["git_sha"] == head.strip() and meta["sweep_dir"] == str(sweep)
    assert not (snap / "bjexp" / "slurm.py").stat().st_mode & 0o222  # frozen: read-only


@pytest.mark.slow
def test_real_time_limit_requeues_and_resumes(slurm_env, tmp_path):
    """SLURM's own time-limit signal (no helper): 2-minute limit, SIGUSR2 60 s before it, 2 minutes of work."""
    sweep = tmp_path / "sweep"
    res = run_multirun(slurm_env, sweep, "steps=60", "step_seconds=2", "hydra.launcher.timeout_min=2",
                       "hydra.launcher.signal_delay_s=60", timeout=540)
    assert res.returncode == 0, res.stderr
    attempts = [json.loads(line) for line in (sweep / "0" / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) >= 2 and attempts[-1]["resumed_from"] > 0
    result = json.loads((sweep / "0" / "results.json").read_text())
    assert np.array_equal(result["weights"], local_result(tmp_path, steps=60)["weights"])


def _preempt_lightning_job(env, sweep: Path, keep_sigterm: bool) -> tuple[subprocess.Popen, str, str]:
    """Start a Lightning job; once it has checkpointed, preempt it the way SLURM does: SIGTERM, a grace period, then
    the SIGUSR2 on which submitit checkpoints and requeues."""
    proc = subprocess.Popen(multirun_cmd(sweep, "kind=lightning", "steps=30", "step_seconds=0.3",
                                         f"keep_sigterm={keep_sigterm}"),
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (sweep / "0" / "checkpoints" / "last.ckpt").exists(), 120, "the first Lightning checkpoint")
        (job_id,) = submitted_job_ids(sweep)
        subprocess.run(["scancel", "--signal=TERM", job_id], check=True)
        time.sleep(3)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=False)  # the job may already be gone
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    return proc, job_id, out


@pytest.mark.slow  # ~1-1.5 min (Lightning start-up twice + the requeue wait); the fast glue test covers the callback
def test_preempted_lightning_job_is_requeued_and_resumes(slurm_env, tmp_path):
    """Lightning >= 2 ends fit on SIGTERM; with bjexp.slurm.lightning_callbacks() SIGTERM stays submitit's."""
    sweep = tmp_path / "sweep"
    proc, job_id, out = _preempt_lightning_job(slurm_env, sweep, keep_sigterm=True)
    assert proc.returncode == 0, out
    attempts = [json.loads(line) for line in (sweep / "0" / "attempts.jsonl").read_text().splitlines()]
    assert [a["restarts"] for a in attempts] == [0, 1] and attempts[1]["resumed_from"] > 0
    assert json.loads((sweep / "0" / "results.json").read_text())["train/steps"] == 30
    log = (sweep / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
    assert "Bypassing signal SIGTERM" in log and "Restoring states from the checkpoint" in log


@pytest.mark.slow
def test_without_the_callback_a_preempted_lightning_job_fails(slurm_env, tmp_path):
    """The control for the test above: Lightning's own SIGTERM handling kills the job before submitit can requeue."""
    sweep = tmp_path / "sweep"
    proc, job_id, out = _preempt_lightning_job(slurm_env, sweep, keep_sigterm=False)
    assert proc.returncode != 0 and "has not produced any output (state: FAILED)" in out
    assert len((sweep / "0" / "attempts.jsonl").read_text().splitlines()) == 1
