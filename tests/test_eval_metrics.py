"""Metric arithmetic against independent computations: scikit-learn AUROC/accuracy, hand-computed CMIG,
and bootstrap CI coverage on simulated patient-clustered data."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import accuracy_score, roc_auc_score

from bjexp.eval import metrics, registry, stats

PAPER = registry.config_metrics("paper")


def _score(pred, df, *, findings, prior=None, **kw):
    return registry.score_predictions(PAPER, pred, df, prior=prior, findings=findings, **kw)


def _frame(n_patients: int, rng: np.random.Generator) -> pd.DataFrame:
    pid = np.repeat(np.arange(n_patients), rng.integers(1, 4, n_patients))
    return pd.DataFrame({"patient_id": [f"p{i}" for i in pid]})


def test_auroc_and_accuracy_match_sklearn_with_label_policy():
    rng = np.random.default_rng(0)
    df = _frame(80, rng)
    n = len(df)
    y = rng.choice([1.0, 0.0, -1.0, np.nan], size=n, p=[0.35, 0.45, 0.1, 0.1])
    df["current_Effusion"] = y
    df["prior_Effusion"] = rng.choice([1.0, 0.0], size=n)
    p = np.round(np.clip(0.3 * (y == 1) + rng.normal(0.4, 0.2, n), 0, 1), 2)  # rounded: ties exercised
    pred = metrics.Predictions(findings={"Effusion": p}, thresholds={"Effusion": 0.47})
    for policy, unc_value in (("exclude", None), ("positive", 1), ("negative", 0)):
        res = _score(pred, df, findings=["Effusion"], uncertain=policy, n_bootstrap=0)["metrics"]
        yy = y.copy()
        if unc_value is not None:
            yy[yy == -1] = unc_value
        keep = (yy == 0) | (yy == 1)  # blank always out; uncertain out under "exclude"
        assert res["test/pathology_auroc/Effusion"]["value"] == pytest.approx(roc_auc_score(yy[keep], p[keep]), abs=1e-12)
        assert res["test/pathology_accuracy/Effusion"]["value"] == pytest.approx(
            accuracy_score(yy[keep] == 1, p[keep] >= 0.47), abs=1e-12)


def test_multiclass_race_auroc_matches_sklearn_ovr_macro():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + 0.8 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert stats.multiclass_auroc(probs, labels) == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-12)


def test_cmig_hand_computed_and_negative_age_clamped():
    # sqrt(0.8 * sqrt(0.9 * 0.49)) = sqrt(0.8 * 0.66407830) = sqrt(0.53126264) = 0.72887766
    score, clamped = stats.cmig(0.8, 0.9, 0.49)
    assert score == pytest.approx(72.887766, abs=1e-5) and not clamped
    assert stats.cmig(0.8, 0.9, -0.2) == (0.0, True)


def test_cmig_in_score_uses_point_estimates_and_flags_clamping():
    rng = np.random.default_rng(2)
    df = _frame(60, rng)
    n = len(df)
    df["current_Edema"] = rng.integers(0, 2, n).astype(float)
    df["attr_race"] = rng.integers(0, 3, n)
    df["attr_age"] = rng.uniform(30, 90, n)
    race = rng.dirichlet(np.ones(3), n) + np.eye(3)[df["attr_race"]]
    race /= race.sum(1, keepdims=True)
    for sign in (1, -1):
        pred = metrics.Predictions(findings={"Edema": df["current_Edema"].to_numpy() * 0.3 + rng.uniform(0, 1, n)},
                                   race=race, age=sign * df["attr_age"].to_numpy() + rng.normal(0, 15, n))
        res = _score(pred, df, findings=["Edema"], n_bootstrap=20)
        m = res["metrics"]
        P, R, A = (m[f"test/{k}"]["value"] for k in ("pathology_auroc", "race_auroc", "age_r"))
        expected = 100 * math.sqrt(P * math.sqrt(R * max(A, 0.0)))
        assert m["test/cmig"]["value"] == pytest.approx(expected, abs=1e-9)
        assert bool(res["notes"]) == (sign < 0)


def _clustered(n_patients: int, rng: np.random.Generator):
    """Rows within a patient share a random effect (ICC 0.5): a row bootstrap is too narrow, a patient one is not."""
    sizes = rng.integers(1, 6, n_patients)
    pid = np.repeat(np.arange(n_patients), sizes)
    x = np.repeat(rng.normal(0, 1, n_patients), sizes) + rng.normal(0, 1, pid.size)
    return pid, x


@pytest.mark.parametrize("by_patient", [True, False])
def test_bootstrap_ci_coverage_on_clustered_data(by_patient):
    rng = np.random.default_rng(3)
    hits, trials = 0, 150
    for t in range(trials):
        pid, x = _clustered(40, rng)
        groups = pid if by_patient else np.arange(pid.size)
        ci = stats.bootstrap(lambda r: {"mean": float(x[r].mean())}, groups, n_resamples=300, seed=t)["mean"]
        hits += ci["lo"] <= 0.0 <= ci["hi"]
    coverage = hits / trials
    if by_patient:
        assert 0.88 <= coverage <= 0.99, coverage
    else:  # ignoring the clustering under-covers: the check above can fail
        assert coverage < 0.88, coverage


def test_bootstrap_auroc_ci_covers_binormal_truth():
    rng = np.random.default_rng(4)
    d = 1.0
    truth = norm.cdf(d / math.sqrt(2))  # AUROC of N(d,1) vs N(0,1)
    hits, trials = 0, 120
    for t in range(trials):
        y = rng.integers(0, 2, 150)
        s = rng.normal(d * y, 1.0)
        ci = stats.bootstrap(lambda r: {"auc": stats.auroc(s[r], y[r])}, np.arange(150), n_resamples=300, seed=t)["auc"]
        hits += ci["lo"] <= truth <= ci["hi"]
    assert 0.88 <= hits / trials <= 0.99


def test_unknown_attributes_are_left_out_and_text_codes_rejected():
    rng = np.random.default_rng(5)
    df = _frame(50, rng)
    n = len(df)
    df["attr_race"] = rng.integers(0, 3, n).astype(float)
    df["attr_age"] = rng.uniform(20, 90, n)
    df["attr_sex"] = rng.integers(0, 2, n).astype(float)
    pred = metrics.Predictions(race=rng.dirichlet(np.ones(3), n), age=rng.uniform(20, 90, n), sex=rng.uniform(0, 1, n))
    unknown = rng.uniform(size=n) < 0.3
    blanked = df.copy()
    for c in ("attr_race", "attr_age", "attr_sex"):
        blanked.loc[unknown, c] = np.nan
    got = _score(pred, blanked, findings=[], n_bootstrap=0)["metrics"]
    keep = ~unknown
    assert got["test/race_auroc"]["value"] == pytest.approx(
        roc_auc_score(df["attr_race"][keep], pred.race[keep], multi_class="ovr"), abs=1e-12)
    assert got["test/age_r"]["value"] == pytest.approx(np.corrcoef(pred.age[keep], df["attr_age"][keep])[0, 1])
    assert got["test/sex_accuracy"]["value"] == pytest.approx(
        accuracy_score(df["attr_sex"][keep] == 1, pred.sex[keep] >= 0.5))
    df["attr_race"] = "WHITE"
    with pytest.raises(ValueError, match="attr_race.*numeric codes.*code_attributes"):
        _score(pred, df, findings=[], n_bootstrap=0)
