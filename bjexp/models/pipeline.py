"""`JourneyPipeline`: the one sampling path (diffusers style: explicit components, one `__call__`).

Components: the UNet (a trained run's EMA weights, or a pretrained folder's), the VAE, the sampler's scheduler,
the conditioning scheme and the null conditioning (+ the text encoder for raw texts). `__call__` takes prior images
or prior latents, texts or text states, one generator per pair, and returns uint8 grey images. The `sample` stage,
the demo, the parity test and every diffusion baseline call it.

Schedulers: a model folder's own `scheduler/scheduler_config.json` is the base config of the sampler (so a
pretrained InstructPix2Pix or SD folder samples as its own pipeline does: "leading" spacing, steps_offset 1);
without a folder, bjexp's training schedule (`noise_scheduler`, the miniature world's convention).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bjexp.imaging import model_to_uint8, uint8_to_vae
from bjexp.models.encoders import EncodedText, TextEncoder
from bjexp.models.guidance import sample as guided_sample


def device_for(cfg) -> str:
    """Where a method without a trainer samples: the configured accelerator when present, else the CPU."""
    return "cuda" if cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"


def scheduler_folder_config(pretrained_path: str | Path | None) -> dict | None:
    """The folder's `scheduler/scheduler_config.json` (a diffusers model folder), or None when it has none."""
    if not pretrained_path or not (Path(pretrained_path) / "scheduler" / "scheduler_config.json").is_file():
        return None
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler.load_config(str(pretrained_path), subfolder="scheduler"))


def make_scheduler(sampler_cfg, base_config):
    """The sampler's diffusers class built from a base scheduler config plus the sampler's own kwargs."""
    import diffusers

    try:
        cls = getattr(diffusers, sampler_cfg.scheduler)
    except AttributeError:
        raise ValueError(f"sampler.scheduler={sampler_cfg.scheduler!r} is not a diffusers scheduler class") from None
    return cls.from_config(base_config, **dict(sampler_cfg.get("scheduler_kwargs") or {}))


