"""The pieces the stage entry points share: data tables, model assembly, fitting with resume."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from bjexp import prepare
from bjexp.checkpoints import checkpoint_dir, last_checkpoint
from bjexp.data import manifest as mf
from bjexp.data.datamodule import JourneyDataModule, Tables, encode_tables, load_tables
from bjexp.errors import ConfigError, RunDirError
from bjexp.io import config_hash
from bjexp.logs import route_library_loggers
from bjexp.models.build import build_encoder, build_scheme, build_unet, build_vae
from bjexp.models.diffusion import JourneyDiffusion
from bjexp.models.unet import tune
from bjexp.registration import register_manifest

route_library_loggers()  # Lightning and diffusers were just imported: their lines go to the log file, not stderr


@dataclass
class Data:
    manifest_path: Path  # what the model trains on (after registration and the same-pairs rule)
    df: pd.DataFrame
    tables: Tables  # its feature cache (moments/states) is filled only by the module built for this run
    index: dict[str, np.ndarray]
    prepared_path: Path | None = None  # the manifest before registration


def load_data(cfg: DictConfig) -> Data:
    from bjexp import preflight

    preflight.check(cfg)  # missing weights, a bad sampler, zero steps... fail now, not after data preparation
    prepared = prepare.run(cfg)
    mf.require_complete(prepared)
    path = register_manifest(prepared, cfg)
    df = mf.read(path)
    mf.require_splits(df, path)
    tables, index = load_tables(df, cfg.model.image_size)
    return Data(path, df, tables, index, prepared_path=Path(prepared))


def pretraining_manifest(data: Data) -> pd.DataFrame:
    """What the tiny VAE and tiny text encoder pretrain on: the manifest as prepared, before registration and the
    same-pairs rule, so all arms of a registration sweep share one autoencoder and one encoder."""
    if data.prepared_path is None or Path(data.prepared_path) == Path(data.manifest_path):
        return data.df
    return mf.read(data.prepared_path)


def vae_training_images(data: Data, image_size: int) -> np.ndarray:
    """Every image of the pretraining manifest's training split (uint8, N x H x W)."""
    df = pretraining_manifest(data)
    tables, index = (data.tables, data.index) if df is data.df else load_tables(df, image_size)
    train_rows = np.flatnonzero((df["split"] == "train").to_numpy())
    return tables.images[np.unique(np.concatenate([index["prior"][train_rows], index["current"][train_rows]]))].numpy()


def build_module(cfg: DictConfig, data: Data) -> JourneyDiffusion:
    vae = build_vae(cfg, None if cfg.model.pretrained_path else vae_training_images(data, cfg.model.image_size))
    vae_path = vae.config.get("_name_or_path") or cfg.model.pretrained_path
    encoder = build_encoder(cfg, pretraining_manifest(data))
    if uses_feature_cache(cfg):
        # Keyed by the exact weights (not only their configs): a rebuilt encoder or VAE never reuses stale states.
        key = config_hash(cfg.model.name, vae.config, cfg.encoder, cfg.seed, weights_fingerprint(vae_path),
                          weights_fingerprint(encoder.path))
        encode_tables(data.tables, vae, encoder, Path(cfg.paths.cache_dir), key)
        null = data.tables.null_text()
    else:
        with torch.no_grad():
            null = encoder.encode([""])
    scheme = build_scheme(cfg)
    latent_size = cfg.model.image_size // 2 ** (len(vae.config.block_out_channels) - 1)
    torch.manual_seed(cfg.seed)
    unet = build_unet(cfg, scheme, vae.config.latent_channels, encoder.width, latent_size)
    if cfg.model.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    m = cfg.model
    tune(unet, channels_last=m.channels_last, sdpa_backends=m.sdpa_backends, compile=m.compile)
    return JourneyDiffusion(unet, vae, encoder, scheme, null, optim=cfg.model.optim, cfg_dropout=cfg.method.cfg_dropout,
                            num_train_timesteps=cfg.model.num_train_timesteps, prediction_type=cfg.model.prediction_type,
                            texts=data.tables.texts, seed=cfg.seed, min_snr_gamma=cfg.model.min_snr_gamma,
                            total_steps=cfg.trainer.max_steps)


