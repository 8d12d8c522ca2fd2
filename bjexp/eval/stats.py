"""Metric arithmetic shared by both worlds: AUROC, Pearson r, CMIG, and the patient-level bootstrap.

Pure numpy/scipy. Checked against scikit-learn and hand-computed cases in tests/test_stats.py.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Mapping

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Binary AUROC (Mann–Whitney U / n0·n1, ties count ½). NaN if a class is absent or a score is NaN.

    U is counted with one sort of the negatives and a binary search per positive (the bootstrap calls this tens
    of thousands of times per run); every count is an integer, so U is exact and the value is bit-identical to
    the rank-sum formula (tests/test_stats.py)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    pos, neg = scores[labels], np.sort(scores[~labels])
    if pos.size == 0 or neg.size == 0 or np.isnan(neg[-1]) or np.isnan(pos).any():
        return math.nan
    below, upto = np.searchsorted(neg, pos, "left"), np.searchsorted(neg, pos, "right")
    u = float(below.sum()) + 0.5 * float((upto - below).sum())
    return float(u / (pos.size * neg.size))


def multiclass_auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes present (as scikit-learn's multi_class='ovr', average='macro')."""
    probs = np.asarray(probs)
    labels = np.asarray(labels).astype(int)
    vals = [auroc(probs[:, k], labels == k) for k in range(probs.shape[1]) if 0 < (labels == k).sum() < labels.size]
    return float(np.mean(vals)) if vals else math.nan


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    pred = np.asarray(pred)
    return float((pred == np.asarray(labels)).mean()) if pred.size else math.nan


def ssim(a: np.ndarray, b: np.ndarray, full: bool = False) -> np.ndarray:
    """SSIM of uint8 grey image pairs (torchmetrics, Gaussian 11 x 11 window, data range 1): per image (N,), or with
    `full` the local SSIM map (N, H, W)."""
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    if not len(a):
        return np.zeros((0, *a.shape[1:]) if full else 0)
    t = [torch.as_tensor(x.astype(np.float32) / 255.0)[:, None] for x in (a, b)]
    out = structural_similarity_index_measure(t[0], t[1], data_range=1.0, reduction="none", return_full_image=full)
    return (out[1][:, 0] if full else out).double().numpy()


def cmig(pathology_auroc: float, race_auroc: float, age_r: float) -> tuple[float, bool]:
    """CMIG = sqrt(P · sqrt(R · A)), inputs as fractions, output in percent.

    Returns (score, clamped): a negative age r is clamped to 0 (the score then is 0) and flagged.
    """
    clamped = age_r < 0
    a = max(age_r, 0.0)
    return 100.0 * math.sqrt(max(pathology_auroc, 0.0) * math.sqrt(max(race_auroc, 0.0) * a)), clamped


def bootstrap(statistic: Callable[[np.ndarray], Mapping[str, float]], groups: np.ndarray, *,
              n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, dict[str, float]]:
    """Percentile bootstrap CIs resampling whole groups (patients) with replacement.

    `statistic(rows)` gets row indices and returns named scalars; all scalars of one resample are computed on the
    same rows, so derived scores (CMIG) get consistent CIs. Returns {name: {value, lo, hi, n_valid}}.
    """
    point, draws = bootstrap_draws(statistic, groups, n_resamples=n_resamples, seed=seed)
    return summarise(point, draws, n_resamples, alpha)


def bootstrap_draws(statistic: Callable[[np.ndarray], Mapping[str, float]], groups: np.ndarray, *,
                    n_resamples: int = 1000, seed: int = 0) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The point values and, per name, its value on each resample (NaN where undefined or absent). Resample i
    depends only on (groups, seed, i): runs scored on the same pairs with the same seed share their resamples."""
    groups = np.asarray(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    point = {k: float(v) for k, v in statistic(np.arange(groups.size)).items()}
    rng = np.random.default_rng(seed)
    draws = {k: np.full(n_resamples, np.nan) for k in point}
    for i in range(n_resamples):
        pick = rng.integers(0, len(uniq), size=len(uniq))
        rows = np.concatenate([members[g] for g in pick])
        for k, v in statistic(rows).items():
            if k in draws:
                draws[k][i] = v
    return point, draws


def summarise(point: Mapping[str, float], draws: Mapping[str, np.ndarray], n_resamples: int,
              alpha: float = 0.05) -> dict[str, dict[str, float]]:
    """{name: {value, lo, hi, n_valid}}: percentile interval of the defined draws; NaN bounds when a statistic is
    undefined in more than half of the resamples."""
    out = {}
    for k, v in point.items():
        arr = np.asarray(draws[k], dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        if arr.size == 0 or arr.size < 0.5 * n_resamples:  # no resamples, or undefined in most: no meaningful CI
            lo = hi = math.nan
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lo, hi = np.quantile(arr, [alpha / 2, 1 - alpha / 2])
        out[k] = {"value": float(v), "lo": float(lo), "hi": float(hi), "n_valid": int(arr.size)}
    return out
