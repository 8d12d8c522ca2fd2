"""Methods trained here on the triples: BiomedJourney (prior + text), the text-only RoentGen stand-in, and
InstructPix2Pix fine-tuned (`model.pretrained_path` = an InstructPix2Pix folder): one class, the conditioning scheme
and the initial weights come from config."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from bjexp.models.pipeline import JourneyPipeline, scheduler_folder_config


class TrainedDiffusion:
    trains = True

    def __init__(self, uses_prior: bool | None = None):
        # None: any conditioning scheme; True/False: the method is defined by (not) conditioning on the prior.
        self.uses_prior = uses_prior

    def assets(self, cfg: DictConfig) -> list[str]:
        out = [cfg.model.name] if cfg.model.pretrained_path else []
        return out + ([cfg.encoder.name] if cfg.encoder.path and cfg.encoder.family != "hf_clip" else [])

    def check(self, cfg: DictConfig) -> None:
        from bjexp.models.build import build_scheme, check_weights

        scheme = build_scheme(cfg)
        if self.uses_prior is not None and scheme.uses_prior != self.uses_prior:
            want = "conditions on the prior" if self.uses_prior else "is text-only"
            raise ValueError(f"method={self.name} {want}, but conditioning={cfg.conditioning.name} "
                             f"{'does not' if self.uses_prior else 'does'}; drop the conditioning override")
        check_weights(cfg)

    def build(self, cfg: DictConfig, data):
        from bjexp.workflow import build_module

        return build_module(cfg, data)

    def restore(self, cfg: DictConfig, data, run_dir: Path):
        from bjexp.workflow import checkpoint_dir, load_trained

        ckpt = checkpoint_dir(run_dir) / "last.ckpt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"no checkpoint at {ckpt}: train first (`python -m bjexp.train`)")
        return load_trained(self.build(cfg, data), ckpt)

    def generator(self, cfg: DictConfig, data, module) -> JourneyPipeline:
        base = scheduler_folder_config(cfg.model.pretrained_path)  # None: the miniature world's convention
        return JourneyPipeline.from_module(module, cfg.sampler, base)
