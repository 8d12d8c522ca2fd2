"""SLURM glue that needs no cluster: launcher profiles size jobs from the trainer config, shards, run metadata,
refusal messages, and Lightning leaving SIGTERM/requeue to submitit."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from bjexp import slurm
from bjexp.slurm import Shard, shard_sweep

REPO = Path(__file__).resolve().parents[2]
TOY_CONF = Path(__file__).resolve().parent / "conf"
PROFILES = sorted(p.stem for p in (REPO / "conf" / "hydra" / "launcher").glob("*.yaml"))


def launcher_cfg(*overrides: str, searchpath: list[Path] | None = None):
    slurm.register_resolvers()
    paths = ",".join(f"file://{p}" for p in [REPO / "conf", *(searchpath or [])])
    with initialize_config_dir(config_dir=str(TOY_CONF), version_base="1.3"):
        cfg = compose("toy", overrides=[f"hydra.searchpath=[{paths}]", *overrides], return_hydra_config=True)
    return cfg.hydra.launcher


# ---- shards ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_items,count", [(10, 3), (7, 7), (3, 5), (0, 2), (100, 1)])
def test_shards_partition_the_items(n_items, count):
    items = [f"study{i:03d}" for i in range(n_items)]
    parts = [Shard(i, count).select(items) for i in range(count)]
    flat = [x for p in parts for x in p]
    assert sorted(flat) == items and len(flat) == len(set(flat))  # disjoint, union = all
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shard_spec_parsing_and_sweep_value():
    assert Shard.parse("2/8") == Shard(2, 8) and Shard.parse(None) == Shard(0, 1) and str(Shard(2, 8)) == "2/8"
    for bad in ["8/8", "-1/4", "1of4", "3", "1/0"]:
        with pytest.raises(ValueError, match="i/n"):
            Shard.parse(bad)
    assert shard_sweep(3) == "0/3,1/3,2/3"
    # The value is valid Hydra sweep syntax and expands to one job per shard.
    (ov,) = OverridesParser.create().parse_overrides([f"shard={shard_sweep(3)}"])
    assert [Shard.parse(v) for v in ov.sweep_string_iterator()] == [Shard(0, 3), Shard(1, 3), Shard(2, 3)]


# ---- launcher profiles ----------------------------------------------------------------------------------------------

def test_generic_profile_sizes_a_cpu_job_from_the_trainer(monkeypatch):
    for var in ("BJEXP_SLURM_PARTITION", "BJEXP_SLURM_ACCOUNT", "BJEXP_SLURM_QOS"):
        monkeypatch.delenv(var, raising=False)
    lc = launcher_cfg("hydra/launcher=slurm", "trainer.num_workers=3")
    assert lc._target_ == "hydra_plugins.bjexp_launcher.bjexp_launcher.BjexpSlurmLauncher"
    assert (lc.nodes, lc.tasks_per_node, lc.gpus_per_node, lc.cpus_per_task) == (1, 1, None, 4)
    assert lc.partition is None and lc.account is None and lc.qos is None
    assert lc.max_num_timeout > 0 and lc.signal_delay_s > 0


def test_multi_gpu_profile_follows_devices_nodes_workers_and_env(monkeypatch):
    monkeypatch.setenv("BJEXP_SLURM_PARTITION", "gpu-a100")
    monkeypatch.setenv("BJEXP_SLURM_ACCOUNT", "proj42")
    lc = launcher_cfg("hydra/launcher=slurm_a100x8", "trainer.accelerator=gpu", "trainer.devices=8",
                      "trainer.num_nodes=2", "trainer.num_workers=15")
    assert (lc.nodes, lc.tasks_per_node, lc.gpus_per_node, lc.cpus_per_task) == (2, 8, 8, 16)
    assert (lc.partition, lc.account) == ("gpu-a100", "proj42")
    lc = launcher_cfg("hydra/launcher=slurm_a100x8", "trainer.accelerator=gpu", "trainer.devices=8")
    assert lc.cpus_per_task == 10  # the profile's floor per GPU task


def test_site_settings_come_from_git_ignored_conf_local(tmp_path, monkeypatch):
    monkeypatch.setenv("BJEXP_SLURM_PARTITION", "from-env")
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "slurm.yaml").write_text("partition: site-partition\nqos: high\n")
    lc = launcher_cfg("hydra/launcher=slurm_1gpu", "trainer.accelerator=gpu", searchpath=[tmp_path])
    assert (lc.partition, lc.qos, lc.gpus_per_node) == ("site-partition", "high", 1)
    assert "/conf/local/" in (REPO / ".gitignore").read_text()


def test_gpu_profile_with_cpu_trainer_fails_naming_the_fix():
    lc = launcher_cfg("hydra/launcher=slurm_1gpu")
    with pytest.raises(InterpolationResolutionError, match="trainer.accelerator=gpu"):
        _ = lc.gpus_per_node
    with pytest.raises(InterpolationResolutionError, match="positive integer"):
        _ = launcher_cfg("hydra/launcher=slurm", "trainer.devices=auto").tasks_per_node


def test_local_profile_is_the_basic_launcher():
    assert launcher_cfg("hydra/launcher=local")._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_hold_no_site_values(profile):
    raw = OmegaConf.load(REPO / "conf" / "hydra" / "launcher" / f"{profile}.yaml")
    for key in ("partition", "account", "qos"):
        assert key not in raw or "${oc.env:" in str(OmegaConf.to_container(raw)[key])
    if profile.startswith("slurm"):
        lc = launcher_cfg(f"hydra/launcher={profile}", "trainer.accelerator=gpu")
        assert lc.max_num_timeout > 0 and lc.timeout_min >= 60


def test_submission_error_names_the_request():
    err = slurm.submission_error({"nodes": 1, "gpus_per_node": 2, "partition": None},
                                 "sbatch: error: Invalid generic resource (gres) specification\n")
    msg = str(err)
    assert "gpus_per_node=2" in msg and "partition" not in msg.split(":")[0]
    assert "Invalid generic resource" in msg and "trainer.accelerator=cpu" in msg


# ---- run metadata / ranks ----------------------------------------------------------------------------------------------

def test_job_info_reads_slurm_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith("SLURM_"):
            monkeypatch.delenv(k)
    assert slurm.job_info() == {} and slurm.is_rank_zero()
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "10")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    monkeypatch.setenv("SLURM_PROCID", "1")
    info = slurm.job_info()
    assert (info["job_id"], info["array_job_id"], info["array_task_id"], info["restarts"]) == ("12", "10", "2", 3)
    assert not slurm.is_rank_zero()


# ---- Lightning under submitit -----------------------------------------------------------------------------------------

def test_lightning_slurm_plugin_has_auto_requeue_off(monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    (env,) = slurm.lightning_plugins()
    assert type(env).__name__ == "SLURMEnvironment" and env.auto_requeue is False


def _fit_with_sigterm_at_step(callbacks) -> int:
    import lightning.pytorch as pl
    import torch

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def training_step(self, batch, i):
            if self.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends first on preemption
            return self.lin(batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(Tiny(), torch.utils.data.DataLoader(torch.randn(64, 2), batch_size=4))
    return trainer.global_step


def test_sigterm_goes_back_to_submitit_during_fit(monkeypatch):
    """Without the callback Lightning ends fit on SIGTERM (and exits), so a preempted job would never reach the SIGUSR2
    that makes submitit requeue it. With it, submitit's own SIGTERM choice (bypass) stays in force."""
    seen = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))  # stands in for submitit's
    try:
        with pytest.raises(SystemExit):
            _fit_with_sigterm_at_step(callbacks=[])
        signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
        seen.clear()
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
        callbacks = slurm.lightning_callbacks()
        assert len(callbacks) == 1
        assert _fit_with_sigterm_at_step(callbacks) == 8 and seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, original)


def test_profiles_size_jobs_from_the_project_trainer_config():
    from conftest import compose  # tests/conftest.py: the project's config, as `python -m bjexp.train` composes it

    lc = compose(["hydra/launcher=slurm_a100x8", "trainer.accelerator=gpu", "trainer.devices=8",
                  "trainer.num_nodes=2"]).hydra.launcher
    assert (lc.nodes, lc.tasks_per_node, lc.gpus_per_node) == (2, 8, 8) and lc.max_num_timeout > 0
    lc = compose(["hydra/launcher=slurm"]).hydra.launcher  # the default trainer is a 1-device CPU trainer
    assert (lc.nodes, lc.tasks_per_node, lc.gpus_per_node) == (1, 1, None)
