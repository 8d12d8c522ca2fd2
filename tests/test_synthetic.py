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


def test_images_unchanged_since_version_3(tmp_path):
    """Version 4 added reports and masks without consuming randomness: the images are byte-identical to version
    3's (digest computed with the version-3 generator, commit b973663). A change here changes the world: bump
    GENERATOR_VERSION and this digest together."""
    import hashlib

    out = _gen(tmp_path, "w")
    h = hashlib.sha256()
    for p in sorted((out / "images").rglob("*.png")):
        h.update(p.relative_to(out).as_posix().encode())
        h.update(p.read_bytes())
    h.update(np.load(out / "classifier.npz")["images"].tobytes())
    assert h.hexdigest() == "83a42b7f6a0977caa68a9f077f4e4a5b99f4316b1e09b566fa256f7e64e32524"


@pytest.mark.parametrize("name,state", [("Effusion", FindingState(1, "L")), ("Effusion", FindingState(3, "B")),
                                        ("Cardiomegaly", FindingState(1)), ("Consolidation", FindingState(2, "R")),
                                        ("Edema", FindingState(1)), ("Pneumothorax", FindingState(3, "L"))])
def test_finding_mask_is_where_the_finding_is_drawn(tmp_path, name, state):
    """In a posed study, a finding's mask covers the pixels that change when the finding is added (same noise), and
    little else; a study without the finding has an empty mask for it."""
    from bjexp.data.phantom import PhantomRenderer, Pose, StudyState, load_lung_masks, unpack
    from bjexp.data.synthetic import sample_anatomy

    r = PhantomRenderer(64, load_lung_masks(64, tmp_path))
    rng = np.random.default_rng(5)
    for k in range(4):
        a = sample_anatomy(rng, len(r.masks))
        pose = Pose(angle=rng.uniform(-4, 4), tx=rng.uniform(-2.5, 2.5), ty=rng.uniform(-2.5, 2.5), scale=1.03)
        without = r.render(a, StudyState({}), pose, np.random.default_rng(k)).astype(int)
        with_ = r.render(a, StudyState({name: state}), pose, np.random.default_rng(k)).astype(int)
        mask = unpack(r.study_masks(a, StudyState({name: state}), pose), name)
        diff = np.abs(with_ - without)
        assert (diff >= 6)[~mask].sum() <= 0.01 * (diff >= 6).sum()  # what visibly changed is inside the mask
        assert (diff[mask] >= 2).mean() > 0.8  # and the mask is mostly pixels that changed
        assert not unpack(r.study_masks(a, StudyState({}), pose), name).any()


def test_anatomy_masks_follow_the_pose_and_laterality(tmp_path):
    """The lung masks cover the dark lung fields of the posed image (the patient's left lung on the image's right);
    the heart mask is the bright mediastinal shape."""
    from bjexp.data.phantom import PhantomRenderer, Pose, StudyState, load_lung_masks, unpack
    from bjexp.data.synthetic import sample_anatomy

    r = PhantomRenderer(64, load_lung_masks(64, tmp_path))
    a = sample_anatomy(np.random.default_rng(1), len(r.masks))
    pose = Pose(angle=4, tx=2.5, ty=-2.5, scale=0.96)
    img = r.render(a, StudyState({}), pose, np.random.default_rng(0)).astype(float)
    bits = r.study_masks(a, StudyState({}), pose)
    left, right, heart = (unpack(bits, n) for n in ("Left lung", "Right lung", "Heart"))
    assert np.nonzero(left)[1].mean() > 32 > np.nonzero(right)[1].mean()
    assert img[(left | right) & ~heart].mean() < img[heart].mean() - 30
    # the masks move with the image: the unposed study's lung masks sit on brighter pixels of the posed image
    unposed = r.study_masks(a, StudyState({}), Pose())
    lungs = lambda b: unpack(b, "Left lung") | unpack(b, "Right lung")  # noqa: E731
    assert img[lungs(bits)].mean() < img[lungs(unposed)].mean() - 5


