"""Table 5's label-distribution KL on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bjexp.eval import registry
from bjexp.eval.label_kl import LabelKL
from bjexp.eval.metrics import Predictions
from bjexp.eval.registry import EvalContext


def _ctx(real: dict, scored: dict, floor: dict | None = None, n_bootstrap: int = 0, patients=None):
    n = len(next(iter(real.values())))
    df = pd.DataFrame({"patient_id": patients or [f"p{i}" for i in range(n)]})
    sides = {"ceiling": real, "test": scored, **({"floor": floor} if floor is not None else {})}
    preds = {s: Predictions({f: np.asarray(v, float) for f, v in p.items()}, thresholds={"B": 0.7})
             for s, p in sides.items()}
    return EvalContext(df, predictions=preds, findings=list(real), n_bootstrap=n_bootstrap)


def test_bernoulli_kl_by_hand():
    # real labels [1,1,0,0] (p = 1/2), generated [1,0,0,0] (q = 1/4):
    # KL = 1/2 ln(0.5/0.25) + 1/2 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3) = 0.1438410362
    ctx = _ctx({"A": [0.9, 0.6, 0.2, 0.1]}, {"A": [0.8, 0.4, 0.3, 0.0]})
    m = registry.evaluate([LabelKL(smoothing=0)], ctx)["metrics"]
    assert m["test/label_kl/A"]["value"] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-12)
    assert m["test/label_kl"]["value"] == m["test/label_kl/A"]["value"]
    # Jeffreys smoothing (+0.5 per bin): p = 2.5/5 = 0.5, q = 1.5/5 = 0.3 -> 0.5 ln(5/3) + 0.5 ln(5/7) = 0.0871768
    m = registry.evaluate([LabelKL()], ctx)["metrics"]
    assert m["test/label_kl/A"]["value"] == pytest.approx(0.5 * math.log(5 / 3) + 0.5 * math.log(5 / 7), abs=1e-12)


def test_bernoulli_sums_findings_and_uses_the_operating_threshold():
    # A (threshold 0.5): p = 2/4, q = 2/4 -> 0. B (threshold 0.7): real [0.75, 0.65, 0.1, 0.1] -> 1 of 4,
    # generated [0.8, 0.75, 0.72, 0.6] -> 3 of 4 (0.65 and 0.6 would count at 0.5):
    # KL(1/4 || 3/4) = 1/4 ln(1/3) + 3/4 ln 3 = 0.5 ln 3
    ctx = _ctx({"A": [1, 1, 0, 0], "B": [0.75, 0.65, 0.1, 0.1]}, {"A": [0, 1, 1, 0], "B": [0.8, 0.75, 0.72, 0.6]})
    m = registry.evaluate([LabelKL(smoothing=0)], ctx)["metrics"]
    assert m["test/label_kl/A"]["value"] == pytest.approx(0.0, abs=1e-15)
    assert m["test/label_kl/B"]["value"] == pytest.approx(0.5 * math.log(3), abs=1e-12)
    assert m["test/label_kl"]["value"] == pytest.approx(0.5 * math.log(3), abs=1e-12)


def test_joint_kl_by_hand_sees_what_the_marginals_miss():
    # real patterns (A,B): (1,1), (1,1), (0,0), (0,0); generated (1,0), (0,1), (1,0), (0,1): same marginals (1/2
    # each, Bernoulli KL 0) but disjoint patterns. With smoothing 0.5 over 4 patterns: real (2.5, 0.5, 0.5, 2.5)/6,
    # generated (0.5, 2.5, 2.5, 0.5)/6 -> KL = 2 * (2.5/6) ln 5 + 2 * (0.5/6) ln(1/5) = (4/6) ln 5
    real, gen = {"A": [1, 1, 0, 0], "B": [1, 1, 0, 0]}, {"A": [1, 0, 1, 0], "B": [0, 1, 0, 1]}
    joint = registry.evaluate([LabelKL(distribution="joint")], _ctx(real, gen))["metrics"]["test/label_kl"]["value"]
    assert joint == pytest.approx(4 / 6 * math.log(5), abs=1e-12)
    assert registry.evaluate([LabelKL(smoothing=0)], _ctx(real, gen))["metrics"]["test/label_kl"]["value"] == 0
    with pytest.raises(ValueError, match="distribution='marginal'"):
        LabelKL(distribution="marginal")


def test_sides_ci_and_identity():
    """test and floor are scored against the real current images (the ceiling would be 0 by definition); scoring
    the real images themselves gives 0; the CI comes from patient resamples."""
    rng = np.random.default_rng(0)
    real = {"A": rng.uniform(0, 1, 80), "B": rng.uniform(0, 1, 80)}
    ctx = _ctx(real, {"A": real["A"] ** 3, "B": real["B"]}, floor=real, n_bootstrap=200,
               patients=[f"p{i // 2}" for i in range(80)])
    m = registry.evaluate([LabelKL()], ctx)["metrics"]
    assert "ceiling/label_kl" not in m and m["floor/label_kl"]["value"] == pytest.approx(0, abs=1e-15)
    assert m["test/label_kl/B"]["value"] == pytest.approx(0, abs=1e-15)
    assert m["test/label_kl/A"]["value"] > 0.05
    assert 0 <= m["test/label_kl"]["lo"] < m["test/label_kl"]["value"] < m["test/label_kl"]["hi"]
