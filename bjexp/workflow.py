"""The pieces the stage entry points share: data tables, model assembly, fitting with resume."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from bjexp import prepare
from bjexp.data import manifest as mf
from bjexp.data.datamodule import JourneyDataModule, Tables, encode_tables, load_tables
from bjexp.io import config_hash
from bjexp.models.build import build_encoder, build_scheme, build_unet, build_vae
from bjexp.models.diffusion import JourneyDiffusion
from bjexp.registration import register_manifest


@dataclass
class Data:
    manifest_path: Path
    df: pd.DataFrame
    tables: Tables
    index: dict[str, np.ndarray]


def load_data(cfg: DictConfig) -> Data:
    path = register_manifest(prepare.run(cfg), cfg)
    df = mf.read(path)
    tables, index = load_tables(df, cfg.model.image_size)
    return Data(path, df, tables, index)


def build_module(cfg: DictConfig, data: Data) -> JourneyDiffusion:
    train_rows = np.flatnonzero((data.df["split"] == "train").to_numpy())
    train_imgs = data.tables.images[np.unique(np.concatenate([data.index["prior"][train_rows],
                                                              data.index["current"][train_rows]]))].numpy()
    vae = build_vae(cfg, train_imgs, data.df, train_rows)
    encoder = build_encoder(cfg, data.df)
    cached = cfg.model.cache_latents and not cfg.encoder.trainable
    if cached:
        key = config_hash(cfg.model.name, cfg.model.pretrained_path, vae.config, cfg.encoder, cfg.seed)
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
    return JourneyDiffusion(unet, vae, encoder, scheme, null, optim=cfg.model.optim, cfg_dropout=cfg.method.cfg_dropout,
                            num_train_timesteps=cfg.model.num_train_timesteps, prediction_type=cfg.model.prediction_type,
                            texts=data.tables.texts, seed=cfg.seed)


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def make_trainer(cfg: DictConfig, run_dir: Path, loggers) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from bjexp import slurm

    t = cfg.trainer
    ckpt = ModelCheckpoint(dirpath=checkpoint_dir(run_dir), save_last=True, save_top_k=0,
                           every_n_train_steps=t.checkpoint_every_n_steps, save_on_train_epoch_end=False)
    return L.Trainer(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
                     precision=t.precision, max_steps=t.max_steps, max_epochs=-1, log_every_n_steps=t.log_every_n_steps,
                     val_check_interval=t.val_check_interval, check_val_every_n_epoch=None,
                     limit_val_batches=t.limit_val_batches, gradient_clip_val=t.gradient_clip_val,
                     accumulate_grad_batches=t.accumulate_grad_batches, deterministic=t.deterministic,
                     enable_progress_bar=t.enable_progress_bar, logger=loggers or False,
                     # submitit owns requeueing: Lightning's auto-requeue off, SIGTERM handed back to submitit
                     callbacks=[ckpt, *slurm.lightning_callbacks()], plugins=slurm.lightning_plugins(), default_root_dir=str(run_dir), num_sanity_val_steps=0,
                     use_distributed_sampler=False)  # StepBatchSampler shards by rank itself


def per_device_batch(cfg: DictConfig) -> int:
    world = (cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1) * cfg.trainer.num_nodes
    per = cfg.model.optim.batch_size // (world * cfg.trainer.accumulate_grad_batches)
    if per * world * cfg.trainer.accumulate_grad_batches != cfg.model.optim.batch_size:
        raise ValueError(f"model.optim.batch_size={cfg.model.optim.batch_size} is not divisible by devices x nodes x "
                         f"accumulation = {world * cfg.trainer.accumulate_grad_batches}")
    return per


def fit(cfg: DictConfig, module: JourneyDiffusion, data: Data, run_dir: Path, loggers) -> L.Trainer:
    """Train; resumes from <run_dir>/checkpoints/last.ckpt when the run dir is reused (or requeued)."""
    dm = JourneyDataModule(data.df, data.tables, data.index, batch_size=per_device_batch(cfg),
                           num_workers=cfg.trainer.num_workers,
                           cached=cfg.model.cache_latents and not cfg.encoder.trainable, seed=cfg.seed)
    trainer = make_trainer(cfg, run_dir, loggers)
    last = checkpoint_dir(run_dir) / "last.ckpt"
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if last.is_file() else None)
    if trainer.global_step >= cfg.trainer.max_steps and trainer.is_global_zero:
        trainer.save_checkpoint(last)  # the final state, whatever the checkpoint interval
    return trainer
