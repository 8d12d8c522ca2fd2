"""What every method is: it says whether it trains, which assets it needs, checks its config at start-up, builds
its trainable module (if any), and hands out a generator with the pipeline's call."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from omegaconf import DictConfig

from bjexp.models.encoders import EncodedText


class Generator(Protocol):
    """`JourneyPipeline.__call__`'s signature: priors + texts -> uint8 grey follow-ups (N, H, W)."""

    def __call__(self, images: torch.Tensor | None = None, texts: list[str] | None = None, *,
                 prior_latents: torch.Tensor | None = None, text_states: EncodedText | None = None,
                 generators: list[torch.Generator], steps: int, image_guidance: float,
                 text_guidance: float) -> torch.Tensor: ...


class Method(Protocol):
    name: str
    trains: bool  # train.run fits `build(...)` before sampling
    samples: bool  # its pixels depend on the sampler settings (False: the identity copy)

    def assets(self, cfg: DictConfig) -> list[str]:
        """Names in the weights registry this run needs (for `python -m bjexp.assets verify`)."""

    def check(self, cfg: DictConfig) -> None:
        """Fail in milliseconds, before data preparation, on a config this method cannot run (missing weights,
        an incompatible option)."""

    def build(self, cfg: DictConfig, data) -> torch.nn.Module | None:
        """The LightningModule to fit (methods that train), else None."""

    def restore(self, cfg: DictConfig, data, run_dir: Path) -> torch.nn.Module | None:
        """A finished run's trained module from its checkpoint (methods that train), else None."""

    def generator(self, cfg: DictConfig, data, module: torch.nn.Module | None) -> Generator:
        """What samples the test split: a JourneyPipeline, or a plain callable with its signature."""
