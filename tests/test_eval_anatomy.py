"""Table 4's anatomy Dice: the arithmetic on hand-made masks, the metric through the registry with a stand-in
segmenter, the miniature world's trained segmenter, and the ChestX-Det loader on random weights in its format."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bjexp.eval import registry
from bjexp.eval.anatomy import AnatomyDice
from bjexp.eval.segmenter import STRUCTURES, dice


def test_dice_by_hand():
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :2, :2] = True  # 4 px
    b[0, :2, :3] = True  # 6 px, 4 shared -> 2*4 / (4+6) = 0.8
    got = dice(a, b)
    assert got[0] == pytest.approx(0.8) and math.isnan(got[1])  # both empty: undefined


class Threshold:
    """Stand-in segmenter: structure k = pixels brighter than 60 * (k + 1)."""
    name, version, structures = "threshold", "1", STRUCTURES

    def segment(self, images):
        return np.stack([images > 60 * (k + 1) for k in range(3)], axis=1)


def threshold_factory(run_cfg):
    return Threshold()


def test_anatomy_dice_prior_vs_scored_by_hand():
    """Two patients, one pair each, 1 x 4 images. Prior [200, 200, 130, 70] -> structures {0,1,2,3}, {0,1,2}, {0,1};
    generated [200, 70, 70, 70] -> {0,1,2,3}, {0}, {0}; real current = prior.
    Dice: pair 1 (prior vs generated) = 1, 2*1/(3+1) = 0.5, 2*1/(2+1) = 2/3; pair 2 (prior vs generated = prior) = 1."""
    prior = np.array([[[200, 200, 130, 70]], [[10, 10, 10, 10]]], np.uint8)
    gen = np.array([[[200, 70, 70, 70]], [[10, 10, 10, 10]]], np.uint8)
    prior[1] = [[200, 130, 70, 10]]
    gen[1] = prior[1]
    df = pd.DataFrame({"patient_id": ["a", "b"]})
    ctx = registry.EvalContext(df, images={"test": gen, "ceiling": prior, "floor": prior}, n_bootstrap=0,
                               cfg={"segmenter": {"_target_": f"{__name__}.threshold_factory"}})
    m = registry.evaluate([AnatomyDice()], ctx)["metrics"]
    assert m["test/anatomy_dice/Left lung"]["value"] == pytest.approx((1.0 + 1.0) / 2)
    assert m["test/anatomy_dice/Right lung"]["value"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["test/anatomy_dice/Heart"]["value"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert m["test/anatomy_dice"]["value"] == pytest.approx(((1 + 0.5 + 2 / 3) / 3 + 1.0) / 2)
    assert m["ceiling/anatomy_dice"]["value"] == pytest.approx(1.0) and "floor/anatomy_dice" not in m


def test_anatomy_dice_ci_resamples_patients():
    rng = np.random.default_rng(0)
    prior = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    gen = np.clip(prior.astype(int) + rng.integers(-80, 80, prior.shape), 0, 255).astype(np.uint8)
    df = pd.DataFrame({"patient_id": [f"p{i // 2}" for i in range(40)]})
    ctx = registry.EvalContext(df, images={"test": gen, "ceiling": prior, "floor": prior}, n_bootstrap=100,
                               cfg={"segmenter": {"_target_": f"{__name__}.threshold_factory"}})
    res = registry.evaluate([AnatomyDice()], ctx)
    t = res["metrics"]["test/anatomy_dice"]
    assert t["lo"] < t["value"] < t["hi"] < 1 and t["n_valid"] == 100
    assert res["details"]["anatomy_dice"]["segmenter"] == "threshold"


def test_synthetic_segmenter_learns_the_phantom_anatomy(tmp_path):
    """A short training on a small world beats the best fixed mask (the training masks' pixel majority) on held-out
    studies, i.e. it follows each study's pose and shape, and records its held-out Dice."""
    from omegaconf import OmegaConf

    from bjexp.data.synthetic import generate
    from bjexp.eval.segmenter import anatomy_targets, load_synthetic, train_synthetic
    from bjexp.schema.data import SyntheticDataConfig

    world = tmp_path / "world"
    world.mkdir()
    generate(OmegaConf.structured(SyntheticDataConfig(n_patients=12, classifier_images=400)), world, tmp_path)
    seg = load_synthetic(train_synthetic(world / "classifier.npz", tmp_path / "cache", steps=120))
    z = np.load(world / "classifier.npz")
    target = anatomy_targets(z["masks"])
    held = slice(0, len(target) // 5)
    fixed = np.broadcast_to(target[len(target) // 5:].mean(0) > 0.5, target[held].shape)
    learnt = np.nanmean(dice(seg.segment(z["images"][held]), target[held]))
    assert learnt > np.nanmean(dice(fixed, target[held])) and learnt > 0.85
    assert seg.report["mean_dice"] == pytest.approx(learnt) and set(seg.report["dice"]) == set(STRUCTURES)


def test_chestx_det_missing_weights_name_the_path_and_the_fetch_command(tmp_path):
    from bjexp.assets import MissingWeightsError
    from bjexp.eval.segmenter import ChestXDetSegmenter

    with pytest.raises(MissingWeightsError, match=r"pspnet_chestxray_best_model_4\.pth[\s\S]*bjexp.assets (--dir \S+ )?fetch chestx_det"):
        ChestXDetSegmenter(tmp_path / "xrv")
    with pytest.raises(MissingWeightsError, match=str(tmp_path / "mine.pth")):
        ChestXDetSegmenter(tmp_path / "mine.pth")


@pytest.mark.slow  # a 270 MB random checkpoint and a 512 px PSPNet forward on CPU
def test_chestx_det_loads_random_weights_in_the_release_format(tmp_path):
    """Random weights saved as xrv ships them (DataParallel state dict) load through the same loader users call,
    and give one mask per structure at the images' size; the weights equal the file's."""
    import torch

    from bjexp.eval import fake_weights
    from bjexp.eval.segmenter import ChestXDetSegmenter, build

    path = fake_weights.write_chestx_det(tmp_path / "xrv")
    seg = build({"_target_": "bjexp.eval.segmenter.chestx_det", "weights": str(path), "device": "cpu"}, None)
    assert isinstance(seg, ChestXDetSegmenter) and seg.index == [4, 5, 8]
    state = torch.load(path, weights_only=True)
    w = "classification.weight"
    assert torch.equal(seg.model.model.state_dict()[w], state[f"module.{w}"])
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    out = seg.segment(images)
    assert out.shape == (2, 3, 64, 64) and out.dtype == bool
    renamed = tmp_path / "elsewhere.pth"  # a file named otherwise is linked under xrv's name, never downloaded
    renamed.symlink_to(path)
    assert torch.equal(ChestXDetSegmenter(renamed, device="cpu").model.model.state_dict()[w], state[f"module.{w}"])
