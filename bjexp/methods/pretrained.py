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
    samples = True

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
        from bjexp.models.build import build_scheme
        from bjexp.models.pipeline import device_for

        folder = self.weights.folder(cfg, data)
        pipe = JourneyPipeline.from_pretrained(folder, cfg.sampler, device=device_for(cfg))
        if type(pipe.scheme) is not type(build_scheme(cfg)):  # e.g. conditioning=sdedit: not what this model does
            raise ValueError(f"method={self.name} samples {folder} as {pipe.scheme.name} (its UNet has "
                             f"{pipe.unet.config.in_channels} input channels), not conditioning={cfg.conditioning.name}"
                             f"; drop the conditioning override")
        return pipe


class AssetFolder:
    """Weights from the registry (`paths.assets_dir/<asset folder>`), or from `path` when set."""

    def __init__(self, asset: str, path: str | None = None):
        self.asset, self.path = asset, path
        self.assets = (asset,)
        self.layout = asset  # the registry asset whose file list the folder follows

    def check(self, cfg: DictConfig) -> None:
        self.folder(cfg)

    def folder(self, cfg: DictConfig, data=None) -> Path:
        from bjexp.assets import require

        return require(self.asset, cfg.paths.assets_dir, folder=self.path or None)


class GeneralDomain:
    """The miniature world's stand-ins for SD1.5 and InstructPix2Pix: tiny models pretrained once on general-domain
    scenes, not CXRs (`bjexp.models.general_domain`), built on first use and cached as diffusers folders.
    `model`: text_to_image | instruct_pix2pix."""
    assets = ()

    def __init__(self, model: str):
        from bjexp.models import general_domain

        builders = {"text_to_image": general_domain.text_to_image_folder,
                    "instruct_pix2pix": general_domain.instruct_pix2pix_folder}
        if model not in builders:
            raise ValueError(f"GeneralDomain model={model!r}: one of {', '.join(builders)}")
        self.build = builders[model]
        self.layout = {"text_to_image": "sd15", "instruct_pix2pix": "instructpix2pix"}[model]  # their diffusers layouts

    def check(self, cfg: DictConfig) -> None:
        if cfg.model.pretrained_path:
            raise ValueError(f"the general-domain models are the miniature world's (model=tiny), not model={cfg.model.name}")

    def folder(self, cfg: DictConfig, data=None) -> Path:
        return self.build(cfg)


class Unavailable:
    """A method that has no weights in this world; `check` says what to use instead."""
    assets = ()
    layout = None

    def __init__(self, message: str):
        self.message = message

    def check(self, cfg: DictConfig) -> None:
        raise ValueError(self.message)

    def folder(self, cfg, data=None):
        raise ValueError(self.message)
