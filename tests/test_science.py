"""The miniature world's science on a small, fast variant of it: 32 px images, 200 patients, short VAE, encoder and
classifier training and a 600-update fit of the default model; every stage of the default job runs. BiomedJourney
must follow the text where a finding changes and keep the patient, and the same lines must fail for a model that
copies the prior (identity) and for one that ignores it (text-only). Not a timed test: it asserts metrics, with
their CIs, against fixed lines.

Calibrated 2026-12-02 on the 2-core AMD EPYC (family 26) machine, seeds 0 and 1 of this variant (the test runs seed
0): changed-findings AUROC 0.64 / 0.52 (CI low 0.56 / 0.42; copying the prior: 0.11 / 0.09, CI high 0.17 / 0.15),
Effusion 0.99 / 0.81, identity similarity 0.58 / 0.56 (low 0.54 / 0.51), age r low 0.23 / 0.20; a text-only
generator (measured at 300 patients, 400 updates): identity similarity 0.44 (high 0.47), age r 0.02 (low -0.17).
Race-like AUROC and sex accuracy are not lines here: at this budget they depend on the seed (race 0.82 on seed 0,
0.58 on seed 1; sex 0.56-0.67) — the full default reaches them. The first two run in the default suite, 3 min 12 s
together (175 s + 16 s: the first builds the world, VAE, encoder and classifier they share; measured on that
machine beside a niced sweep); the text-only control trains a second generator (129 s) and is `slow` (`make
test-all`). "About a minute" does not hold: a 300-update fit (55 s) followed the text and kept the patient on seed 0
only (race 0.57, Effusion 0.41 on seed 2).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

FAST_WORLD = [
    "data.image_size=32", "model.image_size=32", "data.n_patients=200", "data.classifier_images=1500",
    "eval.classifier.steps=400", "model.vae.train_steps=200", "encoder.tiny.pretrain_steps=80",
    "trainer.max_steps=600", "model.optim.batch_size=32", "trainer.val_check_interval=600",
    "trainer.checkpoint_every_n_steps=600", "eval.n_bootstrap=300", "logger=none",
    "eval.probes=[]", "eval.metrics.anatomy_dice=null",  # not what these lines read: no segmenter, no probes
]


def lines(m: dict) -> list[str]:
    """The lines a working model meets here; returns the ones `m` misses (empty: all met)."""
    lo = lambda k: m[f"test/{k}"]["lo"]  # noqa: E731
    checks = {
        # where the text says a finding appeared or resolved, the image shows it far more often than the prior does
        "changed-findings AUROC above copying the prior's (CIs apart)":
            lo("pathology_auroc_changed") > m["floor/pathology_auroc_changed"]["hi"],
        "Effusion changed AUROC > 0.6": m["test/pathology_auroc_changed/Effusion"]["value"] > 0.6,
        # the patient is kept: the classifier's features stay close to the prior's, and age reads off the image
        "identity similarity lo > 0.48": lo("identity_similarity") > 0.48,
        "age r lo > 0.1": lo("age_r") > 0.1,
    }
    return [name for name, ok in checks.items() if not ok]


def _train(tmp_path, cache, extra=()):
    run = tmp_path / "run"
    env = {**os.environ, "BJEXP_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "BJEXP_PROGRESS": "0"}
    p = subprocess.run([sys.executable, "-m", "bjexp.train", *FAST_WORLD, *extra, f"hydra.run.dir={run}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return json.loads((run / "results.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def science_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("science-cache")  # the runs share the world, VAE, encoder and classifier


def _shown(m):
    return {k: m[k] for k in ("test/pathology_auroc_changed", "floor/pathology_auroc_changed",
                              "test/pathology_auroc_changed/Effusion", "test/identity_similarity", "test/age_r")}


def test_default_method_follows_the_text_and_keeps_the_patient(tmp_path, science_cache):
    m = _train(tmp_path, science_cache)
    assert lines(m) == [], _shown(m)


def test_the_same_lines_fail_for_a_model_that_copies_the_prior(tmp_path, science_cache):
    missed = lines(m := _train(tmp_path, science_cache, ["method=identity"]))
    assert {"changed-findings AUROC above copying the prior's (CIs apart)", "Effusion changed AUROC > 0.6"} <= set(
        missed), _shown(m)


@pytest.mark.slow
def test_the_same_lines_fail_for_a_model_that_ignores_the_prior(tmp_path, science_cache):
    """A text-only generator (the RoentGen-style arm) draws some patient, not this one."""
    missed = lines(m := _train(tmp_path, science_cache, ["method=roentgen"]))
    assert {"identity similarity lo > 0.48", "age r lo > 0.1"} <= set(missed), _shown(m)
