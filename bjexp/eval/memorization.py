"""Memorization audit (issue 14), pixel space: is a scored image closer to some training image than the real
current of its pair is to the current's own nearest training image?

Distances are Euclidean on grey levels in float64 (uint8 differences would wrap), each scored image against every
training image (the run's training-split priors and currents, `ctx.get("train_images")`). Per pair:
flagged = d(scored, its nearest training image) < d(real current, its nearest training image).
`memorization` = the fraction flagged (lower is better), `memorization/nn_distance` = the mean nearest distance
per pixel (RMS grey levels / 255). Sides `test` and `floor` (the priors: a generator that copies the prior scores
this). Classifier-feature-space neighbours and the closest-pairs strip are not built yet.
"""
from __future__ import annotations

import numpy as np

from bjexp.eval.registry import Metric


def nearest(queries: np.ndarray, bank: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query's nearest bank image; Euclidean over float64 grey levels."""
    b = bank.reshape(len(bank), -1).astype(np.float64)
    b2 = (b * b).sum(1)
    dist, idx = np.empty(len(queries)), np.empty(len(queries), np.int64)
    for i in range(0, len(queries), chunk):
        q = queries[i:i + chunk].reshape(-1, b.shape[1]).astype(np.float64)
        d2 = (q * q).sum(1)[:, None] + b2[None] - 2 * q @ b.T
        j = d2.argmin(1)
        idx[i:i + chunk], dist[i:i + chunk] = j, np.sqrt(np.maximum(d2[np.arange(len(q)), j], 0))
    return dist, idx


class Memorization(Metric):
    name = "memorization"
    description = "fraction of pairs whose image is closer to a training image than the real current is (pixels)"
    consumes = ("images",)
    direction = "lower"
    headline = True
    sides = ("test", "floor")

    def compute(self, ctx, side, rows, done):
        if "train_images" not in ctx.providers:
            return {}
        bank = ctx.get("train_images")
        if not len(bank):
            return {}
        d_side, _ = ctx.memo(("nearest_train", side), lambda: nearest(ctx.side_images(side), bank))
        d_real, _ = ctx.memo(("nearest_train", "ceiling"), lambda: nearest(ctx.side_images("ceiling"), bank))
        n_px = bank[0].size
        return {"": float((d_side[rows] < d_real[rows]).mean()),
                "nn_distance": float((d_side[rows] / np.sqrt(n_px) / 255.0).mean())}

    def details(self, ctx):
        if not ctx.built("train_images"):
            return None
        return {"space": "pixels (float64 grey levels)", "n_train_images": int(len(ctx.get("train_images")))}
