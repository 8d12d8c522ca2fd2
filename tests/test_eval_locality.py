"""Edit locality: hand-computed L1 inside and outside the region, the identity generator's zero leakage, and the
miniature world's exact regions (a world without pose jitter: the real follow-up changes inside them)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bjexp.eval import registry
from bjexp.eval.locality import EditLocality, world_regions

REGION = np.array([[[True, False, False, False]], [[False, False, True, True]]])


def given_regions(ctx):
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


def test_ssim_inside_and_outside():
    """An edit confined to the region: SSIM outside stays 1 away from its border, inside falls; identity is 1/1."""
    rng = np.random.default_rng(1)
    prior = rng.integers(60, 200, (2, 48, 48)).astype(np.uint8)
    region = np.zeros((2, 48, 48), bool)
    region[:, 8:24, 8:24] = True
    gen = prior.copy()
    gen[region] = 255 - gen[region]
    from bjexp.eval.locality import ssim_in_out

    ident = ssim_in_out(prior, prior, region)
    assert np.allclose(ident, 1.0)
    inside, outside = ssim_in_out(gen, prior, region).mean(0)
    assert inside < 0.2 and outside > 0.8  # the 11 x 11 window only blurs the border


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


def test_segmented_regions_follow_the_texts_side_and_zone():
    """The real world's approximation: a prior segmented into a left lung (image columns 40..59, rows 10..40), a
    right lung (columns 4..23) and a heart; the region of each changed finding is the named side, zone or heart."""
    from bjexp.eval.locality import segmented

    masks = np.zeros((1, 3, 64, 64), bool)  # STRUCTURES: left lung, right lung, heart
    masks[0, 0, 10:40, 40:60] = masks[0, 1, 10:40, 4:24] = True
    masks[0, 2, 30:50, 26:40] = True
    masks = np.repeat(masks, 4, axis=0)
    df = pd.DataFrame({"patient_id": list("abcd"), "text": [
        "new small left pleural effusion", "resolved right upper lobe consolidation", "worsening cardiomegaly, now large",
        "no acute cardiopulmonary process, unchanged"],
        "prior_Effusion": [0, 0, 0, 0], "current_Effusion": [1, 0, 0, 0],
        "prior_Consolidation": [0, 1, 0, 0], "current_Consolidation": [0, 0, 0, 0],
        "prior_Cardiomegaly": [0, 0, 0, 1], "current_Cardiomegaly": [0, 0, 1, 1]})
    img = np.zeros((4, 64, 64), np.uint8)
    ctx = registry.EvalContext(df, images={"test": img, "floor": img, "ceiling": img}, n_bootstrap=0,
                               findings=["Effusion", "Consolidation", "Cardiomegaly"])
    ctx.memo(("segmentation", "floor"), lambda: masks)
    r = segmented(ctx)
    left_lower = np.zeros((64, 64), bool)
    left_lower[30:40, 40:60] = True  # the lower third of rows 10..40 (effusions layer at the bases)
    assert (r[0] == left_lower).all()
    right_upper = np.zeros((64, 64), bool)
    right_upper[10:20, 4:24] = True
    assert (r[1] == right_upper).all()
    assert (r[2] == masks[0, 2]).all() and not r[3].any()  # the heart; no changed finding: no region
