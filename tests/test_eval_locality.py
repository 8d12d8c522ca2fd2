"""Edit locality: hand-computed L1 inside and outside the region, the identity generator's zero leakage, and the
miniature world's exact regions (a world without pose jitter: the real follow-up changes inside them)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bjexp.eval import registry
from bjexp.eval.locality import EditLocality, world_regions

REGION = np.array([[[True, False, False, False]], [[False, False, True, True]]])


def given_regions(run_cfg, df, size):
    return REGION


def _evaluate(gen, prior, current=None, n_bootstrap=0):
    df = pd.DataFrame({"patient_id": ["a", "b"]})
    ctx = registry.EvalContext(df, images={"test": gen, "ceiling": prior if current is None else current,
                                           "floor": prior}, n_bootstrap=n_bootstrap,
                               cfg={"edit_regions": {"_target_": f"{__name__}.given_regions"}})
    return registry.evaluate([EditLocality()], ctx)["metrics"]


def test_l1_inside_and_outside_by_hand():
    """Pair a: |gen - prior| = [255, 51, 0, 0] / 255 = [1, .2, 0, 0], region {0}: inside 1, outside .2/3.
    Pair b: [0, 0, 102, 0] / 255 = [0, 0, .4, 0], region {2, 3}: inside .2, outside 0."""
    prior = np.zeros((2, 1, 4), np.uint8)
    gen = np.array([[[255, 51, 0, 0]], [[0, 0, 102, 0]]], np.uint8)
    m = _evaluate(gen, prior)
    inside, outside = (1.0 + 0.2) / 2, (0.2 / 3 + 0.0) / 2
    assert m["test/edit_locality/inside"]["value"] == pytest.approx(inside)
    assert m["test/edit_locality"]["value"] == pytest.approx(outside)
    assert m["test/edit_locality/ratio"]["value"] == pytest.approx(outside / inside)


def test_a_generator_that_returns_its_input_leaks_nothing():
    prior = np.random.default_rng(0).integers(0, 256, (2, 1, 4), dtype=np.uint8)
    m = _evaluate(prior.copy(), prior, current=255 - prior)
    assert m["test/edit_locality"]["value"] == 0.0 and m["test/edit_locality/inside"]["value"] == 0.0
    assert m["ceiling/edit_locality"]["value"] > 0 and "floor/edit_locality" not in m


def test_no_regions_configured_means_no_locality_keys():
    df = pd.DataFrame({"patient_id": ["a", "b"]})
    img = np.zeros((2, 1, 4), np.uint8)
    ctx = registry.EvalContext(df, images={"test": img, "ceiling": img, "floor": img}, n_bootstrap=0, cfg={})
    assert not any("edit_locality" in k for k in registry.evaluate([EditLocality()], ctx)["metrics"])


def test_world_regions_are_where_the_real_follow_up_changes(tmp_path):
    """Without pose jitter the real current differs from the prior by its findings (and exposure noise): the
    change inside the exact region of the changed findings is several times the change outside it, and pairs
    without a changed finding have no region."""
    from omegaconf import OmegaConf

    from bjexp.data.findings import SYNTHETIC_FINDINGS
    from bjexp.data.synthetic import generate
    from bjexp.eval.locality import l1_in_out
    from bjexp.imaging import read_grey
    from bjexp.schema.data import SyntheticDataConfig

    cfg = OmegaConf.structured(SyntheticDataConfig(n_patients=12, classifier_images=4))
    cfg.pose.rotation_deg = cfg.pose.shift_frac = cfg.pose.scale_frac = 0.0
    generate(cfg, tmp_path, tmp_path)
    df = pd.read_csv(tmp_path / "manifest.csv")
    size = cfg.image_size
    region = world_regions(tmp_path, df, size)
    changed = np.array([any(r[f"prior_{f}"] != r[f"current_{f}"] for f in SYNTHETIC_FINDINGS)
                        for r in df.to_dict("records")])
    assert changed.any() and (region.reshape(len(df), -1).any(1) == changed).all()
    prior = np.stack([read_grey(tmp_path / p, size) for p in df["prior_path"]])
    current = np.stack([read_grey(tmp_path / p, size) for p in df["current_path"]])
    inside, outside = np.nanmean(l1_in_out(current[changed], prior[changed], region[changed]), axis=0)
    assert inside > 3 * outside
