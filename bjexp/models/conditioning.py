"""Conditioning schemes (`conditioning=` group): how the prior image enters the UNet.

A scheme says how many UNet input channels it needs and builds the UNet input from the noisy latent and the
prior latent. The null image (CFG dropout, curriculum stage 1) is the zero latent for every scheme.
`strength` (None for most) makes sampling start from the prior latent noised to that fraction of the schedule.
"""
from __future__ import annotations

import torch


class Concat:
    """InstructPix2Pix: [noisy latent, prior latent] along channels (prior = VAE posterior mode, unscaled)."""
    name = "concat"
    uses_prior = True
    strength = None

    def in_channels(self, latent_channels: int) -> int:
        return 2 * latent_channels

    def unet_input(self, noisy: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return torch.cat([noisy, prior], dim=1)


class TextOnly:
    """RoentGen-style: the prior is ignored; the follow-up comes from text alone."""
    name = "text_only"
    uses_prior = False
    strength = None

    def in_channels(self, latent_channels: int) -> int:
        return latent_channels

    def unet_input(self, noisy: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return noisy


class SDEdit(TextOnly):
    """SDEdit (Meng et al. 2022): a text-conditioned UNet; sampling starts from the prior latent noised to
    `strength` (0..1] of the schedule instead of pure noise. Tests whether anatomy is kept by the start point
    alone, without the prior in the UNet input."""
    name = "sdedit"

    def __init__(self, strength: float = 0.6):
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"conditioning.kwargs.strength must be in (0, 1], got {strength}")
        self.strength = float(strength)
