"""Build the model parts from config: one place that knows tiny vs pretrained weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from bjexp.instantiate import instantiate
from bjexp.assets import require
from bjexp.models.encoders import OpenClipTextEncoder, TextEncoder
from bjexp.models.unet import tiny_unet, widen_conv_in
from bjexp.models.vae import load_vae, train_tiny_vae


def folder_asset(cfg: DictConfig) -> str:
    """The asset kind of model.pretrained_path (an IP2P folder under model=tiny for instructpix2pix_ft)."""
    return cfg.model.get("asset") or cfg.model.name


def _pretrained(cfg: DictConfig, sub: str, verify: bool = True) -> Path | None:
    if not cfg.model.pretrained_path:
        return None
    return require(folder_asset(cfg), folder=cfg.model.pretrained_path, subfolders=(sub,), verify=verify)


def check_weights(cfg: DictConfig) -> None:
    """Fail in milliseconds, before any data preparation, when a configured weight folder is incomplete
    (checksums are verified when each part is loaded)."""
    _pretrained(cfg, "vae", verify=False)
    _pretrained(cfg, "unet", verify=False)
    enc = cfg.encoder
    if enc.family == "hf_clip":
        require(folder_asset(cfg), folder=enc.path, subfolders=("text_encoder", "tokenizer"), verify=False)
    elif enc.path:
        require(enc.name, folder=enc.path, verify=False)


def build_vae(cfg: DictConfig, training_images: np.ndarray | None = None):
    """SD's VAE from model.pretrained_path, or the tiny one trained (once, cached) on `training_images` (uint8)."""
    if (p := _pretrained(cfg, "vae")) is not None:
        return load_vae(p, subfolder="vae")
    if training_images is None:
        raise ValueError("the tiny VAE needs training images (model.pretrained_path is not set)")
    return load_vae(train_tiny_vae(cfg.model.vae, training_images, Path(cfg.paths.cache_dir), cfg.seed))


def build_encoder(cfg: DictConfig, df: pd.DataFrame) -> TextEncoder:
    enc = cfg.encoder
    if enc.family == "hf_clip":  # SD's own CLIP text encoder from the diffusers folder
        from bjexp.models.hf_clip import HFClipTextEncoder

        return HFClipTextEncoder(enc.path, enc.max_length, enc.trainable, asset=folder_asset(cfg))
    if enc.path:
        return OpenClipTextEncoder(require(enc.name, folder=enc.path), enc.max_length, enc.trainable)
    from bjexp.models.tiny_encoders import build_tiny_encoder

    folder = build_tiny_encoder(enc, df, cfg.model.image_size, Path(cfg.paths.cache_dir), cfg.seed)
    return OpenClipTextEncoder(folder, enc.max_length, enc.trainable)


def build_scheme(cfg: DictConfig):
    return instantiate({"_target_": cfg.conditioning._target_, **cfg.conditioning.get("kwargs", {})})


def build_unet(cfg: DictConfig, scheme, latent_channels: int, cross_dim: int, latent_size: int):
    in_ch = scheme.in_channels(latent_channels)
    if (p := _pretrained(cfg, "unet")) is not None:
        from diffusers import UNet2DConditionModel

        unet = widen_conv_in(UNet2DConditionModel.from_pretrained(p, subfolder="unet"), in_ch)
        if unet.config.cross_attention_dim != cross_dim:
            raise ValueError(f"{p}/unet cross-attends to {unet.config.cross_attention_dim}-d states but encoder="
                             f"{cfg.encoder.name} gives {cross_dim}-d; pick an encoder of that width")
        return unet
    return tiny_unet(cfg.model.unet, in_ch, latent_channels, cross_dim, latent_size)
