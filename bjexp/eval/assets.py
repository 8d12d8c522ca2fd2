"""Registry of the real-world evaluation weights (torchxrayvision classifiers and ChestX-Det segmenter,
torch-fidelity Inception).

Consumed by `python -m bjexp.assets fetch eval` (which downloads `url` to `assets_dir / relpath`) and by the
evaluation code, which only ever reads local files: a missing file is a `MissingWeightsError` naming the path,
its checksum when known, and that command. Nothing here touches the network.

File names are exactly the ones torchxrayvision / torch-fidelity derive from their download URLs, so a folder
filled by those libraries themselves (`~/.torchxrayvision/models_data`) can serve as `xrv` folder as is.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

XRV_RELEASE = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
FETCH_COMMAND = "python -m bjexp.assets fetch eval"


@dataclass(frozen=True)
class EvalAsset:
    name: str  # registry key (xrv weight names for the DenseNets)
    folder: str  # sub-folder of the assets dir: "xrv" or "torch-fidelity"
    filename: str
    url: str
    # Full sha256 when known; torch-fidelity publishes the first 8 hex digits in the file name (torch.hub style).
    sha256: str | None = None
    sha256_prefix: str | None = None
    description: str = ""
    # Needed by the default `eval=real` config (fetched by `fetch eval`); others are alternatives to opt into.
    default: bool = True

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.filename}"


def _densenet(name: str, stem: str, trained_on: str, default: bool = False) -> EvalAsset:
    return EvalAsset(f"densenet121-res224-{name}", "xrv", f"{stem}-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
                     f"{XRV_RELEASE}{stem}-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
                     description=f"xrv DenseNet121 pathology classifier, trained on {trained_on}", default=default)


_ASSETS = [
    _densenet("chex", "chex", "CheXpert (Stanford) — default: same labeler as MIMIC-CXR labels, no MIMIC patients",
              default=True),
    _densenet("nih", "nih", "NIH ChestX-ray14"),
    _densenet("pc", "pc", "PadChest"),
    _densenet("all", "nih-pc-chex-mimic_ch-google-openi-kaggle", "NIH+PC+CheXpert+MIMIC+Google+OpenI+RSNA (includes MIMIC)"),
    _densenet("mimic_ch", "mimic_ch", "MIMIC-CXR CheXpert labels (random patient split: may have seen test patients)"),
    _densenet("mimic_nb", "mimic_nb", "MIMIC-CXR NegBio labels (random patient split: may have seen test patients)"),
    EvalAsset("race", "xrv", "resnet_race_detection_val-loss_0.157_mimic_public.pt",
              f"{XRV_RELEASE}resnet_race_detection_val-loss_0.157_mimic_public.pt",
              description="xrv baseline_models.emory_hiti.RaceModel (ResNet34, MIMIC-trained; Asian/Black/White)"),
    EvalAsset("age", "xrv", "baseline_models_riken_xray_age_every_model_age_senet154_v2_tl_26_ft_7_fp32.pt",
              f"{XRV_RELEASE}baseline_models_riken_xray_age_every_model_age_senet154_v2_tl_26_ft_7_fp32.pt",
              description="xrv baseline_models.riken.AgeModel (SENet154 TorchScript, NIH-trained)"),
    EvalAsset("sex", "xrv", "mira_sex_resnet-all_epoch_13-step_7125.ckpt",
              f"{XRV_RELEASE}mira_sex_resnet-all_epoch_13-step_7125.ckpt",
              description="xrv baseline_models.mira.SexModel (ResNet34, CheXpert-trained; Male/Female)"),
    EvalAsset("chestx_det", "xrv", "pspnet_chestxray_best_model_4.pth", f"{XRV_RELEASE}pspnet_chestxray_best_model_4.pth",
              description="xrv baseline_models.chestx_det.PSPNet (ChestX-Det, 14 structures; lungs and heart for "
                          "the anatomy Dice)"),
    EvalAsset("inception", "torch-fidelity", "weights-inception-2015-12-05-6726825d.pth",
              "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
              sha256_prefix="6726825d",
              description="torch-fidelity inception-v3-compat (TF FID Inception, converted)"),
]
EVAL_ASSETS: dict[str, EvalAsset] = {a.name: a for a in _ASSETS}


class MissingWeightsError(FileNotFoundError):
    """A weight file the evaluation needs is not on disk (message names file, checksum, fetch command)."""


class ChecksumError(ValueError):
    pass


def get(name: str) -> EvalAsset:
    if name not in EVAL_ASSETS:
        raise KeyError(f"unknown evaluation asset {name!r}; known: {sorted(EVAL_ASSETS)}")
    return EVAL_ASSETS[name]


def require(name: str, folder: str | Path, *, verify: bool = True) -> Path:
    """The local file of asset `name` inside `folder` (the asset's own folder, e.g. <assets_dir>/xrv).

    `verify` checks the published checksum where one is known (tests that write random weights turn it off).
    """
    a = get(name)
    path = Path(os.path.expanduser(str(folder))) / a.filename
    if not path.is_file():
        checksum = a.sha256 or (f"sha256 starts with {a.sha256_prefix}" if a.sha256_prefix else "not published")
        raise MissingWeightsError(
            f"missing evaluation weights for {name!r}: {path}\n"
            f"  expected file: {a.filename} (checksum: {checksum})\n"
            f"  fetch when online: `{FETCH_COMMAND}` (or download {a.url} to that path)")
    if verify and (a.sha256 or a.sha256_prefix):
        digest = sha256(path)
        if (a.sha256 and digest != a.sha256) or (a.sha256_prefix and not digest.startswith(a.sha256_prefix)):
            raise ChecksumError(f"{path}: sha256 {digest} does not match the published "
                                f"{a.sha256 or a.sha256_prefix + '…'}; delete it and run `{FETCH_COMMAND}`")
    return path


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256(path: str | Path) -> str:
    """Full sha256 of a file, memoised per (path, size, mtime) so a sweep hashes each weight file once."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
