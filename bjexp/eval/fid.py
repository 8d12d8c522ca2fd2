"""FID through torch-fidelity: Inception (`inception-v3-compat`) and a CXR-domain FID on xrv DenseNet `features2`.

Policy (recorded with every result, see `policy()`):
- N is fixed per evaluation: the same N pairs on both sides (generated vs real current images of those pairs);
  FID is biased in N, so only compare numbers with equal `n`.
- Images enter as uint8 grey, are repeated to RGB uint8 (bjexp.imaging.grey_to_rgb_uint8); Inception resizes to
  299 px with torch-fidelity's TF1-compatible bilinear; the xrv extractor takes one channel, maps to [-1024, 1024]
  and resizes to 224 px (bilinear, antialias — as xrv itself does).
- Reference features (real side) are cached by torch-fidelity under `cache_root`, named by
  (image-set content hash, N, extractor, weights sha256): every run of a sweep scoring the same test split reuses
  them, and any change of images, N or weights gives a new name. The generated side is never cached.
- torch-fidelity extracts (and caches) the features; the distance is `fid_from_features` (exact, faster when
  N < D; equal to torch-fidelity's and torchmetrics' within 1e-3).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bjexp import assets
from bjexp.eval.registry import Metric
from bjexp.imaging import grey_to_rgb_uint8, uint8_to_xrv
from bjexp.io import images_hash

XRV_EXTRACTOR = "xrv-densenet121-features2"
INCEPTION_EXTRACTOR = "inception-v3-compat"
FEATURE_LAYER = {INCEPTION_EXTRACTOR: "2048", XRV_EXTRACTOR: "features2"}  # the standard FID layers


class GreyAsRGB(Dataset):
    """uint8 grey (N,H,W) in memory -> uint8 (3,H,W) tensors, the input torch-fidelity expects."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = torch.as_tensor(np.ascontiguousarray(images))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return grey_to_rgb_uint8(self.images[i][None, None])[0]


def _extractor_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    from bjexp.eval.xrv import load_densenet, to_resolution

    class XRVFeatures2(FeatureExtractorBase):
        """torch-fidelity feature extractor: xrv DenseNet121 `features2` (1024-d), weights from a local file."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError(f"{XRV_EXTRACTOR} needs feature_extractor_weights_path (an xrv DenseNet file)")
            path = Path(feature_extractor_weights_path)
            by_file = {a.file: a.name for a in assets.registry().values() if a.name.startswith("densenet")}
            if path.name not in by_file:
                raise ValueError(f"{path}: not an xrv DenseNet weights file name; expected one of {sorted(by_file)}")
            self.net = load_densenet(by_file[path.name], path.parent, verify=False)
            self.requires_grad_(False)
            self.eval()

        @staticmethod
        def get_provided_features_list():
            return ("features2",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "features2"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 224, 224, dtype=torch.uint8)

        def forward(self, x):
            x = to_resolution(uint8_to_xrv(x[:, :1]), 224)
            return (self.net.features2(x).to(torch.float32),)

    return XRVFeatures2


def register() -> None:
    """Register the xrv extractor with torch-fidelity (idempotent)."""
    import torch_fidelity
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if XRV_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(XRV_EXTRACTOR, _extractor_class())


def fid_torch_fidelity(features_1: np.ndarray | torch.Tensor, features_2: np.ndarray | torch.Tensor) -> float:
    """FID with torch-fidelity's own statistics and distance (float64; eigenvalues of a D x D product)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    s1, s2 = (fid_features_to_statistics(torch.as_tensor(np.asarray(f), dtype=torch.float64))
              for f in (features_1, features_2))
    return float(next(iter(fid_statistics_to_metric(s1, s2, verbose=False).values())))


