"""Real-weight plumbing without real weights: the assets registry/CLI, fail-fast on missing folders, the
BiomedCLIP open_clip format (a faithful tiny fake), and the sd15 model preset."""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import compose

from bjexp import assets as cli
from bjexp.models import assets as reg
from bjexp.models.assets import MissingWeightsError
from bjexp.models.build import build_encoder, build_scheme, build_unet, check_weights
from bjexp.models.fake_assets import write_fake_assets, write_tiny_biomedclip

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
    assert "missing weights" in r.stderr and "python -m bjexp.assets fetch sd15" in r.stderr
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


def test_verify_list_and_checksums(fake_assets, tmp_path, capsys):
    assert cli.main(["--dir", str(tmp_path), "verify"]) == 0  # a report; nothing was required
    assert "fetch sd15" in capsys.readouterr().out
    assert cli.main(["--dir", str(tmp_path), "verify", "sd15"]) == 1
    assert cli.main(["--dir", str(fake_assets), "verify", "sd15", "biomedclip"]) == 0
    assert cli.main(["--dir", str(fake_assets), "list"]) == 0
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in capsys.readouterr().out
    folder = fake_assets / "biomedclip"
    reg.write_record(folder, [{"repo_id": "test"}])
    assert reg.check_record(folder) == []
    (folder / "vocab.txt").write_text((folder / "vocab.txt").read_text() + "extra\n")
    assert reg.check_record(folder) == ["vocab.txt"]
    assert cli.main(["--dir", str(fake_assets), "verify", "--checksums"]) == 1
    (folder / "bjexp-asset.json").unlink()


def test_fetch_downloads_all_or_nothing(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot(repo_id, revision, allow_patterns, local_dir):
        calls.append(repo_id)
        if repo_id.startswith("microsoft/BiomedCLIP"):
            write_tiny_biomedclip(local_dir)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    dest = cli.fetch("biomedclip", tmp_path)
    assert calls == [s.repo_id for s in reg.get("biomedclip").sources]
    assert dest == tmp_path / "biomedclip" and reg.get("biomedclip").missing(tmp_path) == []
    assert reg.check_record(dest) == [] and (dest / "bjexp-asset.json").is_file()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: None)  # an empty download
    with pytest.raises(RuntimeError, match="lacks"):
        cli.fetch("sd15", tmp_path)
    assert not (tmp_path / "stable-diffusion-v1-5").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["biomedclip"]  # no half-written folder left behind


def test_registry_includes_eval_assets_when_that_module_exists(tmp_path, capsys):
    """bjexp.eval.assets (issue 6) supplies `eval` (the default evaluation weights) + optional classifiers;
    verify checks their published checksums."""
    ev = pytest.importorskip("bjexp.eval.assets")
    defaults = [a for a in ev.EVAL_ASSETS.values() if a.default]
    e = reg.registry()["eval"]
    assert set(e.required) == {a.relpath for a in defaults} and "sd15" in reg.registry()
    assert all(n in reg.registry() for n, a in ev.EVAL_ASSETS.items() if not a.default)
    assert e.missing(tmp_path) == sorted(e.required, key=list(e.required).index)
    for a in defaults:  # fill with stand-ins: present, but the published checksums (where known) fail
        (tmp_path / a.relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / a.relpath).write_bytes(b"not the weights")
    assert e.missing(tmp_path) == []
    published = {a.relpath for a in defaults if a.sha256 or a.sha256_prefix}
    assert set(reg.check_asset(e, tmp_path)) == published and published  # Inception's prefix at least
    assert cli.main(["--dir", str(tmp_path), "verify", "--checksums"]) == 1
    assert "CORRUPT  eval" in capsys.readouterr().out


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


def test_fetch_eval_downloads_each_default_url_with_its_checksum(tmp_path, monkeypatch):
    ev = pytest.importorskip("bjexp.eval.assets")
    import torch.hub

    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        Path(dst).write_bytes(b"w")
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    cli.fetch("eval", tmp_path)
    defaults = [a for a in ev.EVAL_ASSETS.values() if a.default]
    assert calls == [(a.url, a.sha256_prefix or a.sha256) for a in defaults]
    assert reg.get("eval").missing(tmp_path) == []
    cli.fetch("eval", tmp_path)  # present files are not downloaded again
    assert len(calls) == len(defaults)