@dataclass
class JourneyPipeline:
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object
    scheme: object  # bjexp.models.conditioning scheme: in_channels, unet_input, uses_prior, strength
    null: EncodedText  # the encoding of "" (null text); the null image is the zero latent
    encoder: TextEncoder | None = None  # for raw texts

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def scaling(self) -> float:
        return float(self.vae.config.scaling_factor)

    def with_scheduler(self, sampler_cfg, base_config=None) -> "JourneyPipeline":
        """The same components with another sampler (the demo's sampler choice)."""
        return replace(self, scheduler=make_scheduler(sampler_cfg, base_config or self.scheduler.config))

    @classmethod
    def from_module(cls, module, sampler_cfg, base_config=None) -> "JourneyPipeline":
        """A trained JourneyDiffusion's pipeline, on a copy of its UNet holding the EMA weights."""
        unet = copy.deepcopy(module.unet).eval()
        module.ema.copy_to(unet.parameters())
        return cls(_for_sampling(unet, sampler_cfg), module.vae,
                   make_scheduler(sampler_cfg, base_config or module.scheduler.config), module.scheme, module.null,
                   module.encoder)

    @classmethod
    def from_pretrained(cls, folder: str | Path, sampler_cfg, *, device="cpu") -> "JourneyPipeline":
        """A diffusers model folder (SD1.5 / InstructPix2Pix / RoentGen layout: unet/, vae/, text_encoder/,
        tokenizer/, scheduler/), sampled with its own scheduler config. An 8-channel UNet (InstructPix2Pix) takes
        the prior by concatenation; a 4-channel one (SD, RoentGen) is text-to-image."""
        from diffusers import AutoencoderKL, UNet2DConditionModel

        from bjexp.models.conditioning import Concat, TextOnly
        from bjexp.models.hf_clip import HFClipTextEncoder

        folder = Path(folder)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval().to(device)
        unet = _for_sampling(UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval().to(device), sampler_cfg)
        encoder = HFClipTextEncoder(folder).to(device)
        scheme = Concat() if unet.config.in_channels == 2 * vae.config.latent_channels else TextOnly()
        with torch.no_grad():
            null = encoder.encode([""])
        base = scheduler_folder_config(folder)
        return cls(unet, vae, make_scheduler(sampler_cfg, base), scheme, null, encoder)

    # -- inputs -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """Prior latents: the VAE posterior mode, unscaled (what training conditions on)."""
        x = uint8_to_vae(images_uint8, self.vae.config.in_channels).to(self.device, self.vae.dtype)
        return self.vae.encode(x).latent_dist.mode()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> EncodedText:
        if self.encoder is None:
            raise ValueError("this pipeline has no text encoder: pass text_states")
        t = self.encoder.encode(list(texts))
        return EncodedText(t.states.to(self.device), t.mask.to(self.device))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> uint8 grey (N, H, W); an RGB VAE's output is averaged to grey."""
        imgs = self.vae.decode(latents.to(self.vae.dtype) / self.scaling).sample
        return model_to_uint8(imgs.float().mean(1))

    @torch.no_grad()
    def round_trip(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """Images through the autoencoder alone (encode, posterior mode, decode): what the latent space keeps."""
        return self.decode(self.encode_images(images_uint8) * self.scaling)

    # -- the call ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, images: torch.Tensor | None = None, texts: list[str] | None = None, *,
                 prior_latents: torch.Tensor | None = None, text_states: EncodedText | None = None,
                 generators: list[torch.Generator], steps: int, image_guidance: float, text_guidance: float,
                 return_latents: bool = False):
        """uint8 grey (N, H, W) follow-ups of the priors (uint8 (N, H, W) `images`, or their unscaled
        `prior_latents`) under the progression texts (`texts`, or their `text_states`)."""
        if prior_latents is None:
            if images is None:
                raise ValueError("pass prior images or prior_latents")
            prior_latents = self.encode_images(images)
        if text_states is None:
            if texts is None:
                raise ValueError("pass texts or text_states")
            text_states = self.encode_texts(texts)
        prior = prior_latents.to(self.device, torch.float32)
        if len(generators) != prior.shape[0]:
            raise ValueError(f"{len(generators)} generators for {prior.shape[0]} priors: one per pair")
        null, text = _common_length(EncodedText(self.null.states.to(self.device), self.null.mask.to(self.device)),
                                    EncodedText(text_states.states.to(self.device), text_states.mask.to(self.device)))
        strength = self.scheme.strength or 1.0  # SDEdit starts from the noised prior latent
        lat = guided_sample(self.unet, self.scheduler, self.scheme, prior, text, null, steps=steps,
                            image_guidance=image_guidance, text_guidance=text_guidance, generators=generators,
                            latent_channels=self.vae.config.latent_channels, init=prior * self.scaling,
                            strength=strength)
        out = self.decode(lat)
        return (out, lat) if return_latents else out


def _for_sampling(unet, sampler_cfg):
    """The sampler's dtype and compilation for the UNet (`sampler.dtype`, `sampler.compile`)."""
    dtype = getattr(torch, sampler_cfg.get("dtype", "float32"))
    if unet.dtype != dtype:  # a no-op cast still makes diffusers warn about fp32 modules
        unet = unet.to(dtype)
    return torch.compile(unet) if sampler_cfg.get("compile", False) else unet


def _common_length(a: EncodedText, b: EncodedText) -> tuple[EncodedText, EncodedText]:
    """Pad the shorter token sequence with masked zero states (exact: padding is masked out of attention), so
    cached (trimmed) states and freshly encoded ones can share one batched UNet call."""
    n = max(a.states.shape[1], b.states.shape[1])

    def pad(e: EncodedText) -> EncodedText:
        k = n - e.states.shape[1]
        if k == 0:
            return e
        states = torch.cat([e.states, e.states.new_zeros(e.states.shape[0], k, e.states.shape[2])], 1)
        return EncodedText(states, torch.cat([e.mask, e.mask.new_zeros(e.mask.shape[0], k)], 1))
    return pad(a), pad(b)
