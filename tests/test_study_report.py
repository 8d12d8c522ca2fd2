"""The study report (`python -m bjexp.report`): what the page holds, that it renders in headless Chromium without the
network, that a run's own report is never replaced by a thinner one, and the W&B report's spec (offline)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from browser import artefact, broken_images, browser
from conftest import REPO

from bjexp import report
from bjexp.tracking.wandb_log import may_upload_images, wandb_run_id

INFO = {
    "pathology_auroc": {"description": "AUROC of the classifier on generated images vs the current labels",
                        "direction": "higher", "headline": True, "bootstrap": True, "unit": ""},
    "pathology_auroc_changed": {"description": "the same over pairs whose label changed", "direction": "higher",
                                "headline": True, "bootstrap": True, "unit": ""},
    "cmig": {"description": "sqrt(P * sqrt(R * A))", "direction": "higher", "headline": True, "bootstrap": True,
             "unit": "%"},
    "fid": {"description": "Frechet distance", "direction": "lower", "headline": True, "bootstrap": False, "unit": ""},
    "age_mae": {"description": "not a headline", "direction": "lower", "headline": False, "bootstrap": True,
                "unit": "years"},
}
FINDINGS = ["Effusion", "Cardiomegaly"]


def _m(v, w=0.05):
    return {"value": v, "lo": v - w, "hi": v + w}


def _manifest(root, n_patients=10, pairs_each=2):
    """A small manifest with PNG images; patient i's first pair changed Effusion when i is even."""
    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    rows, rng = [], np.random.default_rng(0)
    for i in range(n_patients):
        for j in range(pairs_each):
            pid = f"p{i}-{j}"
            for side in ("prior", "current"):
                Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(img_dir / f"{pid}-{side}.png")
            changed = i % 2 == 0 and j == 0
            rows.append({"pair_id": pid, "patient_id": f"P{i:02d}", "split": "test", "prior_study_id": f"s{i}{j}a",
                         "current_study_id": f"s{i}{j}b", "prior_path": f"images/{pid}-prior.png",
                         "current_path": f"images/{pid}-current.png",
                         "text": ("new small left pleural effusion; cardiomegaly unchanged, with a long tail of words "
                                  "that must wrap in the strip" if changed else "no acute cardiopulmonary process"),
                         "prior_Effusion": 0.0, "current_Effusion": 1.0 if changed else 0.0,
                         "prior_Cardiomegaly": 1.0, "current_Cardiomegaly": 1.0})
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path, [r["pair_id"] for r in rows]


