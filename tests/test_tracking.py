"""Run records, reports and W&B logging."""
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from bjexp import report
from bjexp.errors import RunDirError
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


def test_grid_rows_take_distinct_patients_changed_pairs_first():
    import pandas as pd

    from bjexp.tracking.report import grid_rows

    df = pd.DataFrame({"patient_id": ["a", "a", "b", "b", "c", "d"],
                       "prior_Effusion": [0, 0, 1, 1, 0, 0], "current_Effusion": [0, 1, 1, 1, 0, 1],
                       "prior_pose_angle": [1, 2, 3, 4, 5, 6], "current_pose_angle": [2, 3, 4, 5, 6, 7]})
    rows = grid_rows(df, 4, ["Effusion"])
    assert list(rows[:2]) == [1, 5]  # the changed pairs (patients a, d) first
    assert len({df.patient_id[r] for r in rows}) == 4  # then one pair of each remaining patient
    assert list(grid_rows(df, 6, ["Effusion"])) == [1, 5, 2, 4, 0, 3]  # more rows than patients: the rest follow


def test_grid_png_has_one_column_per_image_set_and_the_whole_text(tmp_path):
    from PIL import Image

    imgs = np.random.default_rng(0).integers(0, 255, (3, 32, 32), dtype=np.uint8)
    long = "new small left pleural effusion; moderate cardiomegaly unchanged; resolved right pneumothorax"
    p3 = write_grid(tmp_path / "g3.png", {"prior": imgs, "generated": imgs, "real current": imgs}, [long] * 3)
    p4 = write_grid(tmp_path / "g4.png", {"prior": imgs, "generated": imgs, "vae": imgs, "real current": imgs},
                    [long] * 3, ["p1", "p2", "p3"])
    (w3, h3), (w4, h4) = Image.open(p3).size, Image.open(p4).size
    assert w4 > w3 > 300 and h4 == h3


def test_wandb_offline_run_is_written_locally(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = OmegaConf.create({"logger": {"name": "wandb", "project": "bjexp-test", "entity": None, "mode": "offline",
                                       "group": None, "tags": []}, "study": None, "seed": 0})
    loggers = make_loggers(cfg, tmp_path, {"choices": {"method": "identity"}})
    log_results(loggers, {"metrics": {"test/cmig": {"value": 1.0, "lo": 0.5, "hi": 1.5}}}, None)
    import wandb

    wandb.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())
    assert "anonymous" not in capfd.readouterr().err  # wandb's deprecation warning for Lightning's anonymous=None


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


def test_a_run_saved_with_a_retired_key_is_refused_not_read_with_another_network(tmp_path):
    """Before 3cbfc85 `model.unet.attention_head_dim=32` built 32 two-channel heads; today's `head_width` default
    would read the same weights as 2 heads of 32 channels, so sampling or evaluating such a run must stop."""
    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save(OmegaConf.create({"run": None, "seed": 0, "paths": {"run_dir": "/x"},
                                     "model": {"unet": {"attention_head_dim": 32}}}), run / "config.yaml")
    with pytest.raises(RunDirError, match=r"model\.unet\.attention_head_dim .*head_width.*Re-train"):
        runinfo.run_config(OmegaConf.create({"run": str(run)}), [], set())
    OmegaConf.save(OmegaConf.create({"run": None, "seed": 0, "paths": {"run_dir": "/x"},
                                     "model": {"unet": {"head_width": 32}}}), run / "config.yaml")
    assert runinfo.run_config(OmegaConf.create({"run": str(run)}), [], set()).model.unet.head_width == 32


def test_an_older_runs_config_gets_the_keys_added_since(tmp_path):
    """Inside a Hydra app, `run=` gives a run written before a key existed today's default for its own choices
    (a choice renamed since falls back to today's default for that group); saved values always win."""
    from hydra import initialize_config_dir

    from bjexp import schema
    from conftest import REPO

    schema.register()
    saved = OmegaConf.create({"seed": 7, "eval": {"n_bootstrap": 11, "metrics": {"cmig": None}},
                              "method": {"name": "identity"}})
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        out = runinfo.with_new_keys(saved, {"method": "identity", "model": "renamed_since", "experiment": None})
    assert out.seed == 7 and out.eval.n_bootstrap == 11 and out.method.name == "identity"
    assert list(out.eval.probes) == ["null_instruction", "reversal"] and out.eval.probe_settings.n_priors == 16
    assert out.eval.metrics.cmig is None and "reversal" in out.eval.metrics  # switched off stays off; new ones come
    assert out.model.name == "tiny"  # the renamed option: today's default
    assert runinfo.with_new_keys(saved, {"method": "identity"}) is saved  # outside a Hydra app: as saved
