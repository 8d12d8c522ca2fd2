"""Reuse of reference-side predictions across the runs of a sweep.

The real current and prior images of the test split (ceiling and floor rows of every results table) are the same
for every run; their classifier outputs are cached as .npz under `cache_dir/predictions/`, named by
(image-set content hash, predictor fingerprint). Predictors without `fingerprint()` are never cached.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from bjexp.eval.metrics import Predictions, Predictor
from bjexp.io import atomic_write, images_hash

_ARRAYS = ("race", "age", "sex", "features")


def save_predictions(pred: Predictions, path: str | Path) -> None:
    arrays = {f"finding/{k}": v for k, v in pred.findings.items()}
    arrays.update({k: getattr(pred, k) for k in _ARRAYS if getattr(pred, k) is not None})
    arrays["thresholds_json"] = np.array(json.dumps(pred.thresholds))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def load_predictions(path: str | Path) -> Predictions:
    with np.load(path, allow_pickle=False) as z:
        return Predictions(findings={k[len("finding/"):]: z[k] for k in z.files if k.startswith("finding/")},
                           **{k: (z[k] if k in z.files else None) for k in _ARRAYS},
                           thresholds=json.loads(str(z["thresholds_json"])))


def cache_path(predictor: Predictor, images: np.ndarray, cache_dir: str | Path) -> Path | None:
    fingerprint = getattr(predictor, "fingerprint", None)
    if fingerprint is None or cache_dir is None:
        return None
    return Path(cache_dir) / "predictions" / f"{images_hash(images)}-{fingerprint()}.npz"


def cached_predict(predictor: Predictor, images: np.ndarray, cache_dir: str | Path | None) -> Predictions:
    """`predictor.predict(images)`, read from / written to the cache when the predictor has a fingerprint."""
    path = cache_path(predictor, images, cache_dir)
    if path is not None and path.is_file():
        return load_predictions(path)
    pred = predictor.predict(images)
    if path is not None:
        save_predictions(pred, path)
    return pred
