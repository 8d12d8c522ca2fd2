"""The paper's baselines (sd, instructpix2pix, instructpix2pix_ft, roentgen_pretrained): which weights each uses in
which world (config, not code), fail-fast on missing folders, and end-to-end runs of `python -m bjexp.train` on
tiny random weights in the real on-disk formats (model=sd15) and on the miniature world's general-domain models
(model=tiny)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, TINY, compose

from bjexp.methods import build_method
from bjexp.assets import MissingWeightsError

REAL = {"sd": "stable-diffusion-v1-5", "instructpix2pix": "instruct-pix2pix",
        "instructpix2pix_ft": "instruct-pix2pix", "roentgen_pretrained": "roentgen"}
FETCH = {"sd": "sd15", "instructpix2pix": "instructpix2pix", "instructpix2pix_ft": "instructpix2pix",
         "roentgen_pretrained": "roentgen"}
# Test-sized general domain (the defaults take a few CPU minutes; these seconds).
GENERAL_TINY = ["model.general.n_scenes=96", "model.general.n_edits=96", "model.general.sd_steps=4",
                "model.general.ip2p_steps=4", "model.general.text.pretrain_steps=4", "model.general.optim.batch_size=8"]
# model=sd15 on tiny random folders (as tests/test_model_assets.py's end-to-end run).
SD15_TINY = ["model=sd15", "model.image_size=32", "data.n_patients=24", "data.classifier_images=240",
             "trainer.max_steps=2", "model.optim.batch_size=4", "sampler.steps=2", "eval.max_pairs=4",
             "eval.n_bootstrap=10", "eval.classifier.steps=10", "logger=csv", "trainer.enable_progress_bar=false"]


def _env(cache_dir) -> dict:
    return {**os.environ, "BJEXP_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "BJEXP_PROGRESS": "0",
            "OMP_NUM_THREADS": "1"}


def _train(args, cache_dir, run_dir):
    p = subprocess.run([sys.executable, "-m", "bjexp.train", *args, f"hydra.run.dir={run_dir}"], cwd=REPO,
                       env=_env(cache_dir), capture_output=True, text=True, timeout=1500)
    return p


# -- which weights in which world: config ----------------------------------------------------------------------
@pytest.mark.parametrize("method,model,target,arg", [
    ("sd", "sd15", "AssetFolder", {"asset": "sd15"}),
    ("sd", "tiny", "GeneralDomain", {"model": "text_to_image"}),
    ("instructpix2pix", "sd15", "AssetFolder", {"asset": "instructpix2pix"}),
    ("instructpix2pix", "tiny", "GeneralDomain", {"model": "instruct_pix2pix"}),
    ("instructpix2pix_ft", "sd15", "AssetFolder", {"asset": "instructpix2pix"}),
    ("instructpix2pix_ft", "tiny", "GeneralDomain", {"model": "instruct_pix2pix"}),
    ("roentgen_pretrained", "sd15", "AssetFolder", {"asset": "roentgen"}),
    ("roentgen_pretrained", "tiny", "Unavailable", {}),
])
def test_each_world_names_its_weights_in_config(method, model, target, arg):
    cfg = compose([f"method={method}", f"model={model}"])
    source = cfg.method.kwargs.get("weights") or cfg.method.kwargs.get("init")
    assert source._target_ == f"bjexp.methods.pretrained.{target}"
    assert {k: source[k] for k in arg} == arg
    assert cfg.conditioning.name == ("concat" if "instructpix2pix" in method else "text_only")


def test_the_prompt_column_roentgen_reads_is_the_current_report():
    assert build_method(compose(["method=roentgen_pretrained", "model=sd15"])).prompt == "current_report"
    assert build_method(compose(["method=sd"])).prompt == "text"


def test_roentgen_pretrained_in_the_miniature_world_names_its_stand_in():
    cfg = compose(["method=roentgen_pretrained"])
    with pytest.raises(ValueError, match="its stand-in there is method=roentgen"):
        build_method(cfg).check(cfg)


def test_a_world_without_weights_for_a_baseline_fails_at_start_up_naming_the_file_to_add():
    from omegaconf import open_dict

    cfg = compose(["method=instructpix2pix_ft"])
    with open_dict(cfg):
        cfg.method.kwargs.init = "???"  # what a model without conf/method_model/instructpix2pix_ft_<model>.yaml has
    with pytest.raises(ValueError, match=r"method=instructpix2pix_ft has no method\.kwargs\.init for model=tiny: "
                                         r"add conf/method_model/instructpix2pix_ft_tiny\.yaml"):
        build_method(cfg)


def test_the_existing_methods_are_unchanged():
    for name, kwargs in [("biomedjourney", {"uses_prior": True}), ("roentgen", {"uses_prior": False})]:
        m = build_method(compose([f"method={name}"]))
        assert (m.trains, m.uses_prior, m.init) == (True, kwargs["uses_prior"], None)
    assert build_method(compose(["method=identity"])).trains is False


def test_sweep_report_labels_arms_by_their_choices_not_by_specializing_ones(tmp_path):
    from bjexp import report

    for i, (method, cond) in enumerate([("sd", "text_only"), ("biomedjourney", "concat")]):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "results.json").write_text(json.dumps({"metrics": {"test/cmig": {"value": 1, "lo": 0, "hi": 2}}}))
        (d / "run.json").write_text(json.dumps({"seed": 0, "choices": {
            "method": method, "conditioning": cond, "method_model": f"{method}_tiny", "model_overrides": "tiny"}}))
    assert {r.label for r in report.runs(tmp_path)} == {"conditioning=text_only, method=sd",
                                                      "conditioning=concat, method=biomedjourney"}


# -- missing weights: in seconds, before data ------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(REAL))
def test_missing_folder_fails_at_check_naming_path_and_fetch(method, tmp_path):
    cfg = compose([f"method={method}", "model=sd15", f"paths.assets_dir={tmp_path}"])
    m = build_method(cfg)
    assert m.assets(cfg) == [FETCH[method]]
    # RoentGen is not on a hub: the error says how to obtain it instead of a fetch command.
    how = (r"stanfordmimi.github.io/RoentGen" if method == "roentgen_pretrained"
           else rf"python -m bjexp.assets (--dir \S+ )?fetch {FETCH[method]}")
    with pytest.raises(MissingWeightsError, match=how) as e:
        m.check(cfg)
    assert str(tmp_path / REAL[method]) in str(e.value)


def test_train_entry_point_stops_before_data_preparation(tmp_path):
    r = _train(["method=instructpix2pix", "model=sd15", f"paths.assets_dir={tmp_path / 'none'}", "logger=csv"],
               tmp_path / "cache", tmp_path / "run")
    assert r.returncode != 0
    assert "missing weights" in r.stderr and str(tmp_path / "none" / "instruct-pix2pix") in r.stderr
    assert re.search(r"python -m bjexp.assets (--dir \S+ )?fetch instructpix2pix", r.stderr), r.stderr
    assert not (tmp_path / "cache").exists()


def test_a_conditioning_the_folder_cannot_do_is_refused(tmp_path):
    from bjexp.models.fake_assets import write_tiny_sd

    write_tiny_sd(tmp_path / "stable-diffusion-v1-5")
    cfg = compose(["method=sd", "model=sd15", f"paths.assets_dir={tmp_path}", "conditioning=sdedit"])
    m = build_method(cfg)
    with pytest.raises(ValueError, match="samples .* as text_only .* not conditioning=sdedit"):
        m.generator(cfg, None, None)


# -- end to end on tiny random weights in the real formats (model=sd15) -----------------------------------------
@pytest.fixture(scope="module")
def fake_folders(tmp_path_factory):
    """The registry's folders filled with tiny random weights in each asset's real format: SD1.5 and RoentGen are
    StableDiffusionPipeline folders, InstructPix2Pix a StableDiffusionInstructPix2PixPipeline folder."""
    from bjexp.models.fake_assets import write_tiny_ip2p, write_tiny_sd

    root = tmp_path_factory.mktemp("assets")
    write_tiny_sd(root / "stable-diffusion-v1-5", seed=0)
    write_tiny_ip2p(root / "instruct-pix2pix", seed=1)
    write_tiny_sd(root / "roentgen", seed=2)
    return root


@pytest.mark.parametrize("method", sorted(REAL))
def test_baseline_end_to_end_on_real_format_folders(method, fake_folders, cache_dir, tmp_path):
    run = tmp_path / "run"
    r = _train([f"method={method}", *SD15_TINY, f"paths.assets_dir={fake_folders}"], cache_dir, run)
    assert r.returncode == 0, r.stderr[-4000:]
    results = json.loads((run / "results.json").read_text())
    m = results["metrics"]  # scored (4 pairs hold one race-like class here, so no race AUROC / CMIG)
    assert 0 <= m["test/pathology_auroc"]["value"] <= 1 and "test/age_r" in m and "test/race_auroc" in m
    assert len(list((run / "samples").glob("*.png"))) == results["counts"]["test/n_pairs"] == 4
    assert json.loads((run / "run.json").read_text())["choices"]["method"] == method
    if method == "instructpix2pix_ft":  # fine-tuned from the IP2P folder: its 8-channel UNet, its CLIP width
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        from diffusers import UNet2DConditionModel

        ip2p = UNet2DConditionModel.from_pretrained(fake_folders / "instruct-pix2pix", subfolder="unet")
        w = ckpt["state_dict"]["unet.conv_in.weight"]
        assert ckpt["global_step"] == 2 and w.shape == ip2p.conv_in.weight.shape
        assert not torch.equal(w, ip2p.conv_in.weight)  # trained, from IP2P's (not zero-initialised) prior channels
        assert torch.allclose(w, ip2p.conv_in.weight, atol=1e-2)
    else:
        assert not (run / "checkpoints").exists()


def test_zero_shot_samples_are_what_the_folder_draws(fake_folders, cache_dir, tmp_path):
    """method=instructpix2pix writes, for a test pair, the pixels diffusers' own InstructPix2Pix pipeline gives for
    the same folder, prior, text and noise (the parity test's tolerance, after uint8 rounding)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from bjexp.imaging import read_grey
    from bjexp.models.guidance import pair_generator
    from bjexp.sample import scored_rows
    from bjexp.workflow import load_data

    run = tmp_path / "run"
    r = _train(["method=instructpix2pix", *SD15_TINY, f"paths.assets_dir={fake_folders}"], cache_dir, run)
    assert r.returncode == 0, r.stderr[-4000:]
    os.environ["BJEXP_CACHE"] = str(cache_dir)
    cfg = compose(["method=instructpix2pix", *SD15_TINY, f"paths.assets_dir={fake_folders}", "paths.run_dir=/x"])
    data = load_data(cfg)
    row, second = (int(r) for r in scored_rows(data.df, max_pairs=2))
    pid, text = data.df["pair_id"].iat[row], data.df["text"].iat[row]
    prior = data.tables.images[data.index["prior"][row]]
    ref = StableDiffusionInstructPix2PixPipeline.from_pretrained(fake_folders / "instruct-pix2pix", safety_checker=None,
                                                                requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    lat = ref(text, image=prior[None, None].float().div(255).expand(-1, 3, -1, -1), num_inference_steps=2,
              guidance_scale=7.5, image_guidance_scale=1.5, generator=pair_generator(pid, 0),
              output_type="latent").images
    with torch.no_grad():  # decoded by diffusers' VAE; grey = the mean of its RGB output (docs/models.md)
        rgb = ref.vae.decode(lat / ref.vae.config.scaling_factor).sample
    expected = ((rgb.mean(1)[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    got = read_grey(run / "samples" / f"{pid}.png")
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert got.std() > 0
    other = read_grey(run / "samples" / f"{data.df['pair_id'].iat[second]}.png")  # another pair: other noise
    assert not np.array_equal(got, other)


# -- the miniature world's general domain ------------------------------------------------------------------------
def test_scene_edits_change_one_thing_and_keep_the_rest():
    from bjexp.data import scenes

    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        scene = scenes.random_scene(rng)
        text, edited = scenes.random_edit(scene, rng)
        seen.add(text.split()[0] + (" background" if "background" in text else ""))
        a, b = scenes.render(scene, 64), scenes.render(edited, 64)
        assert not np.array_equal(a, b), text
        if "background" in text:
            assert edited.shapes == scene.shapes and edited.background in text
            continue
        changed = set(scene.shapes) ^ set(edited.shapes)
        (cx, cy), = {scenes.PLACES[s.place] for s in changed}  # every change is at one place
        v, u = np.mgrid[0:64, 0:64] / 64
        far = (np.abs(u - cx) > 0.3) | (np.abs(v - cy) > 0.3)
        assert np.array_equal(a[far], b[far]), text  # texture phase and other shapes untouched
    assert seen == {"add", "remove", "make", "make background"}
    img, caps = scenes.captioned(3, 64, seed=1)
    assert img.shape == (3, 64, 64) and img.dtype == np.uint8 and all(c.endswith("background") for c in caps)
    assert np.array_equal(img, scenes.captioned(3, 64, seed=1)[0])


@pytest.fixture(scope="module")
def general(cache_dir):
    from bjexp.models import general_domain

    cfg = compose(TINY + GENERAL_TINY + ["paths.run_dir=/x"])
    return cfg, general_domain.text_to_image_folder(cfg), general_domain.instruct_pix2pix_folder(cfg)


def test_general_domain_models_are_real_diffusers_folders(general):
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline

    from bjexp.models.pipeline import JourneyPipeline

    cfg, sd, ip2p = general
    t2i = StableDiffusionPipeline.from_pretrained(sd, safety_checker=None, requires_safety_checker=False)
    edit = StableDiffusionInstructPix2PixPipeline.from_pretrained(ip2p, safety_checker=None,
                                                                 requires_safety_checker=False)
    # the miniature world's VAE architecture (read from config), trained on scenes; the UNet's, too
    for vae in (t2i.vae, edit.vae):
        assert list(vae.config.block_out_channels) == list(cfg.model.vae.block_out_channels)
        assert vae.config.in_channels == 1
    assert list(t2i.unet.config.block_out_channels) == list(cfg.model.unet.block_out_channels)
    assert (t2i.unet.config.in_channels, edit.unet.config.in_channels) == (4, 8)
    assert type(t2i.text_encoder).__name__ == "CLIPTextModel" and type(t2i.tokenizer).__name__ == "CLIPTokenizer"
    for (k, a), b in zip(t2i.text_encoder.state_dict().items(), edit.text_encoder.state_dict().values()):
        assert torch.equal(a, b), k  # IP2P keeps SD's CLIP text encoder frozen
    for folder, scheme in ((sd, "text_only"), (ip2p, "concat")):
        pipe = JourneyPipeline.from_pretrained(folder, cfg.sampler)
        assert pipe.scheme.name == scheme and pipe.scheduler.config.timestep_spacing == "leading"
        report = json.loads((folder / "pretrain.json").read_text())
        assert report["unet_loss"]["steps"] == 4 and "unet" in report["timings"]
        assert (folder / "preview.png").is_file()


def test_general_domain_ip2p_folder_samples_like_diffusers(general):
    """The tiny IP2P is a real InstructPix2Pix folder: bjexp's pipeline and diffusers' agree on it."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from bjexp.models.pipeline import JourneyPipeline

    cfg, _, ip2p = general
    ours = JourneyPipeline.from_pretrained(ip2p, cfg.sampler)
    ref = StableDiffusionInstructPix2PixPipeline.from_pretrained(ip2p, safety_checker=None,
                                                                requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    prior = torch.randint(0, 256, (1, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    _, lat = ours(prior, ["make the circle dark"], generators=[torch.Generator().manual_seed(1)], steps=4,
                  image_guidance=1.5, text_guidance=7.5, return_latents=True)
    ref_lat = ref("make the circle dark", image=prior[:, None].float().div(255), num_inference_steps=4,
                  guidance_scale=7.5, image_guidance_scale=1.5, generator=torch.Generator().manual_seed(1),
                  output_type="latent").images
    assert (lat - ref_lat).abs().max() <= 1e-4


def test_general_domain_models_are_cached_by_their_config(general):
    from omegaconf import open_dict

    from bjexp.models import general_domain

    cfg, sd, ip2p = general
    stamp = (sd / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert general_domain.text_to_image_folder(cfg) == sd and general_domain.instruct_pix2pix_folder(cfg) == ip2p
    assert (sd / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    other = cfg.copy()
    with open_dict(other):
        other.model.general.ip2p_steps = 5
    assert general_domain.text_to_image_folder(other) == sd  # the edit settings do not touch the text-to-image model
    with open_dict(other):
        other.model.vae.block_out_channels = [8, 16]
        other.model.general.sd_steps = 2
    assert general_domain._keys(other)[0] != general_domain._keys(cfg)[0]
    assert not list(sd.parent.glob(".*tmp"))  # nothing half-written left behind


def test_the_main_job_does_not_build_the_general_domain(cache_dir, tmp_path, monkeypatch):
    from bjexp.models import general_domain

    def refuse(*a, **k):
        raise AssertionError("the general domain was built")
    monkeypatch.setattr(general_domain, "_build_text_to_image", refuse)
    monkeypatch.setattr(general_domain, "_build_instruct_pix2pix", refuse)
    from bjexp.workflow import load_data

    for name in ("biomedjourney", "roentgen", "identity"):
        cfg = compose(TINY + [f"method={name}", "paths.run_dir=/x"])
        m = build_method(cfg)
        m.check(cfg)
        if m.trains:
            m.build(cfg, load_data(cfg))


@pytest.mark.parametrize("method", ["sd", "instructpix2pix", "instructpix2pix_ft"])
def test_miniature_baseline_end_to_end_on_the_general_domain_models(method, general, cache_dir, tmp_path):
    run = tmp_path / "run"
    r = _train([f"method={method}", *TINY, *GENERAL_TINY, "eval.max_pairs=6"], cache_dir, run)
    assert r.returncode == 0, r.stderr[-4000:]
    results = json.loads((run / "results.json").read_text())
    assert len(list((run / "samples").glob("*.png"))) == results["counts"]["test/n_pairs"] == 6
    _, _, ip2p = general
    if method == "instructpix2pix_ft":
        from diffusers import UNet2DConditionModel

        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        start = UNet2DConditionModel.from_pretrained(ip2p, subfolder="unet")
        w = ckpt["state_dict"]["unet.conv_in.weight"]
        assert w.shape == start.conv_in.weight.shape == (w.shape[0], 8, 3, 3)
        assert ckpt["global_step"] == 6 and not torch.equal(w, start.conv_in.weight)
