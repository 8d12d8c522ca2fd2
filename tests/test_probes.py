"""Consistency probes (bjexp/eval/probes.py) on hand-built generators whose right answers are known: the identity
copy (changes nothing, follows nothing) and a rule-following editor that paints each finding's own square with a
brightness set by the instruction (follows everything, undoes exactly)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from bjexp.eval import probes, registry
from bjexp.eval.metrics import Predictions
from bjexp.methods.identity import CopyPrior

FINDINGS = ["Effusion", "Cardiomegaly"]
SQUARE = {"Effusion": (slice(0, 16), slice(0, 16)), "Cardiomegaly": (slice(32, 48), slice(32, 48))}
LEVEL = {"small": 120, "moderate": 180, "large": 240, None: 180}
PHRASES = {"Effusion": "pleural effusion", "Cardiomegaly": "cardiomegaly"}


class SquarePredictor:
    """P(finding) = its square's mean brightness / 255 (threshold 0.5)."""
    name, version, findings = "squares", "1", tuple(FINDINGS)

    def predict(self, images):
        images = np.asarray(images, np.float64)
        return Predictions({f: images[(slice(None),) + SQUARE[f]].mean((1, 2)) / 255.0 for f in FINDINGS},
                           thresholds={f: 0.5 for f in FINDINGS})


class RuleEditor:
    """Follows 'new [small|moderate|large] X' (paints X's square) and 'resolved X' (clears it); anything else
    (an unchanged text) returns the input. Like the pipeline, it has a `round_trip` (the identity here)."""

    def round_trip(self, images):
        return torch.as_tensor(images).clone()

    def __call__(self, images=None, texts=None, *, generators, steps, image_guidance, text_guidance, **_):
        out = torch.as_tensor(images).clone().numpy()
        for i, t in enumerate(texts):
            for f, phrase in PHRASES.items():
                m = re.search(rf"(new|resolved) (?:(small|moderate|large) )?(?:left )?{phrase}", t)
                if m:
                    out[(i,) + SQUARE[f]] = LEVEL[m.group(2)] if m.group(1) == "new" else 20
        return torch.as_tensor(out)


def world(n_patients=12, seed=0):
    """Priors with Effusion absent (dark square) and Cardiomegaly present on even patients; currents flip Effusion."""
    rng = np.random.default_rng(seed)
    prior = rng.integers(10, 30, (n_patients, 64, 64)).astype(np.uint8)
    rows = []
    for i in range(n_patients):
        card = i % 2 == 0
        prior[(i,) + SQUARE["Cardiomegaly"]] = 200 if card else 20
        rows.append({"pair_id": f"p{i}", "patient_id": f"P{i}", "prior_Effusion": 0.0, "current_Effusion": 1.0,
                     "prior_Cardiomegaly": float(card), "current_Cardiomegaly": float(card)})
    current = prior.copy()
    current[(slice(None),) + SQUARE["Effusion"]] = 200
    return pd.DataFrame(rows), prior, current


def evaluate(generator, names=None, **settings):
    df, prior, current = world()
    metrics = [m for m in registry.config_metrics("paper") if "pipeline" in m.consumes]
    names = names or [m.name for m in metrics]
    metrics = [m for m in metrics if m.name in names]
    cfg = OmegaConf.create({"probe_settings": {"n_priors": 10, "steps": 2, "grid_text_guidance": [1.0, 7.5],
                                               "grid_image_guidance": [1.5], **settings}})
    ctx = registry.EvalContext(df, images={"test": current, "ceiling": current, "floor": prior}, findings=FINDINGS,
                               n_bootstrap=50, cfg=cfg,
                               providers={"predictor": SquarePredictor, "pipeline": lambda: generator})
    return registry.evaluate(metrics, ctx, sides=["test"])["metrics"], prior


def v(m, key):
    return m[f"test/{key}"]["value"]


