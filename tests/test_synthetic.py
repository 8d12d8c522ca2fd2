"""The miniature world: deterministic, valid manifest, texts that match the labels, recorded pose."""
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from bjexp.data import manifest as mf
from bjexp.data.describers import FindingState, describe
from bjexp.data.synthetic import generate
from bjexp.schema.data import SyntheticDataConfig


def _gen(tmp_path, name, **kw):
    d = OmegaConf.structured(SyntheticDataConfig(n_patients=12, classifier_images=20, **kw))
    out = tmp_path / name
    out.mkdir()
    generate(d, out, mask_cache=tmp_path / "masks")
    return out


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("synth")
    return _gen(tmp, "a"), _gen(tmp, "b"), _gen(tmp, "c", seed=99)


def test_generator_is_deterministic(worlds):
    a, b, c = worlds
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    df = mf.read(a / "manifest.csv")
    for p in df["current_path"][:5]:
        assert (a / p).read_bytes() == (b / p).read_bytes()
    assert (a / "manifest.csv").read_bytes() != (c / "manifest.csv").read_bytes()
    assert np.array_equal(np.load(a / "classifier.npz")["images"], np.load(b / "classifier.npz")["images"])


def test_manifest_contract_and_ground_truth(worlds):
    df = mf.read(worlds[0] / "manifest.csv")
    assert set(mf.label_columns(df, "current")) == {"Effusion", "Cardiomegaly", "Consolidation", "Edema", "Pneumothorax"}
    assert {"sex", "age", "race"} <= set(mf.attribute_columns(df))
    assert set(df["split"]) <= {"train", "val", "test"}
    assert df.groupby("patient_id")["split"].nunique().max() == 1
    # consecutive studies: each pair's current is the next pair's prior within a patient
    for _, g in df.groupby("patient_id"):
        assert (g["current_study_id"].iloc[:-1].to_numpy() == g["prior_study_id"].iloc[1:].to_numpy()).all()
        assert g[["attr_sex", "attr_age", "attr_race"]].nunique().max() == 1  # identity fixed along a journey
    assert (df["prior_pose_scale"] != 1).any() and df["current_pose_angle"].abs().max() <= 4.0
    for _, r in df.iterrows():
        prior = {k: FindingState(v[0], v[1]) for k, v in json.loads(r["prior_state"]).items()}
        cur = {k: FindingState(v[0], v[1]) for k, v in json.loads(r["current_state"]).items()}
        assert r["text"] == describe(prior, cur, ("Effusion", "Cardiomegaly", "Consolidation", "Edema", "Pneumothorax"))
        for f in ("Effusion", "Pneumothorax"):
            new = r[f"prior_{f}"] == 0 and r[f"current_{f}"] == 1
            assert new == (f"new " in r["text"] and any(
                part.startswith("new") and mf_phrase(f) in part for part in r["text"].split("; ")))


def mf_phrase(f):
    from bjexp.data.findings import PHRASE

    return PHRASE[f]


def test_describer_wording():
    assert describe({}, {"Effusion": FindingState(1, "L")}) == "new small left pleural effusion"
    assert describe({"Cardiomegaly": FindingState(2)}, {"Cardiomegaly": FindingState(2)}) == "moderate cardiomegaly unchanged"
    assert describe({"Edema": FindingState(1)}, {"Edema": FindingState(3)}) == "worsening pulmonary edema, now large"
    assert describe({"Pneumothorax": FindingState(2, "R")}, {}) == "resolved moderate right pneumothorax"
    assert describe({}, {}) == "no acute cardiopulmonary process, unchanged"


def test_findings_change_pixels_where_expected(tmp_path):
    """A phantom with cardiomegaly is brighter in the heart region than the same patient without it."""
    from bjexp.data.phantom import PhantomRenderer, Pose, StudyState, load_lung_masks
    from bjexp.data.synthetic import sample_anatomy

    r = PhantomRenderer(64, load_lung_masks(64, tmp_path))
    a = sample_anatomy(np.random.default_rng(0), len(r.masks))
    base = r.render(a, StudyState({}), Pose(), np.random.default_rng(1)).astype(float)
    big = r.render(a, StudyState({"Cardiomegaly": FindingState(3)}), Pose(), np.random.default_rng(1)).astype(float)
    diff = big - base
    assert diff[36:52, 10:54].mean() > 5  # the widened heart's flanks got denser
    assert abs(diff[:20].mean()) < 1  # the apices did not change
