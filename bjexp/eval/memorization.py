"""Memorization audit (issue 14): is a scored image closer to some training image than the real current of its
pair is to the current's own nearest training image?

Two spaces, each scored image against every training image (the run's training-split priors and currents,
`ctx.get("train_images")`), each compared with its own pair's real current:
- pixels: Euclidean on grey levels in float64 (uint8 differences would wrap);
- classifier features (`memorization/features`): Euclidean on the evaluation classifier's embedding
  (`Predictions.features`; the training bank through the reference prediction cache).
Per pair: flagged = d(scored, its nearest training image) < d(real current, its nearest training image).
`memorization` = the fraction flagged in pixels (lower is better), `memorization/nn_distance` = the mean nearest
pixel distance (RMS grey levels / 255). Sides `test` and `floor` (the priors: a patient's own earlier study is
often in the training split's neighbourhood). `details.memorization.closest` = the test side's closest pairs
(pixels), drawn by `bjexp.evaluate` as `memorization.png` (generated | nearest training image | real current).
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

    def __init__(self, closest: int = 8, **kw):
        super().__init__(**kw)
        self.closest = int(closest)

    def compute(self, ctx, side, rows, done):
        if "train_images" not in ctx.providers:
            return {}
        bank = ctx.get("train_images")
        if not len(bank):
            return {}
        d_side, _ = ctx.memo(("nearest_train", side), lambda: nearest(ctx.side_images(side), bank))
        d_real, _ = ctx.memo(("nearest_train", "ceiling"), lambda: nearest(ctx.side_images("ceiling"), bank))
        n_px = bank[0].size
        out = {"": float((d_side[rows] < d_real[rows]).mean()),
               "nn_distance": float((d_side[rows] / np.sqrt(n_px) / 255.0).mean())}
        if ctx.has_predictions(side) and "predictor" in ctx.providers:
            f_side, f_real = (ctx.memo(("nearest_train_features", s), lambda s=s: self._feature_nn(ctx, s, bank))
                              for s in (side, "ceiling"))
            if f_side is not None and f_real is not None:
                out["features"] = float((f_side[rows] < f_real[rows]).mean())
        return out

    @staticmethod
    def _feature_nn(ctx, side, bank) -> np.ndarray | None:
        from bjexp.eval.cache import cached_predict

        feats = ctx.predictions(side).features
        if feats is None:
            return None
        bank_f = ctx.memo("train_features", lambda: cached_predict(
            ctx.get("predictor"), bank, ctx.cache_dir if ctx.cache_reference else None).features)
        return nearest(np.asarray(feats, np.float64), np.asarray(bank_f, np.float64))[0]

    def details(self, ctx):
        if not ctx.built("train_images"):
            return None
        out = {"space": "pixels (float64 grey levels); features: the evaluation classifier's embedding",
               "n_train_images": int(len(ctx.get("train_images")))}
        if ctx.has_memo(("nearest_train", "test")):
            d, idx = ctx.memo(("nearest_train", "test"), lambda: None)
            d_real, _ = ctx.memo(("nearest_train", "ceiling"), lambda: None)
            order = np.argsort(d)[: self.closest]
            ids = ctx.df["pair_id"].astype(str).to_numpy() if "pair_id" in ctx.df else np.arange(len(d)).astype(str)
            out["closest"] = [{"pair_id": ids[i], "train_index": int(idx[i]),
                               "distance": float(d[i]), "real_current_distance": float(d_real[i])} for i in order]
        return out