def test_identity_changes_nothing_and_follows_nothing():
    m, prior = evaluate(CopyPrior())
    assert v(m, "null_instruction") == 0 and v(m, "null_instruction/ssim") == pytest.approx(1.0)
    assert v(m, "reversal") == 0 and v(m, "reversal/p_new") == v(m, "reversal/p_prior")
    assert v(m, "severity_monotonic") == 0  # the same probability at every severity: no rise
    # Contradiction on patients 0..9: the current shows Effusion (contradicted by keeping it absent: identity
    # complies) on the rows that probe Effusion, and the Cardiomegaly state is flipped on the others (identity fails).
    assert v(m, "contradiction") == pytest.approx(np.mean([k % 2 == 0 for k in range(10)]))
    assert v(m, "guidance_curve") == 0.0 and all(v(m, f"guidance_curve/t{t}_i1.5/retain") == pytest.approx(1.0)
                                                 for t in ("1", "7.5"))


def test_rule_editor_follows_every_instruction_and_undoes_it():
    m, prior = evaluate(RuleEditor())
    assert v(m, "null_instruction") == 0  # unchanged texts leave the image alone
    assert v(m, "reversal/p_new") == pytest.approx(180 / 255) and v(m, "reversal/p_resolved") == pytest.approx(20 / 255)
    # Back to the prior everywhere except the painted square, which ends at 20 instead of the prior's noise (10..29).
    assert 0 < v(m, "reversal") < 10 / 255
    assert v(m, "severity_monotonic") == 1.0
    assert v(m, "severity_monotonic/p_small") < v(m, "severity_monotonic/p_moderate") < v(m, "severity_monotonic/p_large")
    assert v(m, "contradiction") == 1.0 and v(m, "contradiction/auroc") == 1.0
    assert v(m, "guidance_curve/t7.5_i1.5/follow") == 1.0 and v(m, "guidance_curve/t7.5_i1.5/retain") < 1.0
    lo, hi = m["test/severity_monotonic"]["lo"], m["test/severity_monotonic"]["hi"]
    assert lo == hi == 1.0  # a patient-bootstrap CI over the probed priors


def test_null_instruction_is_measured_beyond_the_round_trip():
    class Blurry(RuleEditor):
        def round_trip(self, images):
            return torch.as_tensor(images) // 2 * 2  # loses the lowest bit

        def __call__(self, images=None, texts=None, **kw):
            return super().__call__(images, texts, **kw) // 2 * 2

    m, prior = evaluate(Blurry(), ["null_instruction"])
    rt = prior[:10] // 2 * 2  # the first 10 patients are probed (n_priors=10)
    vae_l1 = np.abs(rt.astype(float) - prior[:10]).mean() / 255
    assert vae_l1 > 0 and v(m, "null_instruction/vae_l1") == pytest.approx(vae_l1)
    assert v(m, "null_instruction/l1") == pytest.approx(vae_l1) and v(m, "null_instruction") == pytest.approx(0.0)


def test_probes_are_named_in_eval_probes():
    metrics = registry.config_metrics("paper")
    assert probes.check_probes(["reversal"], metrics) == ["reversal"]
    with pytest.raises(ValueError, match=r"unknown probe\(s\) \['revrsal'\].*null_instruction"):
        probes.check_probes(["revrsal"], metrics)
    # Without a generator (e.g. scoring images from elsewhere) no probe runs.
    df, prior, current = world()
    ctx = registry.EvalContext(df, images={"test": current, "floor": prior}, findings=FINDINGS, n_bootstrap=10,
                               providers={"predictor": SquarePredictor})
    out = registry.evaluate([m for m in metrics if m.name == "reversal"], ctx, sides=["test"])
    assert out["metrics"] == {}


def test_instructions_are_the_describers_wording():
    assert probes.new_text("Effusion", 1) == "new small left pleural effusion"
    assert probes.resolved_text("Cardiomegaly") == "resolved moderate cardiomegaly"
    assert probes.unchanged_text({"Effusion": False, "Cardiomegaly": True}) == "cardiomegaly unchanged"
    assert probes.toward_text("Effusion", False, False) == "no acute cardiopulmonary process, unchanged"
