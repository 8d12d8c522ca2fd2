"""The BiomedJourney LightningModule: frozen VAE + text encoder, UNet conditioned per `conditioning=`,
3-way CFG dropout, EMA. Batches carry cached VAE moments and text states (or raw inputs when not cached)."""
from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from bjexp.imaging import uint8_to_vae
from bjexp.models.encoders import EncodedText, TextEncoder
from bjexp.models.guidance import apply_dropout, dropout_masks

def noise_scheduler(num_train_timesteps: int = 1000, prediction_type: str = "epsilon") -> DDPMScheduler:
    """Stable Diffusion 1.5's noise schedule (its scheduler_config.json, steps_offset included), for every model;
    samplers are built from this config, so sampling timesteps match SD's own pipelines."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, prediction_type=prediction_type,
                         beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         steps_offset=1)


class JourneyDiffusion(L.LightningModule):
    def __init__(self, unet, vae, encoder: TextEncoder, scheme, null_text: EncodedText, *, optim, cfg_dropout,
                 num_train_timesteps: int = 1000, prediction_type: str = "epsilon", texts: list[str] | None = None,
                 seed: int = 0, min_snr_gamma: float | None = None, total_steps: int | None = None):
        super().__init__()
        self.total_steps = total_steps  # the LR schedule's length: the whole run, not one curriculum stage's fit
        self.seed = seed
        self.min_snr_gamma = min_snr_gamma
        self.unet, self.vae, self.encoder, self.scheme = unet, vae, encoder, scheme
        self.vae.requires_grad_(False)
        self.register_buffer("null_states", null_text.states.detach().clone(), persistent=False)
        self.register_buffer("null_mask", null_text.mask.detach().clone(), persistent=False)
        self.optim_cfg, self.cfg_dropout = optim, cfg_dropout
        self.scheduler = noise_scheduler(num_train_timesteps, prediction_type)
        self.scaling = float(vae.config.scaling_factor)
        self.texts = texts  # the text table, for un-cached batches
        # EMA every `ema_every` steps with decay^ema_every per update: the same horizon in steps, 1/k of the cost.
        self.ema_every = int(optim.get("ema_every", 1))
        self.ema = EMAModel(unet.parameters(), decay=optim.ema_decay ** self.ema_every,
                            use_ema_warmup=optim.ema_warmup, inv_gamma=1.0, power=2 / 3,
                            foreach=bool(optim.get("ema_foreach", False)))

    @property
    def null(self) -> EncodedText:
        return EncodedText(self.null_states, self.null_mask)

    # -- inputs -----------------------------------------------------------------------------------------------
    def _step_generator(self, *key: int) -> torch.Generator:
        """All training randomness of a step comes from (seed, step, micro-batch): resuming is exact."""
        return torch.Generator(device=self.device).manual_seed(hash((self.seed, *key)) & (2**62 - 1))

    def _latents(self, batch, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, EncodedText]:
        """(target latent sample, scaled), (prior latent: posterior mode, unscaled), text states."""
        if "current_moments" in batch:
            cur = DiagonalGaussianDistribution(batch["current_moments"])
            prior = DiagonalGaussianDistribution(batch["prior_moments"]).mode()
            text = EncodedText(batch["text_states"], batch["text_mask"])
        else:
            with torch.no_grad():
                cur = self.vae.encode(self._vae_in(batch["current_image"])).latent_dist
                prior = self.vae.encode(self._vae_in(batch["prior_image"])).latent_dist.mode()
            with torch.set_grad_enabled(self.encoder.trainable and self.training):
                text = self.encoder.encode([self.texts[i] for i in batch["text_index"].tolist()])
        prior = prior * batch["has_prior"].to(prior.dtype)[:, None, None, None]  # curriculum stage 1: null prior
        z0 = cur.mean + cur.std * torch.randn(cur.mean.shape, generator=g, device=cur.mean.device, dtype=cur.mean.dtype)
        return z0 * self.scaling, prior, text

    def _vae_in(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return uint8_to_vae(images_uint8, self.vae.config.in_channels).to(self.device, self.vae.dtype)

    def _loss(self, batch, dropout: bool, g: torch.Generator) -> torch.Tensor:
        z0, prior, text = self._latents(batch, g)
        n = z0.shape[0]
        if dropout:
            drop_text, drop_image = dropout_masks(n, self.cfg_dropout, generator=g, device=z0.device)
            prior, text = apply_dropout(prior, text, self.null, drop_text, drop_image)
        noise = torch.randn(z0.shape, generator=g, device=z0.device, dtype=z0.dtype)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (n,), device=z0.device, generator=g)
        x_t = self.scheduler.add_noise(z0, noise, t)
        target = noise if self.scheduler.config.prediction_type == "epsilon" else self.scheduler.get_velocity(z0, noise, t)
        pred = self.unet(self.scheme.unet_input(x_t, prior), t, encoder_hidden_states=text.states,
                         encoder_attention_mask=text.mask).sample
        if self.min_snr_gamma is None:
            return F.mse_loss(pred.float(), target.float())
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * self._min_snr_weight(t)).mean()

    def _min_snr_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Min-SNR-γ loss weights (Hang et al. 2023): min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR+1) for v."""
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.scheduler, t)
        clipped = torch.clamp(snr, max=self.min_snr_gamma)
        return clipped / (snr + 1 if self.scheduler.config.prediction_type == "v_prediction" else snr)

    # -- Lightning hooks --------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        micro = batch_idx % self.trainer.accumulate_grad_batches if self._trainer else 0
        loss = self._loss(batch, dropout=True, g=self._step_generator(self.global_step, micro, self.global_rank))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["row"]))
        return loss

    def validation_step(self, batch, batch_idx):
        # Same noise and timesteps at every validation, so val/loss curves compare across steps.
        loss = self._loss(batch, dropout=False, g=self._step_generator(-1, batch_idx, self.global_rank))
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["row"]), sync_dist=True)

    def optimizer_step(self, *args, **kwargs):
        # The EMA follows each optimizer step here, inside the step: Lightning's ModelCheckpoint saves in its
        # on_train_batch_end, which runs before the module's own, so an EMA stepped there lagged one update behind
        # every saved checkpoint (a resumed run's EMA differed from an uninterrupted one's). Also one EMA update per
        # optimizer step, not per accumulated micro-batch.
        super().optimizer_step(*args, **kwargs)
        if self.global_step % self.ema_every == 0:
            self.ema.step(self.unet.parameters())
        self.log("train/ema_decay", self.ema.cur_decay_value or 0.0, batch_size=1)

    def configure_optimizers(self):
        params = [p for p in self.unet.parameters() if p.requires_grad]
        if self.encoder.trainable:
            params += [p for p in self.encoder.parameters() if p.requires_grad]
        o = self.optim_cfg
        opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas),
                                fused=o.get("fused"), foreach=o.get("foreach"))
        schedule = get_scheduler(o.lr_schedule, opt, num_warmup_steps=o.lr_warmup_steps,
                                 num_training_steps=self.total_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_fit_start(self):
        self.ema.to(self.device)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint):
        self.ema.load_state_dict(checkpoint["ema"])

    def state_dict(self, *args, **kwargs):
        # Frozen parts are rebuilt from their own files; checkpoints hold only what training changes.
        sd = super().state_dict(*args, **kwargs)
        drop = ("vae.",) + (() if self.encoder.trainable else ("encoder.",))
        return {k: v for k, v in sd.items() if not k.startswith(drop)}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Frozen parts are absent from checkpoints by design; anything else missing is an error.
        res = super().load_state_dict(state_dict, strict=False, assign=assign)
        frozen = ("vae.",) + (() if self.encoder.trainable else ("encoder.",))
        missing = [k for k in res.missing_keys if not k.startswith(frozen)]
        if strict and (missing or res.unexpected_keys):
            raise RuntimeError(f"checkpoint does not match the model: missing {missing[:5]}, "
                               f"unexpected {res.unexpected_keys[:5]}")
        return res
