"""The miniature world's evaluation classifier as `eval.predictor`: _target_ + kwargs, like the real world's."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY, compose

from bjexp.errors import ConfigError
from bjexp.evaluate import build_predictor


def test_the_predictor_trains_once_on_its_world_and_loads_by_path(cache_dir):
    from bjexp.data.synthetic import build_manifest, world_dir

    cfg = compose([*TINY, f"paths.cache_dir={cache_dir}"])
    build_manifest(cfg)
    trained = build_predictor(cfg)
    again = build_predictor(cfg)
    assert again.version == trained.version  # the cached one: same config, same world
    images = np.load(world_dir(cfg) / "classifier.npz")["images"][:16]
    saved = cache_dir / "classifier" / trained.version
    by_path = build_predictor(compose([*TINY, f"paths.cache_dir={cache_dir}", f"+eval.predictor.path={saved}"]))
    a, b = trained.predict(images), by_path.predict(images)
    for f in trained.findings:
        np.testing.assert_array_equal(a.findings[f], b.findings[f])
    # another seed trains another classifier on the same world
    assert build_predictor(compose([*TINY, f"paths.cache_dir={cache_dir}", "seed=1"])).version != trained.version


def test_a_predictor_without_path_or_world_says_what_it_needs():
    from bjexp.eval.synthetic_classifier import load_predictor

    with pytest.raises(ConfigError, match="give `path`.*`world`, `training` and `cache_dir`"):
        load_predictor(world={"n_patients": 3})