def fid_from_features(features_1: np.ndarray | torch.Tensor, features_2: np.ndarray | torch.Tensor) -> float:
    """Exact FID |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2), float64.

    With centred, scaled features A (n1 x D), B (n2 x D): S1 = A'A, S2 = B'B, and the non-zero eigenvalues of
    S1 S2 are the squared singular values of A B' (n1 x n2), so tr sqrt(S1 S2) = sum of those singular values.
    When n < D (1,214 test pairs vs 2,048 Inception features) that is a small SVD instead of the eigenvalues of a
    non-symmetric D x D matrix (~10x faster on CPU); otherwise torch-fidelity's own computation is used.
    Both agree with torchmetrics to 1e-3 (tests/test_eval_fid.py).
    """
    a, b = (torch.as_tensor(np.asarray(f), dtype=torch.float64) for f in (features_1, features_2))
    if min(len(a), len(b)) >= a.shape[1]:
        return fid_torch_fidelity(a, b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    a = (a - mu_a) / math.sqrt(len(a) - 1)
    b = (b - mu_b) / math.sqrt(len(b) - 1)
    tr_covmean = torch.linalg.svdvals(a @ b.T).sum()
    return float((mu_a - mu_b).square().sum() + a.square().sum() + b.square().sum() - 2 * tr_covmean)


def weights_file(extractor: str, *, xrv_weights: str, xrv_dir: str | Path, inception_weights: str | Path,
                 verify: bool = True) -> Path:
    if extractor == INCEPTION_EXTRACTOR:
        path = Path(os.path.expanduser(str(inception_weights)))
        if path.name == assets.get("inception").file:  # the published file: checksum-verified
            return assets.require("inception", folder=path.parent, verify=verify) / path.name
        return _require_file(path)  # any other name: the user's own conversion, taken as is
    if extractor == XRV_EXTRACTOR:
        from bjexp.eval.xrv import full_weights_name
        name = full_weights_name(xrv_weights)
        return assets.require(name, folder=xrv_dir, verify=verify) / assets.get(name).file
    raise ValueError(f"unknown FID extractor {extractor!r}; choose from {[INCEPTION_EXTRACTOR, XRV_EXTRACTOR]}")


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise assets.MissingWeightsError(assets.Problem(
            "FID Inception weights (eval.fid_settings.inception_weights)", path.parent, (path.name,),
            fix=f"fill it, or fetch the published ones when online: `{assets.get('inception').fetch_command}`"))
    return path


def extract_features(generated: np.ndarray, reference: np.ndarray, *, cache_root: str | Path,
                     extractors: tuple[str, ...] | list[str] = (INCEPTION_EXTRACTOR, XRV_EXTRACTOR),
                     xrv_weights: str = "densenet121-res224-chex", xrv_dir: str | Path = "~/.torchxrayvision/models_data",
                     inception_weights: str | Path = "", n: int | None = None, batch_size: int = 32,
                     device: str = "auto", verify_checksums: bool = True, verbose: bool = True) -> dict:
    """The fidelity features of `generated` and `reference` (uint8 grey (N,H,W), rows aligned; first `n` rows)
    per extractor, through torch-fidelity (reference side cached on disk): {"features": {extractor: (gen, ref)
    float64 tensors}, "policy": {...}}. FID, KID and PRDC all read these (one pass over the images)."""
    from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id_cached

    register()
    if len(generated) != len(reference):
        raise ValueError(f"FID sets must be aligned: {len(generated)} generated vs {len(reference)} reference images")
    n_avail = len(generated)
    n = n_avail if n is None else int(n)
    if n > n_avail or n < 2:
        raise ValueError(f"FID n={n} but {n_avail} image pairs are available (need 2 <= n <= {n_avail})")
    generated, reference = generated[:n], reference[:n]
    ref_hash = images_hash(reference)
    cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    feats, files = {}, {}
    for ex in extractors:
        wpath = weights_file(ex, xrv_weights=xrv_weights, xrv_dir=xrv_dir, inception_weights=inception_weights,
                             verify=verify_checksums)
        wsha = assets.sha256(wpath)
        files[ex] = {"file": str(wpath), "sha256": wsha}
        kw = dict(input1=GreyAsRGB(generated), input2=GreyAsRGB(reference), feature_extractor_weights_path=str(wpath),
                  input2_cache_name=f"bjexp-ref-{ref_hash}-n{n}-w{wsha[:16]}", cache=True,
                  cache_root=str(Path(os.path.expanduser(str(cache_root)))), batch_size=batch_size, cuda=cuda,
                  save_cpu_ram=True, verbose=verbose)
        layer = FEATURE_LAYER[ex]
        extractor = create_feature_extractor(ex, [layer], **kw)
        # torch-fidelity extracts both sides and caches the reference's features under input2_cache_name
        feats[ex] = tuple(extract_featuresdict_from_input_id_cached(i, extractor, **kw)[layer].to(torch.float64)
                          for i in (1, 2))
    return {"features": feats, "policy": policy(n, extractors, ref_hash, files, xrv_weights)}


def compute_fid(generated: np.ndarray, reference: np.ndarray, *, prefix: str = "test", **kw) -> dict:
    """FID of `generated` vs `reference` per extractor (`kw` as extract_features).

    Returns {"metrics": {f"{prefix}/fid/<extractor>": value}, "policy": {...}} (policy = what makes it comparable).
    """
    res = extract_features(generated, reference, **kw)
    return {"metrics": {f"{prefix}/fid/{ex}": fid_from_features(*f) for ex, f in res["features"].items()},
            "policy": res["policy"]}


def side_features(ctx, side: str) -> dict:
    """extract_features of a side's images vs the real currents, with `eval.fid_settings`, once per evaluation."""
    def build():
        cfg = ctx.cfg
        s = cfg.fid_settings
        return extract_features(ctx.side_images(side), ctx.side_images("ceiling"),
                                cache_root=Path(str(cfg.cache_dir)) / "fid", extractors=list(s.extractors),
                                xrv_weights=str(s.xrv_weights), xrv_dir=str(cfg.weights_dir),
                                inception_weights=str(s.inception_weights), n=s.n, batch_size=int(s.batch_size),
                                verify_checksums=bool(cfg.get("verify_checksums", True)))
    return ctx.memo(("fidelity_features", side), build)


def policy(n: int, extractors, ref_hash: str, files: dict, xrv_weights: str) -> dict:
    import torch_fidelity

    return {
        "n": n, "extractors": list(extractors), "reference_images_hash": ref_hash, "weights": files,
        "xrv_weights": xrv_weights if XRV_EXTRACTOR in extractors else None,
        "torch_fidelity": torch_fidelity.__version__,
        "resize": {INCEPTION_EXTRACTOR: "grey->RGB uint8, torch-fidelity TF1-compatible bilinear to 299 px",
                   XRV_EXTRACTOR: "one channel -> [-1024, 1024], bilinear antialias to 224 px (xrv policy)"},
        "sets": "generated current image vs real current image of the same N pairs (first N in manifest order)",
    }


class FID(Metric):
    """`fid/<extractor>` per `eval.fid_settings.extractors` (schema: bjexp.schema.eval_real.FIDSettings); `fid` is the
    first of them (the standard Inception FID by default). The policy goes to results.json `details.fid`."""
    name = "fid"
    description = "Fréchet distance of generated vs real current images of the same N pairs (first extractor; no CI)"
    consumes = ("images",)
    bootstrap = False
    direction = "lower"
    headline = True
    sides = ("test",)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.policy: dict | None = None

    def compute(self, ctx, side, rows, done):
        res = side_features(ctx, side)
        self.policy = res["policy"]
        values = {ex: fid_from_features(*f) for ex, f in res["features"].items()}
        return {"": values[ctx.cfg.fid_settings.extractors[0]], **values}

    def notes(self, side, metrics):
        return ["FID has no bootstrap CI (set-level statistic, biased in N): compare equal details.fid.n only"] \
            if f"{side}/fid" in metrics else []

    def details(self, ctx):
        return self.policy
