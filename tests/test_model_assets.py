"""Real-weight plumbing without real weights: fail-fast on missing folders, the BiomedCLIP open_clip format (a
faithful tiny fake), and the sd15 model preset. The registry and its CLI: tests/test_assets.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose

from bjexp.assets import MissingWeightsError
from bjexp.models.build import build_encoder, build_scheme, build_unet, check_weights
from bjexp.models.fake_assets import write_fake_assets

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fake_assets(tmp_path_factory):
    return write_fake_assets(tmp_path_factory.mktemp("assets"))


def test_sd15_preset_is_the_papers_setting():
    cfg = compose(["model=sd15", "encoder=biomedclip", "paths.assets_dir=/A"])
    m = cfg.model
    assert (m.image_size, m.optim.lr, m.optim.ema_decay, m.optim.batch_size, m.gradient_checkpointing) == \
        (256, 1e-4, 0.9999, 32, True)
    assert m.pretrained_path == "/A/stable-diffusion-v1-5"
    assert (cfg.encoder.path, cfg.encoder.max_length, cfg.encoder.family) == ("/A/biomedclip", 256, "hf_bert")
    tiny = compose(["encoder=biomedclip"])  # the specialisation applies only with model=sd15
    assert tiny.encoder.path is None


@pytest.mark.parametrize("overrides,fetch", [(["model=sd15"], "fetch sd15"),
                                             (["model=sd15", "encoder=clip"], "fetch sd15")])
def test_missing_weights_fail_before_any_work_naming_path_and_fetch(tmp_path, overrides, fetch):
    cfg = compose(overrides + [f"paths.assets_dir={tmp_path}"])
    with pytest.raises(MissingWeightsError, match=fetch) as e:
        check_weights(cfg)
    assert str(tmp_path / "stable-diffusion-v1-5") in str(e.value)


def test_missing_biomedclip_named_when_sd15_present(fake_assets, tmp_path):
    import shutil

    shutil.copytree(fake_assets / "stable-diffusion-v1-5", tmp_path / "stable-diffusion-v1-5")
    cfg = compose(["model=sd15", "encoder=biomedclip", f"paths.assets_dir={tmp_path}"])
    with pytest.raises(MissingWeightsError, match="fetch biomedclip") as e:
        check_weights(cfg)
    assert str(tmp_path / "biomedclip") in str(e.value)


def test_train_entry_point_fails_in_seconds_without_weights(tmp_path):
    """The whole job, not a builder: it must stop before data preparation (no manifest, no cache written)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "BJEXP_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "bjexp.train", "model=sd15", f"paths.assets_dir={tmp_path / 'none'}",
                        "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode != 0
    assert "missing weights" in r.stderr and f"python -m bjexp.assets --dir {tmp_path / 'none'} fetch sd15" in r.stderr
    assert not (tmp_path / "cache").exists()


def test_biomedclip_format_loads_offline_through_the_encoder(fake_assets):
    """The real open_clip_config names the hub BERT; the loader must resolve it to the folder (offline), load
    the .bin weights, tokenize with the WordPiece vocab, and mask padding."""
    cfg = compose(["model=sd15", "encoder=biomedclip", f"paths.assets_dir={fake_assets}"])
    enc = build_encoder(cfg, None)
    saved = torch.load(fake_assets / "biomedclip" / "open_clip_pytorch_model.bin", weights_only=True)
    for k, v in enc.text.state_dict().items():
        torch.testing.assert_close(v, saved[f"text.{k}"], rtol=0, atol=0)
    ids = enc.tokenize(["new left pleural effusion", ""])
    assert ids.shape == (2, 256) and enc.max_length == 256 and enc.masked
    vocab = (fake_assets / "biomedclip" / "vocab.txt").read_text().split("\n")
    assert [vocab[i] for i in ids[0, :6]] == ["[CLS]", "new", "left", "pleural", "effusion", "[SEP]"]
    out = enc(ids)
    assert out.states.shape == (2, 256, enc.width) and out.mask.sum(1).tolist() == [6, 2]
    # Padding is masked: extra padding does not change the states of the real tokens.
    short = enc(ids[:1, :32])
    torch.testing.assert_close(short.states[0, :6], out.states[0, :6], rtol=0, atol=1e-5)


def test_sd15_unet_uses_sdpa_attention(fake_assets):
    from diffusers.models.attention_processor import AttnProcessor2_0

    cfg = compose(["model=sd15", "encoder=clip", f"paths.assets_dir={fake_assets}"])
    enc = build_encoder(cfg, None)
    unet = build_unet(cfg, build_scheme(cfg), 4, enc.width, 16)
    procs = unet.attn_processors
    assert procs and all(isinstance(p, AttnProcessor2_0) for p in procs.values())


def test_cross_attention_width_mismatch_is_a_clear_error(fake_assets):
    cfg = compose(["model=sd15", "encoder=clip", f"paths.assets_dir={fake_assets}"])
    with pytest.raises(ValueError, match="cross-attends to 32-d"):
        build_unet(cfg, build_scheme(cfg), 4, 768, 16)


def test_paper_setting_experiment_composes():
    cfg = compose(["experiment=paper_setting", "paths.assets_dir=/A"])
    assert (cfg.model.name, cfg.encoder.name, cfg.encoder.path, cfg.data.name) == ("sd15", "biomedclip", "/A/biomedclip", "mimic")
    assert (cfg.trainer.precision, cfg.model.optim.lr, cfg.model.optim.ema_decay) == ("bf16-mixed", 1e-4, 0.9999)
    assert (cfg.sampler.name, cfg.sampler.steps, cfg.sampler.text_guidance, cfg.sampler.image_guidance) == \
        ("euler_ancestral", 100, 7.5, 1.5)


@pytest.mark.slow
def test_train_end_to_end_on_fake_sd15_and_biomedclip_folders(fake_assets, tmp_path):
    """`python -m bjexp.train model=sd15 encoder=biomedclip` on tiny random weights in the real formats: the
    real-world code path (widened SD UNet, 3-channel VAE, BiomedCLIP folder) trains, samples and evaluates."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "BJEXP_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "bjexp.train", "model=sd15", "encoder=biomedclip",
                        f"paths.assets_dir={fake_assets}", "model.image_size=32", "data.n_patients=60",
                        "data.classifier_images=300", "trainer.max_steps=2", "model.optim.batch_size=4",
                        "sampler.steps=2", "eval.max_pairs=4", "eval.n_bootstrap=10", "eval.classifier.steps=10",
                        "logger=csv", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2 and ckpt["state_dict"]["unet.conv_in.weight"].shape[1] == 8
    assert len(list((tmp_path / "run" / "samples").glob("*.png"))) == 4
