"""Conditioning schemes (`conditioning=` group): how the prior image enters the UNet.

A scheme says how many UNet input channels it needs and builds the UNet input from the noisy latent and the
prior latent. The null image (CFG dropout, curriculum stage 1) is the zero latent for every scheme.
"""
from __future__ import annotations

import torch


class Concat:
    """InstructPix2Pix: [noisy latent, prior latent] along channels (prior = VAE posterior mode, unscaled)."""
    name = "concat"
    uses_prior = True

    def in_channels(self, latent_channels: int) -> int:
        return 2 * latent_channels

    def unet_input(self, noisy: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return torch.cat([noisy, prior], dim=1)


class TextOnly:
    """RoentGen-style: the prior is ignored; the follow-up comes from text alone."""
    name = "text_only"
    uses_prior = False

    def in_channels(self, latent_channels: int) -> int:
        return latent_channels

    def unet_input(self, noisy: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return noisy