def weights_fingerprint(folder) -> list:
    """(name, size, mtime) of every weight file below a model folder: cheap, and changes whenever weights do."""
    if not folder:
        return []
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt"})
    return [str(folder.resolve())] + [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def load_trained(module: JourneyDiffusion, ckpt: Path) -> JourneyDiffusion:
    """A built module with a checkpoint's trained weights and EMA (weights_only: checkpoints are data, not code)."""
    from bjexp import checkpoints

    state = checkpoints.load(ckpt)
    module.load_state_dict(state["state_dict"])
    module.on_load_checkpoint(state)
    return module


def make_trainer(cfg: DictConfig, run_dir: Path, loggers) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary

    from bjexp import checkpoints, slurm
    from bjexp.tracking.progress_bar import StepProgressBar

    t = cfg.trainer
    # No version counter: resuming a run dir that was moved or copied (Lightning then no longer knows last.ckpt as
    # its own) wrote last-v1.ckpt beside it, and the next rerun resumed from the stale last.ckpt.
    ckpt = ModelCheckpoint(dirpath=checkpoint_dir(run_dir), save_last=True, save_top_k=0,
                           every_n_train_steps=t.checkpoint_every_n_steps, save_on_train_epoch_end=False,
                           enable_version_counter=False)
    return L.Trainer(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
                     precision=t.precision, max_steps=t.max_steps, max_epochs=-1, log_every_n_steps=t.log_every_n_steps,
                     val_check_interval=t.val_check_interval, check_val_every_n_epoch=None,
                     limit_val_batches=t.limit_val_batches, gradient_clip_val=t.gradient_clip_val,
                     accumulate_grad_batches=t.accumulate_grad_batches, deterministic=t.deterministic,
                     enable_progress_bar=t.enable_progress_bar, logger=loggers or False,
                     # ModelSummary: the plain one logs (to the log file); Lightning's default, rich, one prints.
                     # submitit owns requeueing: Lightning's auto-requeue off, SIGTERM handed back to submitit
                     callbacks=[ckpt, ModelSummary(), checkpoints.save_on_sigterm(last_checkpoint(run_dir)),
                                *slurm.lightning_callbacks(),
                                *([StepProgressBar()] if t.enable_progress_bar else [])],  # steps, not epochs
                     plugins=[*slurm.lightning_plugins(), checkpoints.checkpoint_io()], default_root_dir=str(run_dir),
                     num_sanity_val_steps=0,
                     use_distributed_sampler=False)  # StepBatchSampler shards by rank itself


def per_device_batch(cfg: DictConfig) -> int:
    world = (cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1) * cfg.trainer.num_nodes
    per = cfg.model.optim.batch_size // (world * cfg.trainer.accumulate_grad_batches)
    if per * world * cfg.trainer.accumulate_grad_batches != cfg.model.optim.batch_size:
        raise ConfigError(f"model.optim.batch_size={cfg.model.optim.batch_size} is not divisible by devices x nodes x "
                         f"accumulation = {world * cfg.trainer.accumulate_grad_batches}")
    return per


def stage_ends(cfg: DictConfig) -> list[tuple[str, str, int]]:
    """(name, kind, global step at which it ends) per curriculum stage; lengths from `steps` or `fraction` of
    trainer.max_steps, one stage may take the rest (steps: -1)."""
    total = cfg.trainer.max_steps
    stages = list(cfg.curriculum.stages)
    lengths = [s.steps if s.steps >= 0 else round(s.fraction * total) if s.fraction is not None else None
               for s in stages]
    if sum(x is None for x in lengths) > 1:
        raise ConfigError("curriculum: at most one stage may take the remaining steps (steps: -1)")
    rest = total - sum(x for x in lengths if x is not None)
    if rest < 0:
        raise ConfigError(f"curriculum stages need {total - rest} steps but trainer.max_steps={total}")
    ends, at = [], 0
    for s, n in zip(stages, lengths):
        at += rest if n is None else n
        ends.append((s.name, s.kind, at))
    return ends


def uses_feature_cache(cfg: DictConfig) -> bool:
    """Batches carry cached VAE moments and text states (a frozen encoder), not raw images and texts."""
    return cfg.model.cache_latents and not cfg.encoder.trainable


def datamodule(cfg: DictConfig, data: Data, kind: str) -> JourneyDataModule:
    t = cfg.trainer
    return JourneyDataModule(data.df, data.tables, data.index, batch_size=per_device_batch(cfg),
                             num_workers=t.num_workers, kind=kind, cached=uses_feature_cache(cfg), seed=cfg.seed,
                             pin_memory=t.pin_memory, prefetch_factor=t.prefetch_factor)


def fit(cfg: DictConfig, module: JourneyDiffusion, data: Data, run_dir: Path, loggers) -> L.Trainer:
    """Train through the curriculum stages; resumes from <run_dir>/checkpoints/last.ckpt when the run dir is
    reused (or requeued). Each stage continues the previous one's weights, optimizer and EMA (via last.ckpt)
    and the global step, so all stages log as one run; finished stages are listed in checkpoints/stages.json."""
    from omegaconf import open_dict

    last = last_checkpoint(run_dir)
    done_file = stages_file(run_dir)
    done = finished_stages(run_dir)
    trainer = None
    for name, kind, end in stage_ends(cfg):
        if name in done or (trainer is not None and end <= trainer.global_step):
            continue
        dm = datamodule(cfg, data, kind)
        stage_cfg = cfg.copy()
        with open_dict(stage_cfg):
            stage_cfg.trainer.max_steps = end
        trainer = make_trainer(stage_cfg, run_dir, loggers)
        _fit_or_exit(trainer, module, dm, last)
        if trainer.global_step < end:  # interrupted (e.g. SIGTERM before a requeue): the stage is not done
            return trainer
        trainer.save_checkpoint(last, weights_only=False)  # every rank calls it (it synchronises); rank 0 writes
        if trainer.is_global_zero:
            from bjexp.io import write_json

            write_json(done_file, done := done + [name])
    if trainer is None:  # everything done already: a trainer that restores the final state
        trainer = make_trainer(cfg, run_dir, loggers)
        _fit_or_exit(trainer, module, datamodule(cfg, data, stage_ends(cfg)[-1][1]), last)
    return trainer


def stages_file(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir) / "stages.json"


def finished_stages(run_dir: Path) -> list[str]:
    path = stages_file(run_dir)
    return json.loads(path.read_text()) if path.is_file() else []


def require_trained(cfg: DictConfig, run_dir: Path) -> Path:
    """The run's last.ckpt, checked readable and final: a run whose fit has not finished is refused (its samples
    would come from a partial checkpoint, and the resumed run's sample stage would keep them beside those of the
    trained model)."""
    from bjexp.checkpoints import require_last

    last = require_last(run_dir)
    missing = [name for name, _, _ in stage_ends(cfg) if name not in finished_stages(run_dir)]
    if missing:
        raise RunDirError(f"{run_dir} has not finished training (curriculum stages not done: {', '.join(missing)}), so "
                          f"its last checkpoint is partial. Resume it first: `python -m bjexp.train "
                          f"hydra.run.dir={run_dir}`")
    return last


def _fit_or_exit(trainer: L.Trainer, module, dm, last: Path) -> None:
    """trainer.fit, resuming from `last` when it exists. Lightning ends fit on SIGTERM with a SystemExit(0); here the
    checkpoint is saved (SaveOnSigterm) and the process exits 143, so a terminated run never looks like a success."""
    import sys

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from bjexp.checkpoints import Interrupted

    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.is_file() else None)
    except SIGTERMException:
        saved = f"checkpoint saved at step {trainer.global_step}: {last}" if last.is_file() else "no checkpoint yet"
        msg = f"training interrupted by SIGTERM ({saved}); run the same command again to resume"
        print(msg, file=sys.stderr, flush=True)
        raise Interrupted(msg) from None
