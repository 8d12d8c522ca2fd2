"""Registration of prior/current pairs (`registration=` group). See bjexp/registration/README or docs."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def register_manifest(manifest_path: Path, cfg: DictConfig) -> Path:
    """Return the manifest the model trains on after registration per `cfg.registration` (cached).

    `none` returns the input unchanged.
    """
    if cfg.registration.name == "none":
        return Path(manifest_path)
    raise NotImplementedError(f"registration={cfg.registration.name}")
