"""Run records, reports and W&B logging."""
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from bjexp import report
from bjexp.tracking import runinfo
from bjexp.tracking.report import write_grid
from bjexp.tracking.wandb_log import loggable_config, log_results, make_loggers


def _fake_run(d, method, cmig, seed=0):
    d.mkdir(parents=True)
    m = {"test/pathology_auroc": {"value": 0.7, "lo": 0.6, "hi": 0.8}, "test/cmig": {"value": cmig, "lo": cmig - 5, "hi": cmig + 5}}
    (d / "results.json").write_text(json.dumps({"metrics": m}))
    (d / "run.json").write_text(json.dumps({"choices": {"method": method, "encoder": "clip"}, "seed": seed}))


def test_sweep_report_labels_runs_by_varying_choices(tmp_path):
    _fake_run(tmp_path / "0", "biomedjourney", 70.0)
    _fake_run(tmp_path / "1", "identity", 40.0)
    out = report.write(tmp_path)
    md = out["markdown"].read_text()
    assert "method=biomedjourney" in md and "method=identity" in md and "encoder=" not in md
    assert "70.000 [65.000, 75.000]" in md
    assert out["plot"].stat().st_size > 1000 and "<table" in out["html"].read_text()
    csv = out["csv"].read_text().splitlines()
    assert csv[0].split(",")[1:] == ["test/cmig", "test/pathology_auroc"] or "test/cmig" in csv[0]


def test_sweep_over_seeds_labels_each_run_by_its_seed(tmp_path):
    for i, (method, seed) in enumerate([("biomedjourney", 0), ("biomedjourney", 1), ("identity", 0), ("identity", 1)]):
        _fake_run(tmp_path / str(i), method, 50.0 + i, seed)
    assert set(report.collect(tmp_path)) == {f"method={m}, seed={s}" for m in ("biomedjourney", "identity") for s in (0, 1)}


def test_report_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.json"):
        report.write(tmp_path)


def test_secrets_never_enter_the_logged_config():
    cfg = OmegaConf.create({"describer": {"api_key": "sk-123", "endpoint": "http://x"}, "logger": {"token": "t"}})
    c = loggable_config(cfg)
    assert c["describer"]["api_key"] == "<redacted>" and c["logger"]["token"] == "<redacted>"
    assert c["describer"]["endpoint"] == "http://x"


def test_runinfo_records_git_state_and_config(tmp_path):
    cfg = OmegaConf.create({"seed": 3, "a": {"b": 1}})
    info = runinfo.record(cfg, tmp_path, manifest_hash="abc")
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["seed"] == 3 and saved["manifest_hash"] == "abc"
    assert set(saved["git"]) == {"sha", "dirty"} and (saved["git"]["sha"] is None or len(saved["git"]["sha"]) == 40)
    assert OmegaConf.load(tmp_path / "config.yaml").a.b == 1
    assert info["slurm_job_id"] is None or isinstance(info["slurm_job_id"], str)


def test_grid_png(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (3, 32, 32), dtype=np.uint8)
    p = write_grid(tmp_path / "g.png", imgs, imgs, imgs, ["new small left pleural effusion"] * 3, n=3)
    from PIL import Image

    assert Image.open(p).size[0] > 300


def test_wandb_offline_run_is_written_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = OmegaConf.create({"logger": {"name": "wandb", "project": "bjexp-test", "entity": None, "mode": "offline",
                                       "group": None, "tags": []}, "study": None, "seed": 0})
    loggers = make_loggers(cfg, tmp_path, {"choices": {"method": "identity"}})
    log_results(loggers, {"metrics": {"test/cmig": {"value": 1.0, "lo": 0.5, "hi": 1.5}}}, None)
    import wandb

    wandb.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_run_config_is_the_runs_own_with_key_value_overrides(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = OmegaConf.create({"run": None, "seed": 3, "paths": {"run_dir": "/elsewhere"},
                              "eval": {"n_bootstrap": 1000}, "sampler": {"steps": 2}})
    OmegaConf.save(saved, run / "config.yaml")
    (run / "run.json").write_text(json.dumps({"choices": {"logger": "csv", "registration": "none"}}))
    cli = OmegaConf.create({"run": str(run), "seed": 0, "sampler": {"steps": 20}})
    assert runinfo.run_config(OmegaConf.create({"run": None, "seed": 0})).seed == 0  # no run=: the command's own
    groups = {"logger", "registration"}
    cfg = runinfo.run_config(cli, ["eval.n_bootstrap=200", "logger=csv", f"run={run}"], groups)
    assert (cfg.seed, cfg.sampler.steps, cfg.eval.n_bootstrap) == (3, 2, 200)
    assert cfg.paths.run_dir == cfg.run == str(run)
    with pytest.raises(ValueError, match="registration=affine_ecc"):
        runinfo.run_config(cli, ["registration=affine_ecc"], groups)
    with pytest.raises(Exception, match="n_bootstrapp"):
        runinfo.run_config(cli, ["eval.n_bootstrapp=1"], groups)
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        runinfo.run_config(OmegaConf.create({"run": str(tmp_path / "nothing")}), [], groups)
