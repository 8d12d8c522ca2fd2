"""The miniature world's science on a smaller, faster variant of it (a third of the patients, short pretraining and
a short fit; every stage of the default job runs, with the default model): BiomedJourney follows the text where a
finding changes and keeps the patient — and the same lines fail for a model that ignores the prior (text-only) or
ignores the text (identity). Not a timed test: it asserts metrics, with their CIs, against fixed lines."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # three short trainings: `make test-all`

FAST_WORLD = [
    "data.n_patients=300", "data.classifier_images=2000", "eval.classifier.steps=500", "model.vae.train_steps=250",
    "encoder.tiny.pretrain_steps=80", "trainer.max_steps=600", "trainer.val_check_interval=300",
    "trainer.checkpoint_every_n_steps=300", "eval.n_bootstrap=300", "logger=none",
]


def _train(tmp_path, cache, extra=()):
    run = tmp_path / "run"
    env = {**os.environ, "BJEXP_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "BJEXP_PROGRESS": "0"}
    p = subprocess.run([sys.executable, "-m", "bjexp.train", *FAST_WORLD, *extra, f"hydra.run.dir={run}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return json.loads((run / "results.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def science_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("science-cache")  # the three runs share the world, VAE, encoder, classifier


def test_default_method_follows_the_text_and_keeps_the_patient(tmp_path, science_cache):
    m = _train(tmp_path, science_cache)
    eff = m["test/pathology_auroc_changed/Effusion"]
    # Where the text says an effusion appeared or resolved, the generated image shows it (copying the prior scores
    # ~0 here, a generator that ignores the text ~0.5).
    assert eff["value"] >= 0.75 and eff["lo"] > 0.6, eff
    assert m["test/pathology_auroc_changed"]["lo"] > 0.5, m["test/pathology_auroc_changed"]
    # The patient is kept: the race-like class and sex read off the generated image, far above chance.
    assert m["test/race_auroc"]["lo"] > 0.75, m["test/race_auroc"]
    assert m["test/sex_accuracy"]["lo"] > 0.6, m["test/sex_accuracy"]


def test_the_same_lines_fail_for_a_model_that_ignores_the_prior(tmp_path, science_cache):
    """A text-only generator (the RoentGen-style arm) draws some patient, not this one."""
    m = _train(tmp_path, science_cache, ["method=roentgen"])
    assert m["test/race_auroc"]["lo"] <= 0.75 or m["test/sex_accuracy"]["lo"] <= 0.6, (m["test/race_auroc"],
                                                                                        m["test/sex_accuracy"])


def test_the_same_lines_fail_for_a_model_that_copies_the_prior(tmp_path, science_cache):
    m = _train(tmp_path, science_cache, ["method=identity"])
    assert m["test/pathology_auroc_changed/Effusion"]["value"] < 0.2, m["test/pathology_auroc_changed/Effusion"]
