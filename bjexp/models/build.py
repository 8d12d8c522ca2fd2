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


def check_weights(cfg: DictConfig) -> None:
    """Fail in milliseconds, before any data preparation, when a configured weight folder is missing."""
    _pretrained(cfg, "vae")
    _pretrained(cfg, "unet")
    enc = cfg.encoder
    if enc.family == "hf_clip" and not (Path(enc.path) / "text_encoder" / "config.json").is_file():
        raise MissingWeightsError(f"{Path(enc.path) / 'text_encoder'}", "SD's CLIP text encoder",
                                  fetch=f"python -m bjexp.assets fetch {cfg.model.name}")
    if enc.family != "hf_clip" and enc.path and not (Path(enc.path) / "open_clip_config.json").is_file():
        raise MissingWeightsError(enc.path, f"encoder={enc.name} expects an open_clip local-dir folder",
                                  fetch=f"python -m bjexp.assets fetch {enc.name}")


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

        return HFClipTextEncoder(enc.path, enc.max_length, enc.trainable, fetch=f"python -m bjexp.assets fetch {cfg.model.name}")
    if enc.path:
        if not Path(enc.path).is_dir():
            raise MissingWeightsError(enc.path, f"encoder={enc.name} expects an open_clip local-dir folder",
                                      fetch=f"python -m bjexp.assets fetch {enc.name}")
        return OpenClipTextEncoder(enc.path, enc.max_length, enc.trainable)
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
