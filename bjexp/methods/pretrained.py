"""Methods used without training on the triples (the paper's zero-shot baselines): a diffusers folder sampled
through the JourneyPipeline. InstructPix2Pix (8-channel UNet) takes the prior; Stable Diffusion and RoentGen
(4-channel) draw from the text alone. Where the folder comes from is config (`weights`, a `_target_`): the
weights registry in the real world, the miniature world's general-domain models, or an explanation why not."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from bjexp.models.pipeline import JourneyPipeline


class Pretrained:
    trains = False

    def __init__(self, weights: dict, prompt: str = "text"):
        from bjexp.instantiate import instantiate

        self.weights = instantiate(weights)  # a WeightsSource: .assets, .check(cfg), .folder(cfg)
        self.prompt = prompt  # the manifest column the model is prompted with

    def assets(self, cfg: DictConfig) -> list[str]:
        return list(self.weights.assets)

    def check(self, cfg: DictConfig) -> None:
        self.weights.check(cfg)

    def build(self, cfg, data):
        return None

    def restore(self, cfg, data, run_dir: Path):
        return None

    def generator(self, cfg: DictConfig, data, module) -> JourneyPipeline:
        from bjexp.models.pipeline import device_for

        return JourneyPipeline.from_pretrained(self.weights.folder(cfg, data), cfg.sampler, device=device_for(cfg))


class AssetFolder:
    """Weights from the registry (`paths.assets_dir/<asset folder>`), or from `path` when set."""

    def __init__(self, asset: str, path: str | None = None):
        self.asset, self.path = asset, path
        self.assets = (asset,)

    def check(self, cfg: DictConfig) -> None:
        self.folder(cfg)

    def folder(self, cfg: DictConfig, data=None) -> Path:
        from bjexp.assets import require

        return require(self.asset, cfg.paths.assets_dir, folder=self.path or None)


class Unavailable:
    """A method that has no weights in this world; `check` says what to use instead."""
    assets = ()

    def __init__(self, message: str):
        self.message = message

    def check(self, cfg: DictConfig) -> None:
        raise ValueError(self.message)

    def folder(self, cfg, data=None):
        raise ValueError(self.message)
