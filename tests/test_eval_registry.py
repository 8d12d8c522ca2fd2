"""The metric registry: paper metrics against independent computations (scikit-learn, scipy), CMIG's CI from the
same resamples as its parts, the config checks, lazy inputs paid once, set-level metrics, metadata in results and
every report."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, roc_auc_score

from bjexp.eval import registry, stats
from bjexp.eval.metrics import Predictions
from bjexp.eval.registry import EvalContext, Metric

FINDINGS = ["Effusion", "Edema"]


def _problem(seed: int = 0, n_patients: int = 60):
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_patients), rng.integers(1, 4, n_patients))
    n = pid.size
    df = pd.DataFrame({"patient_id": [f"p{i}" for i in pid], "pair_id": [f"q{i}" for i in range(n)]})
    for f in FINDINGS:
        df[f"current_{f}"] = rng.choice([1.0, 0.0, np.nan], n, p=[0.45, 0.45, 0.1])
        df[f"prior_{f}"] = np.where(rng.uniform(size=n) < 0.7, df[f"current_{f}"], 1 - df[f"current_{f}"].fillna(0))
    df["attr_race"], df["attr_age"], df["attr_sex"] = rng.integers(0, 3, n), rng.uniform(20, 90, n), rng.integers(0, 2, n)

    def pred(noise):
        race = rng.dirichlet(np.ones(3), n) + noise * np.eye(3)[df["attr_race"]]
        return Predictions(findings={f: np.clip(0.4 * df[f"current_{f}"].fillna(0) + rng.uniform(0, 0.8, n), 0, 1)
                                     for f in FINDINGS}, race=race / race.sum(1, keepdims=True),
                           age=df["attr_age"].to_numpy() + rng.normal(0, 15, n), sex=rng.uniform(0, 1, n),
                           features=rng.normal(size=(n, 6)), thresholds={"Effusion": 0.45})
    return df, pred(1.0), pred(0.5)


def test_paper_metrics_match_sklearn_and_scipy():
    df, gen, prior = _problem()
    m = registry.score_predictions(registry.config_metrics(), gen, df, prior=prior, findings=FINDINGS,
                                   n_bootstrap=0)["metrics"]
    aurocs, changed, accs = [], [], []
    for f in FINDINGS:
        y, yp, p = df[f"current_{f}"].to_numpy(), df[f"prior_{f}"].to_numpy(), gen.findings[f]
        ok = ~np.isnan(y)
        aurocs.append(roc_auc_score(y[ok], p[ok]))
        assert m[f"test/pathology_auroc/{f}"]["value"] == pytest.approx(aurocs[-1], abs=1e-12)
        c = ok & ~np.isnan(yp) & (y != yp)
        changed.append(roc_auc_score(y[c], p[c]))
        assert m[f"test/pathology_auroc_changed/{f}"]["value"] == pytest.approx(changed[-1], abs=1e-12)
        accs.append(accuracy_score(y[ok] == 1, p[ok] >= gen.thresholds.get(f, 0.5)))
        assert m[f"test/pathology_accuracy/{f}"]["value"] == pytest.approx(accs[-1], abs=1e-12)
    P = np.mean(aurocs)
    assert m["test/pathology_auroc"]["value"] == pytest.approx(P, abs=1e-12)
    assert m["test/pathology_auroc_changed"]["value"] == pytest.approx(np.mean(changed), abs=1e-12)
    assert m["test/pathology_accuracy"]["value"] == pytest.approx(np.mean(accs), abs=1e-12)
    R = roc_auc_score(df["attr_race"], gen.race, multi_class="ovr", average="macro")
    A = pearsonr(gen.age, df["attr_age"])[0]
    assert m["test/race_auroc"]["value"] == pytest.approx(R, abs=1e-12)
    assert m["test/age_r"]["value"] == pytest.approx(A, abs=1e-12)
    assert m["test/sex_accuracy"]["value"] == pytest.approx(accuracy_score(df["attr_sex"] == 1, gen.sex >= 0.5))
    cos = (gen.features * prior.features).sum(1) / np.linalg.norm(gen.features, axis=1) / np.linalg.norm(
        prior.features, axis=1)
    assert m["test/identity_similarity"]["value"] == pytest.approx(cos.mean(), abs=1e-9)
    assert m["test/cmig"]["value"] == pytest.approx(100 * math.sqrt(P * math.sqrt(R * A)), abs=1e-9)


def test_cmig_ci_comes_from_the_same_resamples_as_its_parts():
    """CMIG's CI equals a bootstrap (same seed, patient resamples) of CMIG computed from sklearn's P and R and
    scipy's A on each resample: the composite reads its parts from the resample, not from the point estimates."""
    df, gen, prior = _problem(1)
    got = registry.score_predictions(registry.config_metrics(), gen, df, prior=prior, findings=FINDINGS,
                                     n_bootstrap=200, seed=4)["metrics"]["test/cmig"]
    y = {f: df[f"current_{f}"].to_numpy() for f in FINDINGS}
    race, age = df["attr_race"].to_numpy(), df["attr_age"].to_numpy()

    def cmig(rows):
        ps = []
        for f in FINDINGS:
            r = rows[~np.isnan(y[f][rows])]
            ps.append(roc_auc_score(y[f][r], gen.findings[f][r]) if len(set(y[f][r])) == 2 else np.nan)
        R = roc_auc_score(race[rows], gen.race[rows], multi_class="ovr", average="macro", labels=[0, 1, 2]) \
            if len(set(race[rows])) == 3 else np.nan
        A = pearsonr(gen.age[rows], age[rows])[0]
        return {"cmig": 100 * math.sqrt(np.nanmean(ps) * math.sqrt(R * max(A, 0)))}

    want = stats.bootstrap(cmig, df["patient_id"].to_numpy(), n_resamples=200, seed=4)["cmig"]
    assert (got["value"], got["lo"], got["hi"]) == pytest.approx((want["value"], want["lo"], want["hi"]), abs=1e-9)
    assert got["lo"] < got["value"] < got["hi"]


