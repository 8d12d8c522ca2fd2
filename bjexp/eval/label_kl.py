"""Table 5: KL divergence between the classifier's predicted-label distribution on the real current images and
on the scored images of the same pairs (the paper's label-distribution KL).

Binning: a predicted label is the classifier's probability at or above its operating threshold (xrv `op_threshs`
in the real world, 0.5 in the miniature one), per configured finding. Distribution:
- `bernoulli` (default): each finding's predicted-positive rate over the pairs; the value is KL between the two
  products of independent Bernoullis = the sum over findings of KL(Bern(p_real) || Bern(p_scored)), and each
  finding's term is a sub-key (`label_kl/<finding>`);
- `joint`: the 2^K predicted-label patterns of the K findings, as a categorical distribution.
Counts get `smoothing` pseudo-counts per bin (0.5, Jeffreys) so an empty bin does not make it infinite. In nats,
KL(real || scored); 0 when the scored images' label distribution is the real one. Patient-bootstrap CI.
"""
from __future__ import annotations

import numpy as np

from bjexp.eval.registry import Metric

DISTRIBUTIONS = ("bernoulli", "joint")


class LabelKL(Metric):
    name = "label_kl"
    description = ("KL(real current || scored) of the classifier's predicted-label distribution, nats "
                   "(per finding: Bernoulli positive rates; thresholded at the operating points)")
    direction = "lower"
    headline = True
    sides = ("test", "floor")  # the ceiling is the reference itself (0)

    def __init__(self, distribution: str = "bernoulli", smoothing: float = 0.5, **kw):
        super().__init__(**kw)
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"label_kl: distribution={distribution!r}; expected one of {DISTRIBUTIONS}")
        if smoothing < 0:
            raise ValueError(f"label_kl: smoothing={smoothing} must be >= 0")
        self.distribution, self.smoothing = distribution, float(smoothing)

    def compute(self, ctx, side, rows, done):
        if not ctx.has_predictions("ceiling"):
            return {}
        findings = [f for f in ctx.findings if f in ctx.predictions(side).findings
                    and f in ctx.predictions("ceiling").findings]
        if not findings:
            return {}
        real, scored = (ctx.memo(("predicted_labels", s), lambda s=s: predicted_labels(ctx.predictions(s), findings))
                        for s in ("ceiling", side))
        real, scored = real[rows], scored[rows]
        if self.distribution == "joint":
            return {"": kl(pattern_counts(real) + self.smoothing, pattern_counts(scored) + self.smoothing)}
        out = {}
        for k, f in enumerate(findings):
            pos_r, pos_s = real[:, k].sum(), scored[:, k].sum()
            n = len(rows)
            out[f] = kl(np.array([pos_r, n - pos_r]) + self.smoothing, np.array([pos_s, n - pos_s]) + self.smoothing)
        out[""] = float(sum(out.values()))
        return out


def predicted_labels(pred, findings: list[str]) -> np.ndarray:
    """(N, K) bool: probability >= the finding's operating threshold (default 0.5)."""
    return np.stack([pred.findings[f] >= pred.thresholds.get(f, 0.5) for f in findings], axis=1)


def pattern_counts(labels: np.ndarray) -> np.ndarray:
    """Counts of each of the 2^K label patterns (bit k = finding k)."""
    codes = labels.astype(np.int64) @ (1 << np.arange(labels.shape[1]))
    return np.bincount(codes, minlength=1 << labels.shape[1]).astype(np.float64)


def kl(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """KL(p || q) in nats of two count vectors (normalised here); inf where q has no mass and p has."""
    p, q = p_counts / p_counts.sum(), q_counts / q_counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return float(terms.sum())
