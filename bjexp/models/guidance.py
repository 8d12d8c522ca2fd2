"""Classifier-free guidance, defined once: the training-time 3-way dropout and the dual-guidance sampler.

Null text = the encoder's encoding of ""; null image = the zero latent. Training drops them with
`cfg_dropout` (one uniform draw per sample); sampling combines the three predictions
ε = ε(∅,∅) + s_I·[ε(img,∅) − ε(∅,∅)] + s_T·[ε(img,txt) − ε(img,∅)].
"""
from __future__ import annotations

import hashlib

import torch

from bjexp.models.encoders import EncodedText


def dropout_masks(batch: int, rates, generator: torch.Generator | None = None, device=None):
    """(drop_text, drop_image) bool masks: text-only w.p. rates.text, both w.p. rates.both, image-only w.p. rates.image."""
    u = torch.rand(batch, generator=generator, device=device)
    t, b, i = rates.text, rates.both, rates.image
    drop_text = u < t + b
    drop_image = (u >= t) & (u < t + b + i)
    return drop_text, drop_image


def apply_dropout(prior: torch.Tensor, text: EncodedText, null: EncodedText, drop_text: torch.Tensor,
                  drop_image: torch.Tensor) -> tuple[torch.Tensor, EncodedText]:
    prior = torch.where(drop_image[:, None, None, None], torch.zeros_like(prior), prior)
    n = drop_text.shape[0]
    states = torch.where(drop_text[:, None, None], null.states.expand(n, -1, -1), text.states)
    mask = torch.where(drop_text[:, None], null.mask.expand(n, -1), text.mask)
    return prior, EncodedText(states, mask)


def pair_generator(pair_id: str, seed: int, device="cpu") -> torch.Generator:
    """Deterministic noise per (pair, seed): every method and batch layout sees the same noise for a pair."""
    s = int.from_bytes(hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()[:8], "little") & (2**63 - 1)
    return torch.Generator(device=device).manual_seed(s)


def guided_eps(unet, scheme, x: torch.Tensor, t, prior: torch.Tensor, text: EncodedText, null: EncodedText,
               image_guidance: float, text_guidance: float) -> torch.Tensor:
    """One batched UNet call on (img, txt), (img, ∅), (∅, ∅); `x` already scaled by the scheduler. A scheme that
    ignores the prior has ε(img, ∅) = ε(∅, ∅), so that branch is not computed (plain text CFG, same result)."""
    n = x.shape[0]
    branches = 3 if scheme.uses_prior else 2
    inp = torch.cat([scheme.unet_input(x, prior), scheme.unet_input(x, prior),
                     scheme.unet_input(x, torch.zeros_like(prior))][3 - branches:])
    nul_s, nul_m = null.states.expand(n, -1, -1), null.mask.expand(n, -1)
    states = torch.cat([text.states, nul_s, nul_s][:branches])
    mask = torch.cat([text.mask, nul_m, nul_m][:branches])
    dt = getattr(unet, "dtype", torch.float32)  # a bf16/fp16 sampling UNet: its inputs cast, its output back to float32
    eps = unet(inp.to(dt), t, encoder_hidden_states=states.to(dt), encoder_attention_mask=mask).sample.float()
    if branches == 2:
        e_full, e_unc = eps.chunk(2)
        return e_unc + text_guidance * (e_full - e_unc)
    e_full, e_img, e_unc = eps.chunk(3)
    return e_unc + image_guidance * (e_img - e_unc) + text_guidance * (e_full - e_img)


@torch.no_grad()
def sample(unet, scheduler, scheme, prior: torch.Tensor, text: EncodedText, null: EncodedText, *, steps: int,
           image_guidance: float, text_guidance: float, generators: list[torch.Generator],
           latent_channels: int | None = None, init: torch.Tensor | None = None,
           strength: float = 1.0) -> torch.Tensor:
    """Dual-guidance sampling; returns final latents in the UNet's (scaled) latent space.

    `init` (scaled latents) with `strength` < 1: start from `init` noised to the first of the last
    `strength`·steps timesteps (SDEdit; the same arithmetic as diffusers' img2img pipelines)."""
    from diffusers.utils.torch_utils import randn_tensor

    n, _, h, w = prior.shape
    c = latent_channels or prior.shape[1]
    scheduler.set_timesteps(steps, device=prior.device)
    x = randn_tensor((n, c, h, w), generator=generators, device=prior.device, dtype=prior.dtype)
    timesteps = scheduler.timesteps
    if init is not None and strength < 1.0:
        start = (steps - min(int(steps * strength), steps)) * scheduler.order
        timesteps = timesteps[start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        x = scheduler.add_noise(init.to(x.dtype), x, timesteps[:1].repeat(n))
    else:
        x = x * scheduler.init_noise_sigma
    for t in timesteps:
        eps = guided_eps(unet, scheme, scheduler.scale_model_input(x, t), t, prior, text, null,
                         image_guidance, text_guidance)
        x = scheduler.step(eps, t, x, generator=generators).prev_sample
    return x
