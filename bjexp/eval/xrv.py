"""torchxrayvision classifiers as a `Predictor` (the real world's pathology, retention and identity models).

One object runs, per batch and with one conversion per representation:
- pathology: xrv DenseNet121 (`densenet121-res224-<weights>`) -> sigmoid probability per xrv target, plus its
  1024-d `features2` embedding (identity similarity prior <-> generated);
- race: `baseline_models.emory_hiti.RaceModel` -> P(Asian, Black, White) (manifest `attr_race` codes 0/1/2 in that order);
- age: `baseline_models.riken.AgeModel` -> years;
- sex: `baseline_models.mira.SexModel` -> P(`sex_positive`, default Female; manifest `attr_sex` 1 = female).

Weights are read from one local folder (`cache_dir`, file names as xrv's own downloads); a missing file is a
`MissingWeightsError` before any model is built, so xrv's downloader (which would try the network) never runs.
Accuracy uses the weights' published operating thresholds (xrv `op_threshs`); the probabilities themselves are
the plain sigmoid outputs (xrv's `op_norm` rescaling is monotone, so AUROCs are the same either way).
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from bjexp import assets
from bjexp.eval.metrics import Predictions
from bjexp.imaging import uint8_to_xrv
from bjexp.io import config_hash

DENSENET_PREFIX = "densenet121-res224-"
DEFAULT_WEIGHTS = DENSENET_PREFIX + "chex"
DEFAULT_WEIGHTS_DIR = "~/.torchxrayvision/models_data"
RACE_CLASSES = ("Asian", "Black", "White")  # RaceModel.targets: attr_race is the index into this tuple
RESIZE_POLICY = "bilinear, antialias (as xrv.utils.fix_resolution): 224 px DenseNet & sex, 320 px race & age"


def code_attributes(df: pd.DataFrame) -> pd.DataFrame:
    """Manifest attributes as the xrv models' codes (a copy): attr_sex F/female -> 1, M/male -> 0;
    attr_race by MIMIC-IV race prefix ASIAN* -> 0, BLACK* -> 1, WHITE* -> 2 (RaceModel's classes, as in
    Gichoya et al.), any other or unknown race -> blank (left out of race AUROC). Numeric codes pass unchanged."""
    df = df.copy()
    if "attr_sex" in df and not pd.api.types.is_numeric_dtype(df["attr_sex"]):
        df["attr_sex"] = df["attr_sex"].map(
            lambda v: {"f": 1.0, "female": 1.0, "m": 0.0, "male": 0.0}.get(str(v).strip().lower(), np.nan)
            if isinstance(v, str) else v).astype(float)
    if "attr_race" in df and not pd.api.types.is_numeric_dtype(df["attr_race"]):
        def race(v):
            if not isinstance(v, str):
                return v
            head = v.strip().upper()
            return next((float(i) for i, c in enumerate(RACE_CLASSES) if head.startswith(c.upper())), np.nan)
        df["attr_race"] = df["attr_race"].map(race).astype(float)
    return df


def import_xrv():
    """Import torchxrayvision without letting its process-wide `warnings.filterwarnings("ignore")` leak out."""
    with warnings.catch_warnings():
        import torchxrayvision as xrv
        import torchxrayvision.baseline_models.emory_hiti  # noqa: F401  (imported here, under the same guard)
        import torchxrayvision.baseline_models.mira  # noqa: F401
        import torchxrayvision.baseline_models.riken  # noqa: F401
    return xrv


def full_weights_name(weights: str) -> str:
    """'chex' -> 'densenet121-res224-chex' (xrv accepts both; the registry and results use the long name)."""
    return weights if weights.startswith(DENSENET_PREFIX) else DENSENET_PREFIX + weights


def to_resolution(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square (N,1,S,S) -> (N,1,size,size) exactly as xrv would resize internally (done once, shared by models)."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"xrv models need square images; got {tuple(x.shape[-2:])} (centre-crop first)")
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


@contextlib.contextmanager
def _xrv_home(folder: Path) -> Iterator[None]:
    """xrv's baseline models hard-code ~/.torchxrayvision/models_data/<file>: point ~ at a shim whose
    models_data is `folder` while they are constructed (their files were checked to exist beforehand)."""
    with tempfile.TemporaryDirectory(prefix="bjexp-xrv-home-") as home:
        (Path(home) / ".torchxrayvision").mkdir()
        os.symlink(folder.resolve(), Path(home) / ".torchxrayvision" / "models_data")
        old = os.environ.get("HOME")
        os.environ["HOME"] = home
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = old


def load_densenet(weights: str, cache_dir: str | Path, *, verify: bool = True) -> torch.nn.Module:
    """xrv DenseNet with its weights from `cache_dir` (through xrv's own loader), eval mode."""
    xrv = import_xrv()
    weights = full_weights_name(weights)
    if weights not in xrv.models.model_urls:
        known = sorted(k for k in xrv.models.model_urls if k.startswith(DENSENET_PREFIX))
        raise ValueError(f"unknown xrv DenseNet weights {weights!r}; known: {known}")
    folder = assets.require(weights, folder=cache_dir, verify=verify)
    return xrv.models.DenseNet(weights=weights, cache_dir=str(folder)).eval()


class XRVPredictor:
    """Images (uint8 grey (N,H,W), square) -> `Predictions` from torchxrayvision models."""

    def __init__(self, weights: str = DEFAULT_WEIGHTS, cache_dir: str = DEFAULT_WEIGHTS_DIR,
                 findings: Sequence[str] | None = None, race: bool = True, age: bool = True, sex: bool = True,
                 identity: bool = True, sex_positive: str = "Female", batch_size: int = 32, device: str = "auto",
                 verify_checksums: bool = True, progress: bool = True) -> None:
        xrv = import_xrv()
        self.weights = full_weights_name(weights)
        self.cache_dir = Path(os.path.expanduser(str(cache_dir)))
        self.batch_size = int(batch_size)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.identity = identity
        self.show_progress = progress
        self.name = f"xrv:{self.weights}"
        self.version = xrv.__version__
        self.files = self.preflight(weights, cache_dir, race=race, age=age, sex=sex, verify_checksums=verify_checksums)

        self.densenet = load_densenet(self.weights, self.cache_dir, verify=False).to(self.device)
        meta = xrv.models.model_urls[self.weights]
        self.targets = [t for t in self.densenet.targets if t]
        self.findings = tuple(self.targets)
        self._target_index = [i for i, t in enumerate(self.densenet.targets) if t]
        self.thresholds = {t: float(v) for t, v in zip(self.densenet.targets, meta.get("op_threshs", []))
                           if t and not math.isnan(v)}
        if findings is not None:
            absent = [f for f in findings if f not in self.targets]
            if absent:
                raise ValueError(f"findings {absent} are not predicted by {self.weights} "
                                 f"(its targets: {self.targets}); choose other findings or weights")

        self.race_model = self.age_model = self.sex_model = None
        with _xrv_home(self.cache_dir):
            if race:
                self.race_model = xrv.baseline_models.emory_hiti.RaceModel().eval().to(self.device)
                if tuple(self.race_model.targets) != RACE_CLASSES:
                    raise RuntimeError(f"RaceModel targets changed: {self.race_model.targets} != {RACE_CLASSES}")
            if age:
                self.age_model = xrv.baseline_models.riken.AgeModel().eval().to(self.device)
            if sex:
                self.sex_model = xrv.baseline_models.mira.SexModel().eval().to(self.device)
                if sex_positive not in self.sex_model.targets:
                    raise ValueError(f"sex_positive={sex_positive!r} not in SexModel targets {self.sex_model.targets}")
                self._sex_index = list(self.sex_model.targets).index(sex_positive)
        self.sex_positive = sex_positive

    @staticmethod
    def preflight(weights: str = DEFAULT_WEIGHTS, cache_dir: str = DEFAULT_WEIGHTS_DIR, race: bool = True,
                  age: bool = True, sex: bool = True, verify_checksums: bool = True, **_: object) -> dict[str, Path]:
        """role -> weight file, failing on every missing file at once (run at start-up, before any model is built)."""
        folder = Path(os.path.expanduser(str(cache_dir)))
        roles = {"pathology": full_weights_name(weights),
                 **{r: r for r, on in (("race", race), ("age", age), ("sex", sex)) if on}}
        missing = [p for a in roles.values() for p in assets.check_folder(a, folder)]  # every missing file at once
        if missing:
            raise assets.MissingWeightsError(*missing)
        for a in roles.values():  # checksums (recorded at fetch) before xrv unpickles anything
            assets.require(a, folder=folder, verify=verify_checksums)
        return {role: folder / assets.get(a).file for role, a in roles.items()}

    @torch.inference_mode()
    def _predict_batch(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        x = uint8_to_xrv(batch.to(self.device)).unsqueeze(1)  # (B,1,H,W) in [-1024, 1024]
        x224 = to_resolution(x, 224)
        out = {}
        feats = self.densenet.features2(x224)
        out["findings"] = torch.sigmoid(self.densenet.classifier(feats))[:, self._target_index]
        if self.identity:
            out["features"] = feats
        if self.sex_model is not None:
            out["sex"] = torch.softmax(self.sex_model(x224), dim=1)[:, self._sex_index]
        if self.race_model is not None or self.age_model is not None:
            x320 = to_resolution(x, 320)
            if self.race_model is not None:
                out["race"] = self.race_model(x320).exp()  # the model ends in LogSoftmax
            if self.age_model is not None:
                out["age"] = self.age_model(x320).reshape(-1)
        return {k: v.float().cpu() for k, v in out.items()}

    def predict(self, images: np.ndarray | torch.Tensor) -> Predictions:
        from bjexp.progress import progress

        images = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
        if images.dtype != torch.uint8 or images.ndim != 3:
            raise ValueError(f"expected uint8 grey images (N,H,W); got {images.dtype} {tuple(images.shape)}")
        parts: dict[str, list[torch.Tensor]] = {}
        with progress() as bar:
            task = bar.add_task(f"{self.name}", total=len(images), visible=self.show_progress)
            for start in range(0, len(images), self.batch_size):
                for k, v in self._predict_batch(images[start:start + self.batch_size]).items():
                    parts.setdefault(k, []).append(v)
                bar.advance(task, min(self.batch_size, len(images) - start))
        cat = {k: torch.cat(v).numpy() for k, v in parts.items()}
        probs = cat.get("findings", np.zeros((0, len(self.targets)), np.float32))
        return Predictions(findings={t: probs[:, i] for i, t in enumerate(self.targets)},
                           race=cat.get("race"), age=cat.get("age"), sex=cat.get("sex"),
                           features=cat.get("features"), thresholds=dict(self.thresholds))

    def provenance(self) -> dict:
        """What produced the numbers: versions, weight names, files and their sha256, thresholds, input policy."""
        return {
            "predictor": self.name, "torchxrayvision": self.version,
            "pathology_weights": self.weights, "pathology_weights_trained_on": assets.get(self.weights).description,
            "files": {role: {"file": str(p), "sha256": assets.sha256(p)} for role, p in self.files.items()},
            "operating_thresholds": self.thresholds, "race_classes": list(RACE_CLASSES),
            "sex_positive": self.sex_positive if self.sex_model is not None else None,
            "identity_features": "DenseNet features2 (1024-d), cosine similarity" if self.identity else None,
            "input": {"range": "uint8 -> [-1024, 1024] (bjexp.imaging.uint8_to_xrv)", "resize": RESIZE_POLICY},
        }

    def fingerprint(self) -> str:
        """Cache key of this predictor's outputs (weights content, model set, code-relevant options)."""
        p = self.provenance()
        return config_hash({k: v for k, v in p.items() if k != "files"},
                           {r: f["sha256"] for r, f in p["files"].items()})
