"""Retention metrics: does the scored image keep the patient? (the paper's R and A, plus sex and identity) and
CMIG, the paper's combined score. Rows with an unknown attribute are left out of that attribute's metric only."""
from __future__ import annotations

import math

import numpy as np

from bjexp.eval import stats
from bjexp.eval.registry import Metric


class _Attribute(Metric):
    attribute: str  # race | age | sex (EvalContext.attribute)

    def compute(self, ctx, side, rows, done):
        truth, pred = ctx.attribute(self.attribute), getattr(ctx.predictions(side), self.attribute)
        if truth is None or pred is None:
            return {}
        r = rows[~np.isnan(truth[rows])]
        return {"": self.value(pred[r], truth[r])}

    def value(self, pred: np.ndarray, truth: np.ndarray) -> float:
        raise NotImplementedError


class RaceAUROC(_Attribute):
    name = "race_auroc"
    description = "macro one-vs-rest AUROC of the race classifier vs the patient's recorded race (the paper's R)"
    headline = True
    attribute = "race"

    def value(self, pred, truth):
        return stats.multiclass_auroc(pred, truth) if pred.shape[1] > 2 else stats.auroc(pred[:, 1], truth)


class AgeR(_Attribute):
    name = "age_r"
    description = "Pearson r of the age regressor vs the patient's age (the paper's A)"
    headline = True
    attribute = "age"

    def value(self, pred, truth):
        return stats.pearson_r(pred, truth)


class SexAccuracy(_Attribute):
    name = "sex_accuracy"
    description = "accuracy of the sex classifier (P >= 0.5) vs the patient's recorded sex"
    headline = True
    attribute = "sex"

    def value(self, pred, truth):
        return stats.accuracy(pred >= 0.5, truth == 1)


class IdentitySimilarity(Metric):
    name = "identity_similarity"
    description = "mean cosine similarity of the classifier's features, prior vs scored image (1 for the prior)"
    headline = True

    def compute(self, ctx, side, rows, done):
        if not ctx.has_predictions("floor"):
            return {}
        a, b = ctx.predictions(side).features, ctx.predictions("floor").features
        if a is None or b is None:
            return {}
        sim = ctx.memo(("cosine_to_prior", side), lambda: (a * b).sum(1) / (
            np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12))
        return {"": float(np.mean(sim[rows]))}


class CMIG(Metric):
    name = "cmig"
    description = "CMIG = 100 sqrt(P sqrt(R A)) from the same resample's P, R, A (negative A clamped to 0)"
    consumes = ()
    needs = ("pathology_auroc", "race_auroc", "age_r")
    headline = True
    unit = "%"

    def compute(self, ctx, side, rows, done):
        vals = [done.get(n, math.nan) for n in self.needs]
        if any(math.isnan(x) for x in vals):
            return {}
        return {"": stats.cmig(*vals)[0]}

    def notes(self, side, metrics):
        a = metrics.get(f"{side}/age_r")
        if a is not None and a["value"] < 0:
            return [f"{side}/age_r is negative ({a['value']:.3f}); CMIG clamps it to 0"]
        return []
