"""Metric arithmetic against scikit-learn / scipy and hand-computed cases."""
import math

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import roc_auc_score

from bjexp.eval import stats


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 50)
        s = rng.integers(0, 5, 50).astype(float)  # many ties
        if 0 < y.sum() < 50:
            assert stats.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auroc_hand_cases():
    assert stats.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert stats.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert stats.auroc([0.5, 0.5], [0, 1]) == 0.5
    assert stats.auroc([0.3, 0.1, 0.2], [1, 0, 1]) == 1.0  # positives 0.3, 0.2 > negative 0.1
    assert math.isnan(stats.auroc([0.1, 0.2], [1, 1]))


def test_auroc_is_bit_identical_to_the_rank_sum_formula():
    """The counting form gives exactly the value the rank-sum form gives (what every run scored before it)."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(3)
    for n, levels in [(483, 7), (483, None), (1000, 2), (31, 3)]:
        for _ in range(30):
            y = rng.random(n) < rng.uniform(0.05, 0.95)
            s = rng.integers(0, levels, n) / levels if levels else rng.random(n).astype(np.float32).astype(float)
            if not 0 < y.sum() < n:
                continue
            n1, n0 = int(y.sum()), int((~y).sum())
            reference = float((rankdata(s)[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
            assert stats.auroc(s, y) == reference  # exact, not approx
    assert math.isnan(stats.auroc([0.1, np.nan, 0.3], [0, 1, 1]))


def test_multiclass_auroc_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    p = rng.dirichlet([1, 1, 1], 200) + np.eye(3)[y] * 0.3
    p /= p.sum(1, keepdims=True)
    assert stats.multiclass_auroc(p, y) == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)


def test_pearson_matches_scipy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=100)
    y = x + rng.normal(size=100)
    assert stats.pearson_r(x, y) == pytest.approx(pearsonr(x, y).statistic, abs=1e-12)
    assert math.isnan(stats.pearson_r(np.ones(5), np.arange(5)))


def test_cmig_hand_computed():
    # sqrt(0.8 * sqrt(0.9 * 0.64)) = sqrt(0.8 * 0.758946...) = 0.779203...
    score, clamped = stats.cmig(0.8, 0.9, 0.64)
    assert score == pytest.approx(100 * math.sqrt(0.8 * math.sqrt(0.9 * 0.64)), abs=1e-9)
    assert score == pytest.approx(77.9203, abs=1e-3) and not clamped
    assert stats.cmig(0.8, 0.9, -0.2) == (0.0, True)  # negative r clamped at 0 and flagged


def test_bootstrap_resamples_whole_patients():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    seen = []

    def stat(rows):
        seen.append(rows)
        return {"n": float(len(rows))}

    stats.bootstrap(stat, groups, n_resamples=50, seed=0)
    for rows in seen[1:]:
        g = groups[rows]
        # each drawn patient contributes all of its rows
        for p in set(g):
            assert (g == p).sum() % (groups == p).sum() == 0

# CI coverage on simulated, patient-clustered data: tests/test_eval_metrics.py.