def test_stored_masks_match_the_labels(worlds):
    """Every study has its mask image (finding bits set exactly for the findings present); every pair has the
    current's findings in the prior's pose; the classifier studies carry theirs in classifier.npz."""
    from bjexp.data.phantom import MASK_NAMES, unpack
    from bjexp.data.synthetic import mask_path, pair_mask_path
    from bjexp.imaging import read_grey

    world = worlds[0]
    df = mf.read(world / "manifest.csv")
    for _, r in df.iterrows():
        prior, cur = (read_grey(world / mask_path(r[f"{w}_study_id"])) for w in ("prior", "current"))
        pair = read_grey(world / pair_mask_path(r["pair_id"]))
        for f in ("Effusion", "Cardiomegaly", "Consolidation", "Edema", "Pneumothorax"):
            assert unpack(prior, f).any() == bool(r[f"prior_{f}"])
            assert unpack(cur, f).any() == unpack(pair, f).any() == bool(r[f"current_{f}"])
        for lung in ("Left lung", "Right lung"):  # same patient and pose: the prior's lungs
            assert np.array_equal(unpack(pair, lung), unpack(prior, lung))
            assert unpack(prior, lung).mean() > 0.08
    z = np.load(world / "classifier.npz")
    assert list(z["mask_names"]) == list(MASK_NAMES) and z["masks"].shape == z["images"].shape
    for m, y in zip(z["masks"], z["labels"]):
        assert [unpack(m, f).any() for f in z["findings"]] == [bool(v) for v in y]


def test_reports_have_findings_and_impression_sections(worlds):
    """Each study's report is stored as MIMIC's are ('FINDINGS: … IMPRESSION: …'); neither section compares with
    the prior, and the IMPRESSION names every finding present."""
    from bjexp.data.findings import PHRASE

    df = mf.read(worlds[0] / "manifest.csv")
    for side in ("prior", "current"):
        for text, labels in zip(df[f"{side}_report"], df[[f"{side}_{f}" for f in PHRASE if f"{side}_{f}" in df]].to_dict("records")):
            assert text.startswith("FINDINGS: ") and text.count(" IMPRESSION: ") == 1
            findings, impression = text[len("FINDINGS: "):].split(" IMPRESSION: ")
            assert findings and impression
            assert not CHANGE_WORDS & set(text.lower().replace(";", " ").replace(",", " ").split())
            for col, v in labels.items():
                f = col.split("_", 1)[1]
                assert (PHRASE[f].split()[-1] in impression) == bool(v), (f, impression)


CHANGE_WORDS = {"new", "resolved", "worsening", "improving", "unchanged", "previously", "now", "interval"}


def test_describer_impression_is_the_current_state(tmp_path):
    """describer=impression: the current report's IMPRESSION (no change words; equal texts for equal current
    states whatever the prior); describer=labels: the world's own change template. Same pairs and images."""
    from conftest import compose

    from bjexp.data.phantom import StudyState
    from bjexp.data.synthetic import build_manifest, report_sections

    over = ["data.n_patients=12", "data.classifier_images=20", f"paths.cache_dir={tmp_path}"]
    labels = mf.read(build_manifest(compose(over)))
    imp_path = build_manifest(compose(over + ["describer=impression"]))
    imp = mf.read(imp_path)
    assert imp_path.parent == build_manifest(compose(over)).parent  # one world, one cache
    assert list(imp["pair_id"]) == list(labels["pair_id"]) and list(imp["current_path"]) == list(labels["current_path"])
    for (_, a), (_, b) in zip(labels.iterrows(), imp.iterrows()):
        cur = {k: FindingState(v[0], v[1]) for k, v in json.loads(b["current_state"]).items()}
        assert b["text"] == report_sections(StudyState(cur))[1]
        assert b["text"] in b["current_report"]
        assert not CHANGE_WORDS & set(b["text"].replace(";", " ").split())
    assert (labels["text"] != imp["text"]).mean() > 0.5
    assert labels["text"].str.contains("new |resolved |unchanged").mean() > 0.5
