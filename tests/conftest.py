"""Test-wide settings: offline, quiet progress, one shared tiny-world cache per session."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("BJEXP_PROGRESS", "0")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Settings small enough for a CPU test, large enough that every stage does real work.
TINY = [
    "data.n_patients=24", "data.classifier_images=240", "model.vae.train_steps=30", "model.optim.batch_size=8",
    "encoder.tiny.pretrain_steps=5", "eval.classifier.steps=20", "eval.segmenter.steps=10", "trainer.max_steps=6",
    "trainer.val_check_interval=3", "trainer.checkpoint_every_n_steps=3", "trainer.enable_progress_bar=false",
    "sampler.steps=2", "eval.n_bootstrap=20", "logger=csv",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the session (synthetic data, tiny VAE/encoders/classifier are built once)."""
    d = tmp_path_factory.mktemp("bjexp-cache")
    os.environ["BJEXP_CACHE"] = str(d)
    return d


def compose(overrides: list[str] | None = None, config_name: str = "config"):
    """Compose the repo's config the way `python -m bjexp.train` does (no Hydra app, so no run dir)."""
    from hydra import compose as hcompose, initialize_config_dir

    from bjexp import schema

    schema.register()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return hcompose(config_name, overrides=overrides or [], return_hydra_config=True)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cache_dir):
    """One finished tiny main job shared by the console, report and demo tests. Its stdout is a pipe (not a
    terminal), progress is on with a line per update, so the console is what a SLURM log would hold."""
    import subprocess
    import sys
    from types import SimpleNamespace

    run = tmp_path_factory.mktemp("tiny-run") / "run"
    env = {**os.environ, "BJEXP_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "BJEXP_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "bjexp.train", *TINY, "trainer.enable_progress_bar=true", "progress.interval_s=0",
           f"hydra.run.dir={run}"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    return SimpleNamespace(dir=run, stdout=p.stdout, stderr=p.stderr)