def _arm(d, manifest, pairs, method, cmig, *, data="synthetic", seed=0, shareable=True):
    d.mkdir(parents=True)
    m = {"test/pathology_auroc": _m(0.6 + cmig / 1000), "test/pathology_auroc_changed": _m(0.5),
         "test/cmig": _m(cmig, 3), "test/fid": {"value": 40.0 - cmig / 10, "lo": float("nan"), "hi": float("nan")},
         "test/age_mae": _m(7.0), "ceiling/pathology_auroc": _m(0.9), "ceiling/cmig": _m(90.0),
         "floor/pathology_auroc": _m(0.55), "floor/cmig": _m(80.0)}
    for f in FINDINGS:
        m[f"test/pathology_auroc/{f}"] = _m(0.61)
        m[f"test/pathology_auroc_changed/{f}"] = _m(0.52)
        m[f"ceiling/pathology_auroc/{f}"] = _m(0.93)
    (d / "results.json").write_text(json.dumps({"metrics": m, "metric_info": INFO, "notes": [f"{method} note"],
                                                "counts": {"test/n_changed/Effusion": 5}}))
    (d / "run.json").write_text(json.dumps({
        "choices": {"method": method, "encoder": "biomedclip", "data": data}, "seed": seed,
        "git": {"sha": "0123456789abcdef0123456789abcdef01234567", "dirty": method == "identity"},
        "manifest": str(manifest), "manifest_hash": f"hash-{method}", "started": "2026-12-01T10:00:00+00:00"}))
    cfg = {"model": {"image_size": 64}, "eval": {"findings": FINDINGS}, "method": {"name": method},
           "data": {"name": data, "images_shareable": shareable}, "logger": {"log_images": None},
           "sampler": {"steps": 20 if method != "identity" else 1}, "seed": seed}
    (d / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    (d / "samples").mkdir()
    for p in pairs:
        Image.fromarray(np.full((64, 64), 40 + cmig, np.uint8)).save(d / "samples" / f"{p}.png")
    (d / "csv").mkdir()
    pd.DataFrame({"step": [1, 2, 3, 4], "train/loss": [1.0, 0.8, 0.6, 0.5],
                  "val/loss": [np.nan, 0.9, np.nan, 0.7]}).to_csv(d / "csv" / "metrics.csv", index=False)


@pytest.fixture
def sweep(tmp_path):
    manifest, pairs = _manifest(tmp_path / "data")
    root = tmp_path / "multirun"
    _arm(root / "0", manifest, pairs, "biomedjourney", 60.0)
    _arm(root / "1", manifest, pairs, "identity", 80.0)
    return root


def test_sweep_page_holds_tables_plots_images_and_config(sweep):
    out = report.write(sweep)
    page = out["html"].read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch
    assert page.count("<tr><td>method=biomedjourney</td>") >= 1 and "ceiling (real current)" in page
    assert "floor (prior = identity)" in page and "80.000 [77.000, 83.000]" in page
    assert "fid ↓" in page and "cmig (%) ↑" in page and "age_mae" not in page.split("id=metrics")[1].split("</table>")[0]
    assert "data-metric='pathology_auroc_changed'" in page and "<th>n changed</th>" in page
    assert "Loss curves" in page and "Axis: method" in page
    assert "8 test pairs from 8 patients" in page  # report.grid_pairs=8: one pair per patient, changed first
    assert "<code>method.name</code>" in page and "<code>sampler.steps</code>" in page  # config differences
    assert "0123456789 (dirty)" in page and "hash-identity" in page and "identity note" in page
    # One sweep axis: the metrics plot, the loss curves, that axis's plot and the image strip, each inlined.
    alts = re.findall(r"<img class=\w+ alt='([^']*)' src='data:image/png;base64,", page)
    assert alts == ["metrics with ceiling and floor", "training and validation loss", "metrics against method",
                    "image strips"]
    md = out["markdown"].read_text()
    assert "report.html" in md and "method=identity" in md


def test_image_strip_lines_up_changed_pairs_of_distinct_patients_first(sweep):
    from bjexp.data import manifest as mf
    from bjexp.tracking.report import grid_rows

    df = mf.read(json.loads((sweep / "0" / "run.json").read_text())["manifest"])
    rows = grid_rows(df, 8, FINDINGS)
    picked = df.iloc[rows]
    assert picked["patient_id"].nunique() == 8
    assert list(picked["current_Effusion"][:5]) == [1.0] * 5  # the five changed pairs come first


def test_report_page_renders_in_chromium(sweep, tmp_path):
    page_path = report.write(sweep)["html"]
    with browser(tmp_path) as ctx:
        page = ctx.new_page()
        page.goto(page_path.as_uri(), wait_until="load")
        assert not broken_images(page)
        n_img = page.evaluate("document.images.length")
        assert n_img >= 4
        assert page.locator("#metrics tr").count() == 1 + 2 + 2  # header, two arms, ceiling, floor
        assert page.locator("table.sub").count() == 2 and page.locator("#config-diff").is_visible()
        widths = page.evaluate("Array.from(document.querySelectorAll('img.grid, img.plot')).map(i => i.naturalWidth)")
        assert widths and min(widths) > 100
        page.screenshot(path=artefact(tmp_path, "study-report.png"), full_page=True)
        assert ctx.external == []  # the page asked for nothing outside the machine


def test_single_run_report_is_never_thinner(tmp_path):
    from bjexp.tracking.report import write_run_report

    manifest, pairs = _manifest(tmp_path / "data")
    run = tmp_path / "run"
    _arm(run, manifest, pairs, "biomedjourney", 60.0)
    write_run_report(run, json.loads((run / "results.json").read_text()))
    before = (run / "report.md").read_text()
    report.write(run)
    after = (run / "report.md").read_text()
    assert after == before and "pathology_auroc_changed/" in after or "Effusion" in after
    assert (run / "report.html").is_file() and "bjexp run report" in (run / "report.html").read_text()


def test_wandb_report_spec_offline(sweep, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    rcfg = OmegaConf.create({"grid_pairs": 8, "wandb": True, "wandb_project": "bjexp-test", "wandb_entity": "lab"})
    out = report.write(sweep, rcfg)
    spec = json.loads(out["wandb_spec"].read_text())
    assert spec["project"]["name"] == "bjexp-test" and spec["project"]["entityName"] == "lab"
    blocks = spec["spec"]["blocks"]
    grid = next(b for b in blocks if b["type"] == "panel-grid")
    runset = grid["metadata"]["runSets"][0]
    text = json.dumps(runset["filters"])
    for d in ("0", "1"):
        assert wandb_run_id(sweep / d) in text  # the runset is exactly the sweep's runs
    assert runset["filters"]["filters"][0]["op"] == "IN" and runset["filters"]["filters"][0]["key"]["name"] == "name"
    assert "config:run_info.choices.method.value" in runset["runFeed"]["columnPinned"]  # the runs table's columns
    panels = grid["metadata"]["panelBankSectionConfig"]["panels"]
    kinds = [p["viewType"] for p in panels]
    assert kinds.count("Bar Chart") == 4  # one per headline metric of metric_info (age_mae is not one)
    bar_metrics = sorted(m for p in panels if p["viewType"] == "Bar Chart" for m in p["config"]["metrics"])
    assert "test/cmig/ci_lo" in bar_metrics and "test/fid" in bar_metrics and not any("age_mae" in m for m in bar_metrics)
    pc = next(p for p in panels if p["viewType"] == "Parallel Coordinates Plot")
    accessors = [c["accessor"] for c in pc["config"]["columns"]]
    assert accessors[0] == "config:run_info.value.choices.method"  # an ablation group as config, not summary
    assert "summary:test/cmig" in accessors and not any(a.startswith("summary:") for a in accessors[:1])
    assert "Media Browser" in kinds
    table = next(b["content"] for b in blocks if b["type"] == "markdown-block")  # the metrics table, with references
    assert "| method=identity | 0.680 [0.630, 0.730] |" in table and "| ceiling (real current) | 0.900 [0.850, 0.950] |" in table
    assert "| floor (prior = identity) | 0.550 [0.500, 0.600] |" in table


def test_no_mimic_images_to_wandb_unless_asked(tmp_path, monkeypatch):
    mimic = OmegaConf.create({"logger": {"log_images": None}, "data": {"images_shareable": False}})
    assert not may_upload_images(mimic)
    mimic.logger.log_images = True
    assert may_upload_images(mimic)
    assert may_upload_images(OmegaConf.create({"logger": {"log_images": None}, "data": {"images_shareable": True}}))
    from conftest import compose

    assert compose(["data=mimic"]).data.images_shareable is False
    assert compose([]).data.images_shareable is True
    # A sweep with a MIMIC arm gets no media panel.
    monkeypatch.setenv("WANDB_MODE", "offline")
    manifest, pairs = _manifest(tmp_path / "data")
    _arm(tmp_path / "m" / "0", manifest, pairs, "biomedjourney", 60.0, data="mimic", shareable=False)
    _arm(tmp_path / "m" / "1", manifest, pairs, "identity", 80.0, data="mimic", shareable=False)
    rcfg = OmegaConf.create({"grid_pairs": 8, "wandb": True, "wandb_project": "p", "wandb_entity": None})
    spec = json.loads(report.write(tmp_path / "m", rcfg)["wandb_spec"].read_text())
    assert "Media Browser" not in json.dumps(spec) and "MIMIC-derived images never go to W&B" in json.dumps(spec)


def test_report_of_a_real_tiny_run(tiny_run, tmp_path):
    """The stage on a run the main job wrote: real manifest, samples, VAE round trips, CSV losses; in Chromium."""
    run = tiny_run.dir
    before = (run / "report.md").read_text()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BJEXP_PROGRESS": "0"}
    p = subprocess.run([sys.executable, "-m", "bjexp.report", f"run={run}", f"hydra.run.dir={tmp_path / 'h'}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    assert (run / "report.md").read_text() == before  # the run's own full report stays
    page = (run / "report.html").read_text()
    assert "current, VAE round trip" not in page or "Images" in page
    assert "Loss curves" in page and "No loss log" not in page
    with browser(tmp_path) as ctx:
        pg = ctx.new_page()
        pg.goto((run / "report.html").as_uri(), wait_until="load")
        # header, the run, and the ceiling, latent ceiling and floor rows
        assert not broken_images(pg) and pg.locator("#metrics tr").count() == 1 + 1 + 3
        pg.screenshot(path=artefact(tmp_path, "study-report-tiny-run.png"), full_page=True)
        assert ctx.external == []


def test_guidance_curves_are_plotted_from_the_probe_keys(sweep):
    from bjexp.tracking.study import guidance_curves

    res = json.loads((sweep / "0" / "results.json").read_text())
    for t in (1, 7.5):
        for i in (1, 1.5):
            res["metrics"][f"test/guidance_curve/t{t:g}_i{i:g}/follow"] = _m(t / 10 + i / 100)
            res["metrics"][f"test/guidance_curve/t{t:g}_i{i:g}/retain"] = _m(1 - t / 10)
    (sweep / "0" / "results.json").write_text(json.dumps(res))
    curves = guidance_curves(res["metrics"])
    assert curves == {1.0: [(1.0, pytest.approx(0.9), pytest.approx(0.11)), (7.5, pytest.approx(0.25), pytest.approx(0.76))],
                      1.5: [(1.0, pytest.approx(0.9), pytest.approx(0.115)), (7.5, pytest.approx(0.25), pytest.approx(0.765))]}
    page = report.write(sweep)["html"].read_text()
    alts = re.findall(r"<img class=\w+ alt='([^']*)' src='data:image/png;base64,", page)
    assert "guidance curves" in alts and alts.count("guidance curves") == 1  # one figure, a panel per arm with it


def test_report_columns_choose_the_main_table(sweep):
    rcfg = OmegaConf.create({"grid_pairs": 8, "wandb": False, "columns": ["cmig", "age_mae"]})
    md = report.write(sweep, rcfg)["markdown"].read_text()
    assert "| run | cmig (%) ↑ | age_mae (years) ↓ |" in md and "pathology_auroc ↑" not in md.split("\n\n")[2]
    with pytest.raises(ValueError, match=r"report.columns: \['cmgi'\] not among"):
        report.write(sweep, OmegaConf.create({"grid_pairs": 8, "wandb": False, "columns": ["cmgi"]}))
