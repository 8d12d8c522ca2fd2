"""Build the model parts from config: one place that knows tiny vs pretrained weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from bjexp.instantiate import instantiate
from bjexp.models.assets import MissingWeightsError
from bjexp.models.encoders import OpenClipTextEncoder, TextEncoder
from bjexp.models.unet import tiny_unet, widen_conv_in
from bjexp.models.vae import load_vae, train_tiny_vae


def _pretrained(cfg: DictConfig, sub: str) -> Path | None:
    if not cfg.model.pretrained_path:
        return None
    p = Path(cfg.model.pretrained_path)
    if not (p / sub / "config.json").is_file():
        raise MissingWeightsError(f"{p / sub}", f"model={cfg.model.name} expects a diffusers folder with {sub}/",
                                  fetch=f"python -m bjexp.assets fetch {cfg.model.name}")
    return p


def build_vae(cfg: DictConfig, tables_images: np.ndarray, df: pd.DataFrame, train_rows: np.ndarray):
    if (p := _pretrained(cfg, "vae")) is not None:
        return load_vae(p, subfolder="vae")
    return load_vae(train_tiny_vae(cfg.model.vae, tables_images, Path(cfg.paths.cache_dir), cfg.seed))


def build_encoder(cfg: DictConfig, df: pd.DataFrame) -> TextEncoder:
    enc = cfg.encoder
    if enc.path:
        return OpenClipTextEncoder(enc.path, enc.max_length, enc.trainable)
    from bjexp.models.tiny_encoders import build_tiny_encoder

    folder = build_tiny_encoder(enc, df, cfg.model.image_size, Path(cfg.paths.cache_dir), cfg.seed)
    return OpenClipTextEncoder(folder, enc.max_length, enc.trainable)


def build_scheme(cfg: DictConfig):
    return instantiate({"_target_": cfg.conditioning._target_})


def build_unet(cfg: DictConfig, scheme, latent_channels: int, cross_dim: int, latent_size: int):
    in_ch = scheme.in_channels(latent_channels)
    if (p := _pretrained(cfg, "unet")) is not None:
        from diffusers import UNet2DConditionModel

        return widen_conv_in(UNet2DConditionModel.from_pretrained(p, subfolder="unet"), in_ch)
    return tiny_unet(cfg.model.unet, in_ch, latent_channels, cross_dim, latent_size)