def test_metric_info_is_in_the_results():
    df, gen, prior = _problem()
    res = registry.score_predictions(registry.config_metrics(), gen, df, prior=prior, findings=FINDINGS, n_bootstrap=5)
    info = res["metric_info"]
    assert list(info)[:3] == ["pathology_auroc", "pathology_auroc_changed", "pathology_accuracy"]
    assert info["cmig"]["needs"] == ["pathology_auroc", "race_auroc", "age_r"] and info["cmig"]["unit"] == "%"
    assert info["age_r"] == {"description": info["age_r"]["description"], "direction": "higher", "headline": True,
                             "bootstrap": True, "consumes": ["predictions"], "needs": [], "sides": ["test", "ceiling", "floor", "latent"],
                             "unit": "", "target": "bjexp.eval.retention.AgeR"}
    assert all(m["description"] for m in info.values())
    assert res["bootstrap"]["n_resamples"] == 5 and set(res["draws"]) == set(res["metrics"])


class Counting(Metric):
    """Two metrics of one family share an expensive per-pair input through ctx.memo."""
    description = "test metric"
    consumes = ("images",)
    calls = 0

    def compute(self, ctx, side, rows, done):
        def expensive():
            Counting.calls += 1
            return ctx.side_images(side).reshape(len(ctx.df), -1).mean(1)
        per_pair = ctx.memo(("brightness", side), expensive)
        return {"": float(per_pair[rows].mean() * self.scale)}


class Bright(Counting):
    name, scale = "brightness", 1.0


class BrightPercent(Counting):
    name, scale, unit = "brightness_pct", 100 / 255, "%"
    direction = "lower"


class SetLevel(Metric):
    name = "set_level"
    description = "a set-level statistic"
    consumes = ("images",)
    bootstrap = False
    sides = ("test",)
    needs = ("brightness",)

    def compute(self, ctx, side, rows, done):
        assert rows is None
        return {"": done["brightness"] * 2, "sub": 1.0}


def _images_ctx(n_bootstrap=30):
    df, _, _ = _problem(2)
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, (len(df), 4, 4), dtype=np.uint8) for s in registry.SIDES}
    return EvalContext(df, images=images, n_bootstrap=n_bootstrap, seed=1), images


def test_inputs_are_computed_once_and_set_level_metrics_have_no_ci():
    ctx, images = _images_ctx()
    Counting.calls = 0
    spec = {"brightness": {"_target_": f"{__name__}.Bright"}, "brightness_pct": {"_target_": f"{__name__}.BrightPercent"},
            "set_level": {"_target_": f"{__name__}.SetLevel"}}
    res = registry.evaluate(registry.build_metrics(spec), ctx)
    assert Counting.calls == len(registry.SIDES)  # once per side, shared by both metrics and all 30 resamples
    m = res["metrics"]
    for s in registry.SIDES:
        assert m[f"{s}/brightness"]["value"] == pytest.approx(images[s].mean())
        assert m[f"{s}/brightness_pct"]["value"] == pytest.approx(images[s].mean() / 2.55)
    assert m["test/set_level"] == {"value": pytest.approx(2 * images["test"].mean()), "lo": m["test/set_level"]["lo"],
                                   "hi": m["test/set_level"]["hi"], "n_valid": 0}
    assert math.isnan(m["test/set_level"]["lo"]) and "ceiling/set_level" not in m and "test/set_level/sub" in m
    assert res["metric_info"]["brightness_pct"]["direction"] == "lower"


