"""The VAE: a diffusers AutoencoderKL — SD1.5's (model.pretrained_path) or a tiny one trained once on the
miniature world's training images and cached (its reconstruction error is recorded next to it)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from omegaconf import DictConfig

from bjexp.imaging import uint8_to_model
from bjexp.io import build_once, config_hash
from bjexp.progress import progress


def tiny_vae(vcfg: DictConfig) -> AutoencoderKL:
    n = len(vcfg.block_out_channels)
    return AutoencoderKL(in_channels=1, out_channels=1, latent_channels=vcfg.latent_channels,
                         block_out_channels=list(vcfg.block_out_channels), layers_per_block=1,
                         down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                         norm_num_groups=vcfg.norm_num_groups, sample_size=64,
                         mid_block_add_attention=vcfg.mid_block_attention)


def train_tiny_vae(vcfg: DictConfig, images: np.ndarray, cache_dir: Path, seed: int = 0) -> Path:
    """Train (once) on uint8 images (N,H,W); saves a diffusers folder with scaling_factor = 1/std(latents)."""
    key = config_hash(vcfg, images.shape, seed, images[:: max(1, len(images) // 64)].sum(dtype=np.int64).item())
    out = Path(cache_dir) / "vae" / f"tiny-{key}"
    # concurrent sweep jobs: one trains, the others wait and reuse it
    return build_once(out, lambda tmp: _train_tiny_vae(vcfg, images, seed, tmp), (out / "config.json").is_file)


def _train_tiny_vae(vcfg: DictConfig, images: np.ndarray, seed: int, into: Path) -> None:
    torch.manual_seed(seed)
    vae = tiny_vae(vcfg)
    n_val = max(len(images) // 10, 1)
    x = uint8_to_model(images)
    train_x, val_x = x[n_val:], x[:n_val]
    opt = torch.optim.AdamW(vae.parameters(), lr=vcfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=vcfg.lr, total_steps=vcfg.train_steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    with progress() as bar:
        task = bar.add_task("train tiny VAE", total=vcfg.train_steps)
        for _ in range(vcfg.train_steps):
            b = train_x[torch.randint(len(train_x), (vcfg.batch_size,), generator=g)]
            post = vae.encode(b).latent_dist
            rec = vae.decode(post.sample()).sample
            loss = F.l1_loss(rec, b) + 0.5 * F.mse_loss(rec, b) + vcfg.kl_weight * post.kl().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.advance(task)
    vae.eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(val_x[i:i + 256]).latent_dist.mode() for i in range(0, n_val, 256)])
        rec = torch.cat([vae.decode(lat[i:i + 256]).sample for i in range(0, n_val, 256)]).clamp(-1, 1)
    mse = F.mse_loss((rec + 1) / 2, (val_x + 1) / 2).item()
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    report = {"val_images": n_val, "val_mae_uint8": float(((rec - val_x).abs() * 127.5).mean()),
              "val_psnr_db": float(10 * np.log10(1.0 / max(mse, 1e-12))), "scaling_factor": float(1.0 / lat.std())}
    vae.save_pretrained(into)
    (into / "reconstruction.json").write_text(json.dumps(report, indent=2))


def load_vae(path: str | Path, subfolder: str | None = None) -> AutoencoderKL:
    vae = AutoencoderKL.from_pretrained(path, subfolder=subfolder)
    vae.requires_grad_(False)
    return vae.eval()
