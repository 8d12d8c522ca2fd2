"""Memorization audit: nearest neighbours in float (no uint8 wrap) against a brute-force loop, a generator that
returns a fixed training image is flagged, one that returns the real current is not."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bjexp.eval import registry
from bjexp.eval.memorization import Memorization, nearest


def test_nearest_matches_a_brute_force_loop_and_does_not_wrap():
    rng = np.random.default_rng(0)
    bank = rng.integers(0, 256, (30, 5, 5), dtype=np.uint8)
    q = rng.integers(0, 256, (7, 5, 5), dtype=np.uint8)
    d, j = nearest(q, bank, chunk=3)
    for i in range(len(q)):
        all_d = [np.sqrt(((q[i].astype(float) - b.astype(float)) ** 2).sum()) for b in bank]
        assert j[i] == int(np.argmin(all_d)) and d[i] == pytest.approx(min(all_d))
    # 0 vs 255: a uint8 difference would wrap to 1; the distance is 255 per pixel
    assert nearest(np.zeros((1, 1, 2), np.uint8), np.full((1, 1, 2), 255, np.uint8))[0][0] == pytest.approx(255 * 2 ** .5)


def _memorization(gen, current, bank, prior=None):
    df = pd.DataFrame({"patient_id": [f"p{i}" for i in range(len(gen))]})
    ctx = registry.EvalContext(df, images={"test": gen, "ceiling": current, "floor": current if prior is None else prior},
                               n_bootstrap=0, providers={"train_images": lambda: bank})
    return registry.evaluate([Memorization()], ctx)["metrics"]


def test_a_generator_that_returns_a_training_image_is_flagged():
    rng = np.random.default_rng(1)
    bank = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)
    current = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)  # unseen test images
    m = _memorization(np.repeat(bank[3:4], 6, axis=0), current, bank)
    assert m["test/memorization"]["value"] == 1.0 and m["test/memorization/nn_distance"]["value"] == 0.0
    honest = _memorization(current.copy(), current, bank)  # the real current: never closer than itself
    assert honest["test/memorization"]["value"] == 0.0
    # half the pairs copy a training image: half flagged
    half = current.copy()
    half[:3] = bank[:3]
    assert _memorization(half, current, bank)["test/memorization"]["value"] == pytest.approx(0.5)


class _MeanPoolFeatures:
    """A stand-in classifier whose embedding is the 2 x 2 mean-pooled image (so features keep image identity)."""
    name, version, findings = "pool", "1", ()

    def predict(self, images):
        from bjexp.eval.metrics import Predictions

        x = np.asarray(images, np.float64)
        n, h, w = x.shape
        return Predictions(features=x.reshape(n, h // 2, 2, w // 2, 2).mean((2, 4)).reshape(n, -1))


def test_feature_space_audit_and_the_closest_pairs():
    rng = np.random.default_rng(2)
    bank = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)
    current = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    gen = current.copy()
    gen[4] = bank[7]  # pair 4 copies training image 7
    df = pd.DataFrame({"patient_id": [f"p{i}" for i in range(6)], "pair_id": [f"q{i}" for i in range(6)]})
    ctx = registry.EvalContext(df, images={"test": gen, "ceiling": current, "floor": current}, n_bootstrap=0,
                               providers={"train_images": lambda: bank, "predictor": _MeanPoolFeatures})
    out = registry.evaluate([Memorization(closest=2)], ctx, sides=["test"])
    assert out["metrics"]["test/memorization/features"]["value"] == pytest.approx(1 / 6)
    closest = out["details"]["memorization"]["closest"]
    assert closest[0] == {"pair_id": "q4", "train_index": 7, "distance": 0.0,
                          "real_current_distance": pytest.approx(nearest(current[4:5], bank)[0][0])}
    assert len(closest) == 2 and closest[1]["distance"] > 0
