"""A toy Hydra app with bjexp.train's contract, small enough for SLURM tests: a deterministic training loop that
checkpoints every step to <run_dir>/checkpoints/last.ckpt, resumes from it when its run dir is reused (a requeued job),
writes results.json (rank 0) and returns its metrics; and a sharded stage (`kind=shard shard=i/n`).

    python tests/slurm/toy_app.py -m hydra/launcher=slurm hydra.searchpath=[file://$PWD/conf] seed=0,1
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import bjexp
from bjexp.io import atomic_write, write_json
from bjexp.slurm import Shard, is_rank_zero, job_info, register_resolvers

DIM = 8


def problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed well-conditioned quadratic 0.5 w'Aw - b'w."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(DIM, DIM))
    return m @ m.T / DIM + np.eye(DIM), rng.normal(size=DIM)


def sgd_step(w: np.ndarray, step: int, cfg: DictConfig, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    noise = np.random.default_rng([cfg.seed, step]).normal(size=DIM) * 0.01  # per-step noise: resume-exact
    return w - cfg.lr * (a @ w - b + noise)


def save_ckpt(path: Path, step: int, w: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.savez(f, step=step, w=w)


def load_ckpt(path: Path) -> tuple[int, np.ndarray] | None:
    if not path.exists():
        return None
    with np.load(path) as z:
        return int(z["step"]), z["w"].copy()


def train(cfg: DictConfig, run_dir: Path) -> dict:
    a, b = problem(cfg.seed)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    step, w = load_ckpt(ckpt) or (0, np.zeros(DIM))
    rank0 = is_rank_zero()
    if rank0:
        with open(run_dir / "attempts.jsonl", "a") as f:  # one line per (re)start: what the requeue test inspects
            f.write(json.dumps({"resumed_from": step, **job_info()}) + "\n")
    if "SLURM_PROCID" in os.environ:  # per-rank trace for the multi-task test
        env = {k: os.environ.get(k) for k in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE")}
        write_json(run_dir / "ranks" / f"{os.environ['SLURM_PROCID']}.json", env)
    while step < cfg.steps:
        w = sgd_step(w, step, cfg, a, b)
        step += 1
        if cfg.fail_at_step is not None and step == cfg.fail_at_step:
            raise RuntimeError(f"toy failure at step {step}")
        if rank0:  # as in Lightning: rank 0 writes checkpoints and metadata
            save_ckpt(ckpt, step, w)
        time.sleep(cfg.step_seconds)
    results = {"train/steps": step, "train/loss": float(0.5 * w @ a @ w - b @ w), "weights": w.tolist(),
               "slurm": job_info(), "code": str(Path(bjexp.__file__).parent)}
    if rank0:
        write_json(run_dir / "results.json", results)
    return results


def lightning_train(cfg: DictConfig, run_dir: Path) -> dict:
    """The same contract through Lightning, set up the way bjexp.train must be under submitit: checkpoints every step,
    resume from last.ckpt, Lightning's SLURM environment without auto-requeue, SIGTERM left to submitit."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from bjexp import slurm

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(DIM, 1)

        def training_step(self, batch, i):
            time.sleep(cfg.step_seconds)
            (x,) = batch
            return (self.lin(x) - x.sum(1, keepdim=True)).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=cfg.lr)

    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = torch.load(last, weights_only=False)["global_step"] if last.exists() else 0  # our own file
    if is_rank_zero():
        with open(run_dir / "attempts.jsonl", "a") as f:
            f.write(json.dumps({"resumed_from": resumed, **job_info()}) + "\n")
    torch.manual_seed(cfg.seed)
    x = torch.randn(64, DIM)
    trainer = pl.Trainer(
        max_steps=cfg.steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(run_dir), plugins=slurm.lightning_plugins(),
        callbacks=[ModelCheckpoint(dirpath=last.parent, save_last=True, save_top_k=0, every_n_train_steps=1),
                   *(slurm.lightning_callbacks() if cfg.keep_sigterm else [])])
    trainer.fit(Tiny(), torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4),
                ckpt_path=str(last) if last.exists() else None)
    results = {"train/steps": trainer.global_step, "slurm": job_info()}
    if is_rank_zero():
        write_json(run_dir / "results.json", results)
    return results


def item_value(i: int, seed: int) -> float:
    return float(np.random.default_rng([seed, i]).normal())


def shard_stage(cfg: DictConfig, run_dir: Path) -> dict:
    shard = Shard.parse(cfg.shard)
    done = {i: item_value(i, cfg.seed) for i in shard.select(range(cfg.n_items))}
    out = {"shard": str(shard), "items": done, "slurm": job_info()}
    write_json(run_dir / "shard.json", out)
    return out


def task(cfg: DictConfig) -> dict:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    return {"train": train, "shard": shard_stage, "lightning": lightning_train}[cfg.kind](cfg, run_dir)


register_resolvers()
main = hydra.main(config_path="conf", config_name="toy", version_base="1.3")(task)

if __name__ == "__main__":
    main()
