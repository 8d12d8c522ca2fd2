"""Pathology metrics: does the scored image show the current study's findings? (the paper's P, per finding)

The classifier's probability for each configured finding on the scored image against the current study's
labels (label policy: `EvalContext.labels`). Macro means over the findings with a defined value.
"""
from __future__ import annotations

import math

import numpy as np

from bjexp.eval import stats
from bjexp.eval.registry import Metric


class _PerFinding(Metric):
    """Per-finding values (`name/<finding>`) and their macro mean (`name`)."""

    def value(self, p: np.ndarray, y: np.ndarray, threshold: float) -> float:
        raise NotImplementedError

    def rows_of(self, ctx, finding: str, rows: np.ndarray) -> np.ndarray:
        """Which of `rows` count for this finding (a boolean mask over `rows`)."""
        return ~np.isnan(ctx.labels("current", finding)[rows])

    def compute(self, ctx, side, rows, done):
        pred = ctx.predictions(side)
        out, vals = {}, []
        for f in (f for f in ctx.findings if f in pred.findings):
            keep = self.rows_of(ctx, f, rows)
            p, y = pred.findings[f][rows][keep], ctx.labels("current", f)[rows][keep]
            out[f] = v = self.value(p, y, pred.thresholds.get(f, 0.5))
            vals.append(v)
        out[""] = nanmean(vals)
        return out


class PathologyAUROC(_PerFinding):
    name = "pathology_auroc"
    description = "AUROC of the classifier's finding probability vs the current study's labels (macro over findings)"
    headline = True

    def value(self, p, y, threshold):
        return stats.auroc(p, y)


class PathologyAUROCChanged(PathologyAUROC):
    name = "pathology_auroc_changed"
    description = "pathology AUROC on the pairs whose label changed (where copying the prior cannot succeed)"

    def rows_of(self, ctx, finding, rows):
        return ctx.changed(finding)[rows]


class PathologyAccuracy(_PerFinding):
    name = "pathology_accuracy"
    description = "accuracy at the classifier's operating thresholds vs the current study's labels (macro)"
    headline = True

    def value(self, p, y, threshold):
        return stats.accuracy(p >= threshold, y == 1)


def nanmean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return float(np.mean(xs)) if xs else math.nan
