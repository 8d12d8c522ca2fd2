"""data=mimic: a fake MIMIC-CXR-JPG tree with the real quirks -> the manifest a person computes by hand."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REPO, compose
from mimic_fake import EXPECTED, IMAGES, build, make_tree

from bjexp.data import manifest
from bjexp.errors import DataError
from bjexp.data.mimic.build import build_manifest
from bjexp.data.mimic.counts import Counts
from bjexp.data.mimic.metadata import MimicFormatError, read_labels, read_metadata
from bjexp.data.mimic.splits import by_patient_folder, unit_hash


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("mimic"))


def keyed(df: pd.DataFrame) -> dict[tuple, pd.Series]:
    return {(int(r.patient_id), int(r.prior_study_id), int(r.current_study_id)): r for r in df.itertuples()}


def test_manifest_matches_hand_computed_journeys(tree, tmp_path):
    path = build(tree, tmp_path)
    df = manifest.read(path)
    got = keyed(df)
    assert set(got) == {e[:3] for e in EXPECTED}
    for patient, prior, current, split, gap, text, _ in EXPECTED:
        r = got[(patient, prior, current)]
        assert r.split == split
        assert r.gap_days == pytest.approx(gap, abs=1e-4)
        assert r.text == text
    # study times that lost their leading zeros: 80556.875 is 08:05:56.875
    assert got[(10000032, 53189527, 53911762)].current_date == "2180-07-23T08:05:56"
    # the lowest dicom_id of the two PA images of study 51000001; the blank view recovered as PA
    b = got[(11000011, 51000001, 51000003)]
    assert b.prior_dicom_id.startswith("aaaaaaaa") and b.current_view == "PA"
    # labels under canonical (xrv) names, uncertain kept as -1
    a = got[(10000032, 56699142, 50414267)]
    assert (a.prior_Effusion, a.current_Effusion, a.current_Cardiomegaly) == (1.0, 1.0, -1.0)
    assert np.isnan(a.prior_Cardiomegaly)
    assert "Effusion" in manifest.label_columns(df, "prior") and "dicom_id" not in manifest.label_columns(df, "prior")
    # the image store: 16x16 grey PNGs whose content hash the manifest records
    for rel, h in zip([*df["prior_path"], *df["current_path"]], [*df["prior_image_hash"], *df["current_image_hash"]]):
        p = path.parent / rel
        assert hashlib.sha256(p.read_bytes()).hexdigest()[:16] == h
        with Image.open(p) as im:
            assert im.size == (16, 16) and im.mode == "L"
    # reports: sections only, PHI removed
    assert a.prior_report == ("FINDINGS: Small left pleural effusion. No pneumothorax. "
                              "IMPRESSION: Small left pleural effusion.")
    assert "___" not in "".join(df["prior_report"].fillna("")) + "".join(df["current_report"].fillna(""))


def test_every_filter_reason_is_counted(tree, tmp_path):
    path = build(tree, tmp_path)
    c = json.loads(path.with_suffix(".counts.json").read_text())
    assert c["read"] == {"images": len(IMAGES), "studies": 22, "patients": 8, "consecutive pairs": 11}
    assert c["removed"] == {
        "images: blank ViewPosition (unrecoverable)": 1,
        "images: view not in ['PA']": 2,  # a lateral and an AP
        "images: extra image of a study (kept the first by view rank, dicom_id)": 1,
        "studies: no image with a view in ['PA']": 2,
        "studies: same patient and timestamp as a kept study (kept the lowest study_id)": 1,
        "patients: only one usable study (no pair)": 1,
        "pairs: gap < min_gap_days=0": 0,
        "pairs: patient folder not in train/val p10..p18 or test p19": 1,
        "pairs: prior or current image missing or corrupt (see failed_images.csv)": 2,
        "pairs: describer=labels could not make a text": 1,
    }
    assert c["notes"]["images: blank ViewPosition recovered from ViewCodeSequence_CodeMeaning"] == 1
    assert c["journeys"] == {"train": 5, "val": 0, "test": 2}
    # the accounting closes: consecutive pairs - removed pairs = journeys
    removed_pairs = sum(v for k, v in c["removed"].items() if k.startswith("pairs:"))
    assert c["read"]["consecutive pairs"] - removed_pairs == sum(c["journeys"].values())
    failed = pd.read_csv(path.parent / "failed_images.csv")
    assert sorted(failed["key"].str.split("/").str[-1]) == ["a0000000-0000-0000-0000-000000000001",
                                                            "f0000000-0000-0000-0000-000000000003"]
    assert set(failed["reason"].str.contains("not found")) == {True, False}  # one missing, one corrupt
    fails = pd.read_csv(path.with_suffix(".describer_failures.csv"))
    assert fails[["prior_study_id", "current_study_id"]].values.tolist() == [[54000001, 54000002]]
    assert fails["reason"].tolist() == ["no labels for the current study"]


def test_impression_describer_ablation(tree, tmp_path):
    df = manifest.read(build(tree, tmp_path, "describer=impression"))
    got = keyed(df)
    expected = {e[:3]: e[6] for e in EXPECTED if e[6] is not None}
    expected[(14000066, 54000001, 54000002)] = "Tube removed."  # no labels needed here
    assert {k: r.text for k, r in got.items()} == expected
    fails = pd.read_csv(next(tmp_path.rglob("*.describer_failures.csv")))
    assert dict(zip(fails["current_study_id"], fails["reason"])) == {
        50414267: "current report has no IMPRESSION/FINDINGS", 51000003: "current report not found"}


def test_gap_bounds(tree, tmp_path):
    df = manifest.read(build(tree, tmp_path, "data.max_gap_days=400", "data.min_gap_days=2"))
    short = {(11000011, 51000001, 51000003)}  # 1.9 days
    long = {(19000033, 59000002, 59000003)}  # 1065 days
    assert set(keyed(df)) == {e[:3] for e in EXPECTED} - short - long
    c = Counts.load(next(tmp_path.rglob("*.counts.json")))
    assert c.removed["pairs: gap < min_gap_days=2"] == 1 and c.removed["pairs: gap > max_gap_days=400"] == 1


def test_limit_patients(tree, tmp_path):
    df = manifest.read(build(tree, tmp_path, "data.limit_patients=7"))  # the seven lowest subject ids (p20 left out)
    assert set(keyed(df)) == {e[:3] for e in EXPECTED if e[0] != 20000044}
    with pytest.raises(DataError, match=r"the test split is empty \(journeys per split: train 4, val 0, test 0\)"):
        build(tree, tmp_path, "data.limit_patients=2")  # p10 and p11 only: nothing to evaluate on


def test_official_split_and_negbio(tree, tmp_path):
    df = manifest.read(build(tree, tmp_path, "data.split=official", "data.labels=negbio"))
    split = {k[0]: r.split for k, r in keyed(df).items()}
    # the fake split file: p19 test, patient 11000011 'validate', others train; p20 is in the file too
    assert split == {10000032: "train", 11000011: "val", 13000055: "train", 19000033: "test", 20000044: "train"}


def test_val_split_is_by_patient_seeded_and_stable():
    ids = np.arange(10_000_000, 10_040_000)
    u = unit_hash(ids, seed=0)
    assert abs((u < 0.1).mean() - 0.1) < 0.01
    assert (unit_hash(ids, seed=1) < 0.1).tolist() != (u < 0.1).tolist()
    pairs = pd.DataFrame({"subject_id": np.repeat(ids[:500], 2)})
    a = by_patient_folder(pairs, Counts(), ["p10"], ["p19"], 0.1, seed=3)
    b = by_patient_folder(pairs.iloc[::4], Counts(), ["p10"], ["p19"], 0.1, seed=3)  # fewer patients
    assert (a.groupby("subject_id")["split"].nunique() == 1).all()
    assert b.set_index("subject_id")["split"].to_dict() == a.set_index("subject_id")["split"].loc[
        b["subject_id"]].to_dict()


def test_cached_and_resumable(tree, tmp_path):
    path = build(tree, tmp_path)
    stamp = path.stat().st_mtime_ns
    images = sorted((path.parent / "images").rglob("*.png"))
    first = {p: p.read_bytes() for p in images}
    assert build(tree, tmp_path) == path and path.stat().st_mtime_ns == stamp  # cached: not rebuilt
    # a killed run: the manifest and some images are gone, a temp file is left behind
    path.unlink()
    images[0].unlink()
    (images[1].parent / f".{images[1].name}.abc.tmp").write_bytes(b"half")
    again = build(tree, tmp_path)
    assert again == path
    assert {p: p.read_bytes() for p in images} == first  # rebuilt identically
    # a different describer: another manifest in the same store, images reused
    other = build(tree, tmp_path, "describer=impression")
    assert other != path and other.parent == path.parent


def test_demographics_age_at_study(tree, tmp_path):
    demo = tmp_path / "demo.csv"
    pd.DataFrame({"subject_id": [10000032, 19000033], "sex": ["F", "M"], "race": ["WHITE", "BLACK"],
                  "anchor_age": [52, 70], "anchor_year": [2180, 2110]}).to_csv(demo, index=False)
    df = manifest.read(build(tree, tmp_path, f"data.demographics={demo}"))
    got = keyed(df)
    assert got[(10000032, 56699142, 50414267)].attr_age == 52
    assert got[(19000033, 59000002, 59000003)].attr_age == 73  # current study in 2113
    assert got[(19000033, 59000001, 59000002)].attr_sex == "M"
    assert np.isnan(got[(11000011, 51000001, 51000003)].attr_age)


@pytest.mark.parametrize("mutate, column", [
    (lambda m: m.drop(columns="StudyTime"), "StudyTime"),
    (lambda m: m.assign(StudyDate=m["StudyDate"].astype(str).where(m.index != 3, "2180-07-01")), "StudyDate"),
    (lambda m: m.assign(StudyDate=m["StudyDate"].where(m.index != 3, 21801301)), "StudyDate"),
    (lambda m: m.assign(StudyTime=m["StudyTime"].where(m.index != 5, 256000.0)), "StudyTime"),
    (lambda m: m.assign(study_id=m["study_id"].astype(str).where(m.index != 2, "s5x")), "study_id"),
])
def test_malformed_metadata_names_file_and_column(tree, tmp_path, mutate, column):
    meta = pd.read_csv(tree / "mimic-cxr-2.0.0-metadata.csv.gz")
    mutate(meta).to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv", index=False)
    with pytest.raises(MimicFormatError) as e:
        read_metadata(tmp_path)
    assert "mimic-cxr-2.0.0-metadata.csv" in str(e.value) and f"'{column}'" in str(e.value)


def test_malformed_labels_name_file_and_column(tree, tmp_path):
    lab = pd.read_csv(tree / "mimic-cxr-2.0.0-chexpert.csv.gz")
    lab.loc[2, "Edema"] = 2.0
    lab.to_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    with pytest.raises(MimicFormatError, match=r"mimic-cxr-2.0.0-chexpert.csv: column 'Edema'.*line 4: 2.0"):
        read_labels(tmp_path)
    lab.drop(columns="Pneumothorax").to_csv(tmp_path / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    with pytest.raises(MimicFormatError, match=r"chexpert.csv: missing column\(s\) \['Pneumothorax'\]"):
        read_labels(tmp_path)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(MimicFormatError, match="paths.mimic_root"):
        build_manifest(compose(["data=mimic", "paths.mimic_root=null", f"paths.cache_dir={tmp_path}"]))
    with pytest.raises(MimicFormatError, match="no mimic-cxr-2.0.0-metadata.csv.gz"):
        build_manifest(compose(["data=mimic", f"paths.mimic_root={tmp_path}", f"paths.cache_dir={tmp_path}"]))


def test_metadata_to_journeys_does_not_import_torch(tree):
    code = ("import sys; from omegaconf import OmegaConf; from bjexp.data.mimic.build import build_pairs;"
            "from bjexp.data.mimic.counts import Counts;"
            "from bjexp.schema.mimic import MimicDataConfig;"
            f"p = build_pairs(__import__('pathlib').Path({str(tree)!r}), OmegaConf.structured(MimicDataConfig), Counts());"
            "assert len(p) == 11 - 1, len(p); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_llm_describer_end_to_end(tree, tmp_path):
    from chat_server import FakeChatServer

    with FakeChatServer() as server:
        server.script = [429]
        path = build(tree, tmp_path, "describer=llm", f"describer.endpoint={server.url}", "describer.model=m",
                     "describer.backoff_s=0.001")
        df = manifest.read(path)
        # the prompt carries both reports' FINDINGS/IMPRESSION (PHI removed); the answer echoes the current one
        row = keyed(df)[(19000033, 59000002, 59000003)]
        assert row.text == "CHANGE[FINDINGS: The right lower lobe opacity has cleared.]"
        prompts = [r["messages"][-1]["content"] for r in server.requests]
        assert any("Prior report:\nFINDINGS: Right lower lobe opacity. IMPRESSION: Right lower lobe pneumonia." in p
                   for p in prompts)
        assert not any("___" in p for p in prompts)
        fails = pd.read_csv(path.with_suffix(".describer_failures.csv"))
        # no report text on one side (missing file, or neither FINDINGS nor IMPRESSION): never sent
        assert sorted(fails["current_study_id"]) == [50414267, 51000003, 53189527]
        n = len(server.requests)
        assert build(tree, tmp_path / "other-cache", "describer=llm", f"describer.endpoint={server.url}",
                     "describer.model=m", f"describer.cache_dir={tmp_path / 'llm'}") != path
        assert len(server.requests) == n  # a fresh manifest cache, the same LLM cache: nothing paid twice


@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "real-cxr" / "singles").is_dir(),
                    reason="real CXR test data (../shared/data/real-cxr) not found")
def test_dicom_source_and_metadata_only(tree, tmp_path):
    import shutil

    import pydicom

    dcm = next((REPO.parent / "shared" / "data" / "real-cxr" / "singles").glob("*.dcm"))
    root = tmp_path / "mimic-dicom"
    shutil.copytree(tree, root, ignore=shutil.ignore_patterns("*.jpg"))
    for jpg in tree.rglob("*.jpg"):
        target = root / jpg.relative_to(tree).with_suffix(".dcm")
        if jpg.stat().st_size > 100:  # keep the corrupt one corrupt
            shutil.copy(dcm, target)
        else:
            target.write_bytes(b"not a dicom")
    mono1 = root / "files/p10/p10000032/s53911762/68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714.dcm"
    ds = pydicom.dcmread(mono1)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(mono1)
    df = manifest.read(build(root, tmp_path / "c", "data.images.format=dicom"))
    assert set(keyed(df)) == {e[:3] for e in EXPECTED}
    r = keyed(df)[(10000032, 53189527, 53911762)]
    a, b = (np.asarray(Image.open(p), dtype=int) for p in manifest.resolve(df.loc[[r.Index]], "prior_path")
            + manifest.resolve(df.loc[[r.Index]], "current_path"))
    assert np.abs(a + b - 255).max() <= 2  # the MONOCHROME1 copy is stored inverted back
    # images.enabled=false: no pixels, paths point at the sources (relative to the manifest folder)
    path = build(tree, tmp_path / "d", "data.images.enabled=false")
    df = manifest.read(path)
    assert all(p.resolve().is_file() and p.suffix == ".jpg" for p in manifest.resolve(df, "prior_path"))
    assert "prior_image_hash" not in df
    # without pixels nothing is read: every pair stays, those with a corrupt or a missing JPEG too (metadata-only)
    assert set(keyed(df)) == {e[:3] for e in EXPECTED} | {(15000077, 55000001, 55000002), (13000055, 53000002, 53000003)}