class MeanPredictor:
    """A classifier whose age is the image's mean brightness and whose other outputs are fixed."""
    name, version, findings = "mean", "0", FINDINGS

    def predict(self, images):
        n, mean = len(images), images.reshape(len(images), -1).mean(1)
        return Predictions(findings={f: mean / 255 for f in FINDINGS}, race=np.full((n, 3), 1 / 3), age=mean,
                           sex=mean / 255, features=None, thresholds={})


def test_the_latent_ceiling_is_scored_from_its_own_images_and_only_when_given():
    """`latent` (the real currents' autoencoder round trips) is one more side: its keys come from the predictor on
    those images, with the same resamples as the other sides; a run without round trips has no latent keys."""
    from bjexp.eval import suite

    df, _, _ = _problem(3)
    rng = np.random.default_rng(4)
    img = {s: rng.integers(0, 256, (len(df), 4, 4), dtype=np.uint8) for s in ("test", "ceiling", "floor", "latent")}
    age = df["attr_age"].to_numpy()[:, None, None]
    img["latent"] = np.clip(2.5 * age + rng.normal(0, 40, img["latent"].shape), 0, 255).astype(np.uint8)  # age shows
    cfg = {"findings": FINDINGS, "n_bootstrap": 40, "metrics": {"age_r": {"_target_": "bjexp.eval.retention.AgeR"}}}
    kw = dict(generated=img["test"], current=img["ceiling"], prior=img["floor"])
    res = suite.score_all(cfg, MeanPredictor(), df, latent=img["latent"], **kw)
    for s in img:
        want = pearsonr(img[s].reshape(len(df), -1).mean(1), df["attr_age"])[0]
        assert res["metrics"][f"{s}/age_r"]["value"] == pytest.approx(want, abs=1e-12), s
    assert res["metrics"]["latent/age_r"]["lo"] > 0.2 > res["metrics"]["test/age_r"]["hi"]
    assert len(res["draws"]["latent/age_r"]) == len(res["draws"]["test/age_r"]) == 40
    assert not any(k.startswith("latent/") for k in suite.score_all(cfg, MeanPredictor(), df, **kw)["metrics"])


def test_config_mistakes_are_named():
    t = f"{__name__}.Bright"
    with pytest.raises(ValueError, match="eval.metrics.wrong: this metric is named 'brightness'"):
        registry.build_metrics({"wrong": {"_target_": t}})
    with pytest.raises(ValueError, match="set_level needs \\['brightness'\\] listed before it"):
        registry.build_metrics({"set_level": {"_target_": f"{__name__}.SetLevel"}})
    with pytest.raises(ValueError, match="eval.metrics.x: cannot build bjexp.eval.nothing.Here"):
        registry.build_metrics({"x": {"_target_": "bjexp.eval.nothing.Here"}})
    with pytest.raises(TypeError, match="not a bjexp.eval.registry.Metric"):
        registry.build_metrics({"x": {"_target_": "collections.OrderedDict"}})
    with pytest.raises(ValueError, match="unknown side"):
        registry.build_metrics({"brightness": {"_target_": t, "sides": ["tset"]}})
    assert registry.build_metrics({"brightness": None}) == []  # null switches one off
    m = registry.build_metrics({"brightness": {"_target_": t, "headline": True, "sides": ["test"]}})[0]
    assert m.headline and m.sides == ("test",)


def test_eval_metrics_compose_from_the_config(tmp_path):
    """Both worlds list the paper's metrics from one file; the real world adds FID and the fidelity set (KID, PRDC);
    options and removal by CLI."""
    from conftest import compose

    syn, real = compose([]).eval.metrics, compose(["eval=real"]).eval.metrics
    assert list(syn) == list(OmegaConf.load(registry.CONF / "paper.yaml"))
    assert list(real) == [*syn, "fid", "kid", "prdc"] and real.fid._target_ == "bjexp.eval.fid.FID"
    assert real.kid._target_ == "bjexp.eval.fidelity.KID" and real.prdc._target_ == "bjexp.eval.fidelity.PRDC"
    cfg = compose(["~eval.metrics.cmig", "+eval.metrics.age_r.headline=false"])
    built = registry.build_metrics(cfg.eval.metrics)
    assert "cmig" not in [m.name for m in built] and not next(m for m in built if m.name == "age_r").headline
    with pytest.raises(Exception, match="metricz"):
        compose(["eval.metricz.cmig=null"])


