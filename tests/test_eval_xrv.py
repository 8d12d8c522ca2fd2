"""torchxrayvision predictors through xrv's real loading code (random weights at the expected file names),
their agreement with xrv's own forward passes, offline errors, the prediction cache, and an end-to-end
evaluation on real radiographs (../shared/data/real-cxr) with results.json written."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from bjexp import assets
from bjexp.eval import cache, fake_weights, fid
from bjexp.eval.xrv import RACE_CLASSES, XRVPredictor, import_xrv
from bjexp.imaging import uint8_to_xrv

REPO = Path(__file__).resolve().parents[1]
REAL_CXR = REPO.parent / "shared" / "data" / "real-cxr"


@pytest.fixture(scope="module")
def xrv_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("assets") / "xrv"
    fake_weights.write_xrv(d)
    return d


@pytest.fixture(scope="module")
def predictor(xrv_dir):
    return XRVPredictor(cache_dir=str(xrv_dir), verify_checksums=False, batch_size=3, progress=False)


def test_missing_weights_one_error_listing_every_file_never_downloads(tmp_path, monkeypatch):
    xrv = import_xrv()
    monkeypatch.setattr(xrv.utils, "download", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(assets.MissingWeightsError) as e:
        XRVPredictor(cache_dir=str(tmp_path))
    msg = str(e.value)
    for name in ("densenet121-res224-chex", "race", "age", "sex"):
        assert str(tmp_path / assets.get(name).file) in msg
        assert f"python -m bjexp.assets fetch {name} --folder {tmp_path}" in msg
    assert "\n" in msg and "\\n" not in msg  # a readable multi-line message, not literal backslash-n


def test_findings_not_predicted_by_weights_are_rejected(xrv_dir):
    with pytest.raises(ValueError, match="Hernia.*not predicted by densenet121-res224-chex"):
        XRVPredictor(cache_dir=str(xrv_dir), findings=["Effusion", "Hernia"], race=False, age=False, sex=False,
                     verify_checksums=False)


def test_predictions_agree_with_xrv_forward_and_thresholds(predictor):
    xrv = import_xrv()
    imgs = np.random.default_rng(0).integers(0, 256, (2, 256, 256), dtype=np.uint8)
    pred = predictor.predict(imgs)
    x = uint8_to_xrv(imgs).unsqueeze(1)  # 256 px: xrv resizes internally, we resize once outside; same result
    with torch.inference_mode():
        xrv_out = predictor.densenet(x).numpy()  # xrv forward: sigmoid then op_norm with the published op_threshs
        race = predictor.race_model(x).exp().numpy()
        age = predictor.age_model(x).reshape(-1).numpy()
        sex = torch.softmax(predictor.sex_model(x), 1)[:, 1].numpy()
    targets = [t for t in predictor.densenet.targets if t]
    assert list(pred.findings) == targets and "Lung Opacity" in targets
    ours = np.stack([pred.findings[t] for t in targets], 1)
    normed = xrv.models.op_norm(torch.from_numpy(ours), torch.tensor([pred.thresholds[t] for t in targets])).numpy()
    cols = [i for i, t in enumerate(predictor.densenet.targets) if t]
    assert np.allclose(normed, xrv_out[:, cols], atol=1e-4)
    # accuracy at the operating point == xrv's own 0.5 decision on op-normalised outputs
    assert np.array_equal(ours >= np.array([pred.thresholds[t] for t in targets]), xrv_out[:, cols] >= 0.5)
    assert pred.thresholds["Effusion"] == pytest.approx(xrv.models.model_urls["chex"]["op_threshs"][7])
    assert np.allclose(pred.race, race, atol=1e-5) and np.allclose(pred.race.sum(1), 1, atol=1e-5)
    assert pred.race.shape == (2, len(RACE_CLASSES))
    assert np.allclose(pred.age, age, atol=1e-4) and np.allclose(pred.sex, sex, atol=1e-5)
    assert pred.features.shape == (2, 1024)


def test_code_attributes_maps_mimic_text_to_model_classes():
    from bjexp.eval.xrv import code_attributes

    df = pd.DataFrame({"attr_sex": ["F", "m", "Female", None], "attr_race": [
        "WHITE - OTHER EUROPEAN", "BLACK/CAPE VERDEAN", "ASIAN - KOREAN", "HISPANIC/LATINO - CUBAN"]})
    out = code_attributes(df)
    assert out["attr_sex"].tolist()[:3] == [1.0, 0.0, 1.0] and np.isnan(out["attr_sex"][3])
    assert out["attr_race"].tolist()[:3] == [RACE_CLASSES.index(c) for c in ("White", "Black", "Asian")]
    assert np.isnan(out["attr_race"][3])
    coded = pd.DataFrame({"attr_sex": [0, 1], "attr_race": [2, 0]})
    assert code_attributes(coded).equals(coded)


def test_prediction_cache_roundtrip_and_hit(predictor, tmp_path, monkeypatch):
    imgs = np.random.default_rng(1).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    first = cache.cached_predict(predictor, imgs, tmp_path)
    monkeypatch.setattr(predictor, "predict", lambda images: pytest.fail("cache miss"))
    second = cache.cached_predict(predictor, imgs, tmp_path)
    assert second.findings.keys() == first.findings.keys() and second.thresholds == first.thresholds
    for a, b in [(first.race, second.race), (first.age, second.age), (first.sex, second.sex),
                 (first.features, second.features), *zip(first.findings.values(), second.findings.values())]:
        assert np.array_equal(a, b)


def _real_manifest(n_pairs: int) -> pd.DataFrame:
    """A test-split manifest over real same-patient pairs. These images have no CheXpert labels or race:
    labels and race are seeded stand-ins (the pixels, pairing, sex and ages are real where recorded)."""
    pairs = pd.read_csv(REAL_CXR / "pairs.csv").head(n_pairs)
    meta = pd.read_csv(REAL_CXR / "mhh_covid19" / "metadata.csv").drop_duplicates("patient_id").set_index("patient_id")
    rng = np.random.default_rng(0)
    n = len(pairs)
    df = pd.DataFrame({"pair_id": pairs["pair_id"], "patient_id": pairs["patient_id"].astype(str), "split": "test",
                       "prior_study_id": pairs["prior_file"], "current_study_id": pairs["current_file"],
                       "prior_path": [str(REAL_CXR / p) for p in pairs["prior_file"]],
                       "current_path": [str(REAL_CXR / p) for p in pairs["current_file"]], "text": ""})
    sex = meta["sex"].reindex(df["patient_id"]).to_numpy()
    age = meta["age"].reindex(df["patient_id"]).to_numpy(dtype=float)
    df["attr_sex"] = pd.Series(sex).str.upper()  # raw text as the ingestion writes it; coded by the evaluation
    df["attr_age"] = np.where(np.isnan(age), rng.uniform(30, 90, n), age)
    df["attr_race"] = rng.choice(["WHITE", "BLACK/AFRICAN AMERICAN", "ASIAN - CHINESE", "UNKNOWN"], n)
    for f in ("Effusion", "Lung Opacity", "Atelectasis", "Cardiomegaly", "Edema"):
        df[f"prior_{f}"] = rng.choice([1.0, 0.0, -1.0, np.nan], n, p=[0.4, 0.4, 0.1, 0.1])
        df[f"current_{f}"] = rng.choice([1.0, 0.0, -1.0], n, p=[0.45, 0.45, 0.1])
    return df


@pytest.mark.slow  # ~1 min on 2 CPU cores: 4 classifiers on 3 x 6 images, xrv FID twice
@pytest.mark.skipif(not REAL_CXR.is_dir(), reason=f"real CXR test data not found at {REAL_CXR}")
def test_end_to_end_real_images_results_and_caches(xrv_dir, tmp_path):
    from hydra.utils import instantiate

    from bjexp.data import manifest
    from bjexp.eval import suite
    from bjexp.imaging import write_png
    from bjexp.io import write_json
    from bjexp.schema.core import PathsConfig
    from bjexp.schema.eval_real import RealEvalConfig

    df = manifest.validate(_real_manifest(6))
    size = 64
    current = suite.load_images(manifest.resolve(df, "current_path"), size)
    prior = suite.load_images(manifest.resolve(df, "prior_path"), size)
    run_dir = tmp_path / "run"
    for pid, p, c in zip(df["pair_id"], prior, current):  # a "method": halfway from prior to current
        write_png(run_dir / "samples" / f"{pid}.png", ((p.astype(int) + c) // 2).astype(np.uint8))
    generated = suite.load_images([run_dir / "samples" / f"{p}.png" for p in df["pair_id"]])

    cfg = OmegaConf.create({"paths": OmegaConf.structured(PathsConfig(run_dir=str(run_dir), cache_dir=str(tmp_path / "cache"))),
                            "eval": OmegaConf.structured(RealEvalConfig)})
    cfg.eval.weights_dir = str(xrv_dir)
    cfg.eval.verify_checksums = False
    cfg.eval.n_bootstrap = 40
    cfg.eval.fid_settings.extractors = [fid.XRV_EXTRACTOR]
    cfg.eval.predictor.batch_size = 6
    cfg.eval.predictor.progress = False
    paper = OmegaConf.load(REPO / "conf" / "eval" / "metrics" / "paper.yaml")
    paper.pop("anatomy_dice")  # ChestX-Det on random weights: tests/test_eval_anatomy.py
    cfg.eval.metrics = {**paper, "fid": {"_target_": "bjexp.eval.fid.FID"}}
    predictor = instantiate(cfg.eval.predictor)
    calls = []
    real_predict = predictor.predict
    predictor.predict = lambda images: calls.append(len(images)) or real_predict(images)

    out = suite.score_all(cfg.eval, predictor, df, generated=generated, current=current, prior=prior)
    assert calls == [6, 6, 6]
    draws = out.pop("draws")  # per-resample values (numpy; evaluate writes them to bootstrap.npz, not JSON)
    assert len(draws["test/pathology_auroc"]) == 40 and "test/fid" not in draws
    write_json(run_dir / "results.json", out)
    res = json.loads((run_dir / "results.json").read_text())
    m = res["metrics"]
    for prefix in ("test", "ceiling", "floor"):
        for f in cfg.eval.findings:
            assert {"value", "lo", "hi", "n_valid"} <= m[f"{prefix}/pathology_auroc/{f}"].keys()
        for k in ("pathology_auroc", "pathology_accuracy", "race_auroc", "age_r", "sex_accuracy",
                  "identity_similarity"):
            assert f"{prefix}/{k}" in m
    assert m["floor/identity_similarity"]["value"] == pytest.approx(1.0, abs=1e-5)
    assert 0 < m["test/identity_similarity"]["value"] < 1
    assert m["test/fid/xrv-densenet121-features2"]["value"] > 0 and res["details"]["fid"]["n"] == 6
    assert m["test/fid"] == m["test/fid/xrv-densenet121-features2"] and res["metric_info"]["fid"]["direction"] == "lower"
    prov = res["provenance"]
    assert prov["predictor"]["pathology_weights"] == "densenet121-res224-chex"
    assert prov["predictor"]["files"]["pathology"]["sha256"] == assets.sha256(
        xrv_dir / assets.get("densenet121-res224-chex").file)
    assert prov["versions"]["torchxrayvision"] == "1.5.7"
    assert len(list((tmp_path / "cache" / "eval" / "predictions").glob("*.npz"))) == 2  # current + prior

    again = suite.score_all(cfg.eval, predictor, df, generated=generated, current=current, prior=prior)
    assert calls == [6, 6, 6, 6]  # second run of the sweep: only the generated images are classified
    assert again["metrics"]["ceiling/pathology_auroc"] == m["ceiling/pathology_auroc"]
    assert not math.isnan(m["test/pathology_auroc"]["value"])


def test_eval_real_composes_through_hydra(tmp_path):
    """conf/eval/real.yaml over its schema, inside the project's config (only the groups it interpolates)."""
    from hydra import compose, initialize_config_dir

    from bjexp.schema import register

    register()
    (tmp_path / "primary.yaml").write_text(
        f"defaults: [base_config, {{paths: default}}, {{eval: real}}, _self_]\n"
        f"hydra: {{searchpath: ['file://{REPO / 'conf'}']}}\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose(config_name="primary")
        with pytest.raises(Exception, match="fid_settingz"):
            compose(config_name="primary", overrides=["eval.fid_settingz.n=3"])
    e = cfg.eval
    assert e.predictor._target_ == "bjexp.eval.xrv.XRVPredictor"
    assert list(e.predictor.findings) == ["Effusion", "Lung Opacity", "Atelectasis", "Cardiomegaly", "Edema"]
    assert e.fid_settings.xrv_weights == "densenet121-res224-chex"
    assert e.predictor.cache_dir == e.weights_dir and e.weights_dir.endswith("/xrv")
