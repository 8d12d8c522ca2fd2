"""Every pixel-range conversion in one place.

Representations: uint8 grey [0, 255] (the image store and generated PNGs), model float [-1, 1] (VAE input/output),
xrv float [-1024, 1024] (torchxrayvision classifiers), uint8 RGB (Inception / torch-fidelity).
Grey everywhere; 3 channels only where a model needs them. No flips anywhere (laterality).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class ImageReadError(ValueError):
    pass


def uint8_to_model(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] (H,W) / (N,H,W) / (N,1,H,W) -> float32 [-1,1] with a channel axis (…,1,H,W)."""
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    t = t.to(torch.float32) / 127.5 - 1.0
    return t.unsqueeze(-3) if t.ndim in (2, 3) else t


def uint8_to_vae(x: np.ndarray | torch.Tensor, in_channels: int) -> torch.Tensor:
    """uint8 grey -> VAE input [-1, 1]: one channel (tiny VAE) or the grey repeated to 3 (SD's VAE)."""
    t = uint8_to_model(x)
    return t.repeat_interleave(in_channels, dim=-3) if in_channels != 1 else t


def model_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1,1] -> uint8 [0,255] (rounded, clamped); keeps shape."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def uint8_to_xrv(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 -> xrv range [-1024, 1024] (xrv.datasets.normalize(img, 255)), float32, shape kept."""
    t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    return t.to(torch.float32) * (2048.0 / 255.0) - 1024.0


def model_to_xrv(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-1, 1) * 1024.0


def grey_to_rgb_uint8(x: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) or (N,H,W) uint8 grey -> (N,3,H,W) uint8 RGB for Inception."""
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return x.expand(-1, 3, -1, -1).contiguous()


def read_grey(path: str | Path, size: int | None = None) -> np.ndarray:
    """Read an image file as uint8 grey (H,W); optional square resize. Corrupt/missing -> ImageReadError naming it."""
    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from e


def write_png(path: str | Path, img: np.ndarray, perms=None) -> None:
    """Atomically; `perms` (a bjexp.io.Mode) for MIMIC-derived images."""
    from bjexp.io import atomic_write

    with atomic_write(path, "wb", perms) as f:
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(f, format="PNG")