def test_reports_show_the_latent_ceiling_beside_the_others(tmp_path):
    """report.md: a `latent` row and the generated images as a fraction of it (higher-is-better metrics only); the
    study's reference rows: one latent row for the arms that share an autoencoder, none for an arm without one."""
    from types import SimpleNamespace

    from bjexp.tracking.report import write_run_report
    from bjexp.tracking.study import reference_rows

    info = {"age_r": {"description": "A", "direction": "higher", "headline": True, "bootstrap": True},
            "fid": {"description": "F", "direction": "lower", "headline": True, "bootstrap": False}}
    v = {"test": 0.72, "ceiling": 0.95, "floor": 0.9, "latent": 0.8}
    m = {f"{s}/age_r": {"value": x, "lo": x - 0.05, "hi": x + 0.05} for s, x in v.items()}
    m.update({f"{s}/fid": {"value": 10.0, "lo": math.nan, "hi": math.nan} for s in ("test", "latent")})
    md = write_run_report(tmp_path, {"metrics": m, "metric_info": info, "notes": []}).read_text()
    assert "| latent | 0.800 [0.750, 0.850] | 10.000 |" in md and "| test ÷ latent | 0.900 | – |" in md
    assert "`latent` = the real current images after the generator's autoencoder round trip" in md
    no_latent = {k: x for k, x in m.items() if not k.startswith("latent/")}
    assert "latent" not in write_run_report(tmp_path, {"metrics": no_latent, "metric_info": info}).read_text().split(
        "Run directory")[1].split("`", 2)[2]
    runs = [SimpleNamespace(label="identity", metrics=no_latent), SimpleNamespace(label="bj", metrics=m),
            SimpleNamespace(label="ip2p", metrics={**m, "test/age_r": m["floor/age_r"]})]
    labels = [lbl for lbl, _ in reference_rows(runs)]
    assert labels == ["ceiling (real current)", "latent ceiling (real current via the autoencoder)",
                      "floor (prior = identity)"]
    other = {**m, "latent/age_r": {"value": 0.7, "lo": 0.6, "hi": 0.8}}  # an arm with another autoencoder
    assert [lbl for lbl, _ in reference_rows(runs[:2] + [SimpleNamespace(label="sd", metrics=other)])][1:3] == [
        "latent ceiling (real current via the autoencoder) · bj", "latent ceiling (real current via the autoencoder) · sd"]


def test_reports_read_the_metadata_and_show_fid(tmp_path):
    """report.md (run), the sweep's report.md/html/png: columns are the headline metrics of metric_info, FID
    included, with their direction; a metric marked non-headline is not a column."""
    from bjexp import report
    from bjexp.tracking.report import write_run_report

    info = {"pathology_auroc": {"description": "P", "direction": "higher", "headline": True, "bootstrap": True},
            "fid": {"description": "Fréchet distance", "direction": "lower", "headline": True, "bootstrap": False},
            "secret": {"description": "not a headline", "direction": "higher", "headline": False, "bootstrap": True}}
    for i, fid in enumerate((31.5, 12.25)):
        d = tmp_path / str(i)
        d.mkdir()
        m = {f"{s}/pathology_auroc": {"value": 0.6 + 0.1 * i, "lo": 0.5, "hi": 0.9} for s in ("test", "ceiling", "floor")}
        m.update({"test/fid": {"value": fid, "lo": math.nan, "hi": math.nan}, "test/secret": {"value": 0.1, "lo": 0, "hi": 1},
                  "test/fid/inception-v3-compat": {"value": fid, "lo": math.nan, "hi": math.nan}})
        results = {"metrics": m, "metric_info": info, "notes": []}
        (d / "results.json").write_text(json.dumps(results))
        (d / "run.json").write_text(json.dumps({"choices": {"method": f"m{i}"}, "seed": 0}))
        md = write_run_report(d, results).read_text()
        table = md.split("Metrics:")[0]
        assert "| run | pathology_auroc ↑ | fid ↓ |" in table and f"{fid:.3f}" in table and "secret" not in table
    out = report.write(tmp_path)
    md, page = out["markdown"].read_text(), out["html"].read_text()
    assert "fid ↓" in md and "31.500" in md and "12.250" in md and "secret" not in md
    assert "<th>fid ↓</th>" in page and "Fréchet distance" in page
    assert out["plot"].stat().st_size > 5000
