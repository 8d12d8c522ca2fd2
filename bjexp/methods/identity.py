"""`method=identity`: the generated follow-up is the prior itself (perfect retention, no progression)."""
from __future__ import annotations

import torch


class CopyPrior:
    """A generator with the pipeline's call that returns its input images."""

    def __call__(self, images=None, texts=None, *, prior_latents=None, text_states=None, generators=None,
                 steps=None, image_guidance=None, text_guidance=None) -> torch.Tensor:
        if images is None:
            raise ValueError("the identity generator needs the prior images")
        return torch.as_tensor(images).to(torch.uint8).clone()


class Identity:
    name = "identity"
    trains = False
    samples = False

    def assets(self, cfg) -> list[str]:
        return []

    def check(self, cfg) -> None:
        pass

    def build(self, cfg, data):
        return None

    def restore(self, cfg, data, run_dir):
        return None

    def generator(self, cfg, data, module) -> CopyPrior:
        return CopyPrior()
