"""The main job end-to-end on tiny settings, exact resume, and the identity baseline."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, TINY, compose


def _run_train(run_dir, cache_dir, extra=()):
    env = {**os.environ, "BJEXP_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "BJEXP_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "bjexp.train", *TINY, *extra, f"hydra.run.dir={run_dir}"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    return p


def test_main_job_end_to_end(tmp_path, cache_dir):
    run = tmp_path / "run"
    _run_train(run, cache_dir)
    results = json.loads((run / "results.json").read_text())
    m = results["metrics"]
    for key in ("test/pathology_auroc", "test/pathology_auroc_changed", "test/race_auroc", "test/age_r", "test/cmig",
                "ceiling/pathology_auroc", "floor/pathology_auroc", "test/pathology_auroc/Effusion"):
        assert key in m and {"value", "lo", "hi"} <= set(m[key]), key
    # Tables 4 and 5 and the edit locality, through the registry into results.json and the run's report
    for key in ("test/anatomy_dice", "ceiling/anatomy_dice", "test/label_kl", "test/edit_locality",
                "ceiling/edit_locality/inside", "test/memorization", "floor/memorization"):
        assert key in m and np.isfinite(m[key]["value"]), key
    # the latent ceiling: the real currents through the run's VAE (samples_vae/), scored like the other sides
    for key in ("latent/pathology_auroc_changed", "latent/age_r", "latent/identity_similarity", "latent/cmig"):
        assert key in m and np.isfinite(m[key]["value"]), key
    assert len(list((run / "samples_vae").glob("*.png"))) == results["counts"]["test/n_pairs"]
    assert "| test ÷ latent |" in (run / "report.md").read_text()
    assert "test/anatomy_dice/Heart" in m  # NaN here: a 10-step segmenter may find no heart in either image
    assert set(results["details"]["anatomy_dice"]["held_out"]["dice"]) == {"Left lung", "Right lung", "Heart"}
    new = ("anatomy_dice", "label_kl", "edit_locality", "memorization")
    assert all(results["metric_info"][k]["headline"] for k in new)
    assert all(k in (run / "report.md").read_text() for k in new)
    # The consistency probes ran on the job's own generator (issue 14), with CIs where they are bootstrapped
    for key in ("test/null_instruction", "test/null_instruction/vae_l1", "test/reversal/p_new",
                "test/memorization/features", "test/edit_locality/ssim_outside"):
        assert key in m and np.isfinite(m[key]["value"]), key
    assert m["test/null_instruction"]["lo"] <= m["test/null_instruction"]["value"] <= m["test/null_instruction"]["hi"]
    assert results["details"]["memorization"]["closest"]
    assert not any(p in k for k in m for p in ("severity_monotonic", "contradiction", "guidance_curve"))  # on request
    assert "memorization.png" in (run / "report.md").read_text() and (run / "memorization.png").stat().st_size > 1000
    # generated PNGs for every evaluated test pair, and the artefacts a person opens
    n = results["counts"]["test/n_pairs"]
    assert len(list((run / "samples").glob("*.png"))) == n > 0
    for f in ("grid.png", "report.md", "config.yaml", "run.json", "checkpoints/last.ckpt"):
        assert (run / f).is_file(), f
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 0 and len(info["manifest_hash"]) == 16 and "sha" in info["git"] and "dirty" in info["git"]
    assert info["status"] == "finished"
    assert info["choices"]["method"] == "biomedjourney" and info["choices"]["encoder"] == "biomedclip"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6 and "ema" in ckpt
    assert not any(k.startswith(("vae.", "encoder.")) for k in ckpt["state_dict"])  # frozen parts not duplicated

    # The standalone stages rebuild the model from the run's checkpoint: same pixels (per-pair noise), same metrics.
    first = {p.name: p.read_bytes() for p in (run / "samples").glob("*.png")}
    for p in (run / "samples").glob("*.png"):
        p.unlink()
    _run_stage("sample", run, cache_dir, tmp_path)
    assert {p.name: p.read_bytes() for p in (run / "samples").glob("*.png")} == first
    (run / "results.json").unlink()
    _run_stage("evaluate", run, cache_dir, tmp_path)
    again = json.loads((run / "results.json").read_text())["metrics"]
    assert json.dumps(again, sort_keys=True) == json.dumps(m, sort_keys=True)  # probes too: same restored generator

    # A run configured before the probes existed (its config.yaml lacks every probe key, the describer's and the
    # predictor's _target_-era keys) is re-scored with the one it asks for: the keys it lacks come from today's
    # defaults.
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    for k in ("probes", "probe_settings"):
        saved["eval"].pop(k)
    saved["describer"].pop("_target_")
    for k in ("world", "training", "cache_dir", "seed"):
        saved["eval"]["predictor"].pop(k)
    for k in ("null_instruction", "reversal", "severity_monotonic", "contradiction", "guidance_curve"):
        saved["eval"]["metrics"].pop(k)
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    _run_stage("evaluate", run, cache_dir, tmp_path, "eval.probes=[reversal,severity_monotonic,contradiction,guidance_curve]")
    old = json.loads((run / "results.json").read_text())["metrics"]
    assert old["test/reversal"] == m["test/reversal"] and "test/null_instruction" not in old
    assert all(np.isfinite(old[f"test/{k}"]["value"]) for k in ("severity_monotonic", "contradiction/auroc"))
    assert sum(k.startswith("test/guidance_curve/t") and k.endswith("/follow") for k in old) == 9  # the 3 x 3 grid
    assert "guidance.png" in (run / "report.md").read_text() and (run / "guidance.png").stat().st_size > 1000


def _run_stage(stage, run, cache_dir, tmp_path, *extra):
    # Only run=: the stage must act on the run's own config (TINY's 2 sampler steps, not the default's 20).
    env = {**os.environ, "BJEXP_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "BJEXP_PROGRESS": "0"}
    cmd = [sys.executable, "-m", f"bjexp.{stage}", f"run={run}", *extra, f"hydra.run.dir={tmp_path / stage}"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-6000:]


def test_main_job_without_the_feature_cache(tmp_path, cache_dir):
    """model.cache_latents=false: training encodes every batch, and sampling encodes the test priors and texts."""
    run = tmp_path / "uncached"
    _run_train(run, cache_dir, ["model.cache_latents=false"])
    results = json.loads((run / "results.json").read_text())
    assert len(list((run / "samples").glob("*.png"))) == results["counts"]["test/n_pairs"] > 0


def test_registration_arm_end_to_end(tmp_path, cache_dir):
    """An arm of the registration study: registered pairs, the same-pairs rule, evaluation on that subset."""
    run = tmp_path / "ecc"
    _run_train(run, cache_dir, ["registration=affine_ecc", "registration.same_pairs_as=[none,affine_ecc]"])
    results = json.loads((run / "results.json").read_text())
    assert len(list((run / "samples").glob("*.png"))) == results["counts"]["test/n_pairs"] > 0
    assert json.loads((run / "run.json").read_text())["choices"]["registration"] == "affine_ecc"


def test_identity_baseline_outputs_the_prior(tmp_path, cache_dir):
    run = tmp_path / "identity"
    _run_train(run, cache_dir, ["method=identity"])
    m = json.loads((run / "results.json").read_text())["metrics"]
    # the identity method *is* the floor: the same images scored by the same predictor
    assert m["test/pathology_auroc"]["value"] == pytest.approx(m["floor/pathology_auroc"]["value"])
    assert m["test/identity_similarity"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert not (run / "checkpoints").exists()
    assert not any(k.startswith("latent/") for k in m)  # no autoencoder, no latent ceiling


def _fit(cfg, run_dir, max_steps):
    from omegaconf import open_dict

    from bjexp.workflow import build_module, fit, load_data

    with open_dict(cfg):
        cfg.trainer.max_steps = max_steps
        cfg.paths.run_dir = str(run_dir)
    data = load_data(cfg)
    module = build_module(cfg, data)
    fit(cfg, module, data, run_dir, loggers=[])
    return module


def test_resume_after_interruption_equals_uninterrupted(tmp_path, cache_dir):
    cfg = compose(TINY + ["paths.run_dir=/unused"])
    full = _fit(cfg.copy(), tmp_path / "full", 6)
    _fit(cfg.copy(), tmp_path / "split", 3)  # "interrupted" after step 3 (its last.ckpt is the state at step 3)
    resumed = _fit(cfg.copy(), tmp_path / "split", 6)  # same run dir: resumes from last.ckpt
    ck = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["global_step"] == 6
    for (name, a), b in zip(full.unet.state_dict().items(), resumed.unet.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(full.ema.shadow_params, resumed.ema.shadow_params):
        assert torch.equal(a, b)
    assert full.ema.optimization_step == resumed.ema.optimization_step == 6


def test_step_batch_sampler_resumes_mid_stream_and_shards():
    from bjexp.data.datamodule import StepBatchSampler

    full = StepBatchSampler(20, 4, seed=1)
    it = iter(full)
    ref = [next(it) for _ in range(12)]  # crosses an epoch boundary (5 batches per epoch)
    late = StepBatchSampler(20, 4, seed=1, start=7)
    it = iter(late)
    assert [next(it) for _ in range(5)] == ref[7:12]
    assert sorted(sum(ref[:5], [])) == list(range(20))  # one epoch = a permutation
    r0, r1 = iter(StepBatchSampler(20, 2, 1, rank=0, world=2)), iter(StepBatchSampler(20, 2, 1, rank=1, world=2))
    a, b = next(r0), next(r1)
    assert a + b == ref[0] and not set(a) & set(b)


def test_multirun_sweeps_both_encoder_families(tmp_path, cache_dir):
    # SLURM's allocation of 1 CPU on a node that does not confine CPUs: each job must run 1 thread (bjexp/threads.py)
    env = {**os.environ, "BJEXP_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "BJEXP_PROGRESS": "0",
           "SLURM_CPUS_PER_TASK": "1"}
    cmd = [sys.executable, "-m", "bjexp.train", "-m", "encoder=biomedclip,clip", *TINY, f"hydra.sweep.dir={tmp_path}"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-6000:]
    runs = sorted(tmp_path.glob("*/results.json"))
    assert len(runs) == 2
    encoders = {json.loads((r.parent / "run.json").read_text())["choices"]["encoder"] for r in runs}
    assert encoders == {"biomedclip", "clip"}
    assert [json.loads((r.parent / "run.json").read_text())["cpu_threads"] for r in runs] == [1, 1]
    # the two encoders really differ: masked 256-token BERT tower vs 77-token causal CLIP tower
    cfgs = [(r.parent / "config.yaml").read_text() for r in runs]
    assert any("max_length: 256" in c for c in cfgs) and any("max_length: 77" in c for c in cfgs)


def test_the_val_split_is_sampled_and_scored_on_request(tmp_path, cache_dir, tiny_run):
    """eval.split=val: sampler settings can be chosen without reading the test split. The val pairs are sampled
    and scored, counted from the manifest independently, and the test samples beside them are left alone."""
    import shutil

    import pandas as pd

    run = tmp_path / "val"
    shutil.copytree(tiny_run.dir, run)
    test_pngs = {p.name: p.read_bytes() for p in (run / "samples").glob("*.png")}
    _run_stage("sample", run, cache_dir, tmp_path, "eval.split=val")
    _run_stage("evaluate", run, cache_dir, tmp_path, "eval.split=val")

    df = pd.read_csv(json.loads((run / "run.json").read_text())["manifest"])
    val = df[df["split"] == "val"]
    assert len(val) and not set(val["pair_id"]) & set(df.loc[df["split"] == "test", "pair_id"])
    results = json.loads((run / "results.json").read_text())
    assert results["split"] == "val"
    c = results["counts"]
    assert c["test/n_pairs"] == len(val) and c["test/n_patients"] == val["patient_id"].nunique()
    for f in ("Effusion", "Pneumothorax"):
        assert c[f"test/n_changed/{f}"] == int((val[f"prior_{f}"] != val[f"current_{f}"]).sum())
    made = {p.name: p.read_bytes() for p in (run / "samples").glob("*.png")}
    assert set(made) - set(test_pngs) == {f"{p}.png" for p in val["pair_id"]}
    assert all(made[k] == v for k, v in test_pngs.items())
    assert {p.name for p in (run / "samples_vae").glob("*.png")} >= {f"{p}.png" for p in val["pair_id"]}
    report = (run / "report.md").read_text()
    assert "Scored on the **val** split." in report
    assert f"Val pairs: {len(val)} from {val['patient_id'].nunique()} patients" in report
    assert json.loads((tiny_run.dir / "results.json").read_text())["split"] == "test"
