"""Methods trained here on the triples: BiomedJourney (prior + text), the text-only RoentGen stand-in, and
InstructPix2Pix fine-tuned: one class; the conditioning scheme and the initial weights come from config.

`init` (a weights source, as `Pretrained.weights`): start from a whole diffusers pipeline folder — its UNet, VAE
and CLIP text encoder (frozen) — instead of `model.pretrained_path` + `encoder=`. That is InstructPix2Pix
fine-tuned on the triples (`method=instructpix2pix_ft`): the registry's IP2P folder in the real world, the tiny
general-domain IP2P in the miniature one."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from bjexp.models.pipeline import JourneyPipeline, scheduler_folder_config


class TrainedDiffusion:
    trains = True
    samples = True

    def __init__(self, uses_prior: bool | None = None, init: dict | None = None):
        from bjexp.instantiate import instantiate

        # None: any conditioning scheme; True/False: the method is defined by (not) conditioning on the prior.
        self.uses_prior = uses_prior
        self.init = instantiate(init) if init else None

    def assets(self, cfg: DictConfig) -> list[str]:
        if self.init is not None:
            return list(self.init.assets)
        out = [cfg.model.name] if cfg.model.pretrained_path else []
        return out + ([cfg.encoder.name] if cfg.encoder.path and cfg.encoder.family != "hf_clip" else [])

    def check(self, cfg: DictConfig) -> None:
        from bjexp.models.build import build_scheme, check_weights

        scheme = build_scheme(cfg)
        if self.uses_prior is not None and scheme.uses_prior != self.uses_prior:
            want = "conditions on the prior" if self.uses_prior else "is text-only"
            raise ValueError(f"method={self.name} {want}, but conditioning={cfg.conditioning.name} "
                             f"{'does not' if self.uses_prior else 'does'}; drop the conditioning override")
        if self.init is not None:
            self.init.check(cfg)
        else:
            check_weights(cfg)

    def model_cfg(self, cfg: DictConfig, data) -> DictConfig:
        """The config the module is built from: with `init`, the model and the (CLIP) text encoder are its folder."""
        if self.init is None:
            return cfg
        from omegaconf import open_dict

        folder = str(self.init.folder(cfg, data))
        out = cfg.copy()
        with open_dict(out):
            out.model.pretrained_path = folder
            out.model.asset = self.init.layout
            out.encoder.update(family="hf_clip", path=folder, max_length=77, trainable=False)
        return out

    def build(self, cfg: DictConfig, data):
        from bjexp.workflow import build_module

        return build_module(self.model_cfg(cfg, data), data)

    def restore(self, cfg: DictConfig, data, run_dir: Path):
        from bjexp.checkpoints import require_last
        from bjexp.workflow import load_trained

        return load_trained(self.build(cfg, data), require_last(run_dir))

    def generator(self, cfg: DictConfig, data, module) -> JourneyPipeline:
        # The initial folder's own scheduler config; None: the miniature world's convention.
        base = scheduler_folder_config(self.model_cfg(cfg, data).model.pretrained_path)
        return JourneyPipeline.from_module(module, cfg.sampler, base)
