"""The one weights registry (bjexp.assets): the table, `require` on tiny random weights in each asset's real
on-disk format loaded by the real loaders, readable errors, checksums recorded at fetch and verified at load,
and the CLI (`list`, `verify`, `fetch`, `record`)."""
from __future__ import annotations

import inspect
import logging
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from conftest import compose

from bjexp import assets
from bjexp.assets import ChecksumError, FetchError, MissingWeightsError
from bjexp.assets.cli import main as cli
from bjexp.eval import fake_weights
from bjexp.models.fake_assets import write_fake_assets, write_tiny_biomedclip

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An assets folder with tiny sd15, instructpix2pix, roentgen and biomedclip folders (no records)."""
    return write_fake_assets(tmp_path_factory.mktemp("assets"), names=("sd15", "instructpix2pix", "roentgen",
                                                                        "biomedclip"))


@pytest.fixture(scope="module")
def xrv_files(tmp_path_factory):
    """Fake xrv weights (DenseNet chex, race, age, sex, ChestX-Det) and Inception, by file name."""
    d = tmp_path_factory.mktemp("xrv-src")
    fake_weights.write_xrv(d)
    fake_weights.write_chestx_det(d)
    fake_weights.write_inception(d)
    return d


# --- the table ---------------------------------------------------------------------------------------------

def test_hub_sources_are_pinned_to_a_commit():
    sources = [s for a in assets.registry().values() for s in a.hub]
    assert {s.repo_id for s in sources} >= {"stable-diffusion-v1-5/stable-diffusion-v1-5", "timbrooks/instruct-pix2pix",
                                            "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"}
    for s in sources:
        assert (s.revision and re.fullmatch(r"[0-9a-f]{40}", s.revision)) or (s.revision is None and s.unpinned), s


def test_every_asset_can_be_obtained_and_every_run_names_known_assets():
    for a in assets.registry().values():
        assert a.downloadable or a.how_to_obtain, a.name
        assert all(n in assets.registry() for n in a.includes)
        for u in a.urls:  # the file name is the URL's: folders torchxrayvision / torch-fidelity fill serve as is
            assert Path(u.relpath).name == u.url.rsplit("/", 1)[1]
    assert not assets.get("roentgen").downloadable  # distributed by Stanford AIMI: a folder + a hint
    for run in assets.RUNS:
        assert run.needs and all(n in assets.registry() for n in run.needs), run
    methods = {r.overrides for r in assets.RUNS}
    assert {"method=sd", "method=instructpix2pix", "method=roentgen_pretrained", "eval=real", "model=sd15"} <= methods


def test_xrv_urls_are_the_ones_the_installed_torchxrayvision_downloads():
    from bjexp.eval.xrv import import_xrv

    xrv = import_xrv()
    with warnings.catch_warnings():
        import torchxrayvision.baseline_models.chestx_det as chestx_det
    for name, a in assets.registry().items():
        if name.startswith("densenet121-res224-"):
            assert a.urls[0].url == xrv.models.model_urls[name]["weights_url"]
    sources = {"race": xrv.baseline_models.emory_hiti, "age": xrv.baseline_models.riken,
               "sex": xrv.baseline_models.mira, "chestx_det": chestx_det}
    for name, module in sources.items():
        assert assets.get(name).urls[0].url in inspect.getsource(module), name


# --- require: errors people can read -----------------------------------------------------------------------

def test_missing_error_is_multiline_and_names_path_and_fetch_command(tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        assets.require("sd15", tmp_path)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert msg.count("\n") >= 2 and "\\n" not in msg
    assert str(tmp_path / "stable-diffusion-v1-5") in msg and f"python -m bjexp.assets --dir {tmp_path} fetch sd15" in msg

    own = tmp_path / "my-sd"  # a user's folder (model.pretrained_path): the command fetches into it
    own.mkdir()
    (own / "model_index.json").write_text("{}")
    with pytest.raises(MissingWeightsError) as e:
        assets.require("sd15", folder=own)
    assert f"python -m bjexp.assets fetch sd15 --folder {own}" in str(e.value)
    assert "unet/config.json" in str(e.value) and "model_index.json," not in str(e.value)

    with pytest.raises(MissingWeightsError) as e:  # no download exists: the message says how to obtain it
        assets.require("roentgen", tmp_path)
    assert str(tmp_path / "roentgen") in str(e.value) and "stanfordmimi.github.io/RoentGen" in str(e.value)

    with pytest.raises(MissingWeightsError) as e:  # a single file: its full path
        assets.require("chestx_det", folder=tmp_path)
    assert str(tmp_path / "pspnet_chestxray_best_model_4.pth") in str(e.value)


def test_user_folder_is_checked_against_the_assets_file_list(models, tmp_path):
    sd, ip2p = models / "stable-diffusion-v1-5", models / "instruct-pix2pix"
    assert assets.check_folder("sd15", sd) == [] and assets.check_folder("instructpix2pix", ip2p) == []
    [p] = assets.check_folder("instructpix2pix", sd)  # an SD folder given as InstructPix2Pix
    assert "in_channels=4, expected 8" in p.detail
    part = tmp_path / "part"
    shutil.copytree(sd, part)
    (part / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    [p] = assets.check_folder("sd15", part)
    assert p.missing == ("unet/diffusion_pytorch_model.safetensors|unet/diffusion_pytorch_model.bin",)
    assert assets.check_folder("sd15", part, subfolders=("vae", "text_encoder")) == []


# --- each asset through require and its real loader --------------------------------------------------------

def test_instructpix2pix_folder_loads_through_require_and_diffusers(models):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from bjexp.models.hf_clip import HFClipTextEncoder
    from bjexp.models.unet import widen_conv_in

    folder = assets.require("instructpix2pix", models)
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
    assert pipe.unet.config.in_channels == 8 and type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert widen_conv_in(pipe.unet, 8) is pipe.unet  # already 8 channels: kept as trained
    enc = HFClipTextEncoder(folder, asset="instructpix2pix")
    for k, v in enc.text.state_dict().items():
        torch.testing.assert_close(v, pipe.text_encoder.state_dict()[k], rtol=0, atol=0)
    assert enc.tokenize(["new effusion"]).shape == (1, 77)


def test_roentgen_folder_loads_through_the_builders(models):
    from bjexp.models.build import build_scheme, build_unet, build_vae, check_weights
    from bjexp.models.hf_clip import HFClipTextEncoder

    folder = models / "roentgen"
    cfg = compose(["model=sd15", "encoder=clip", "conditioning=text_only", f"model.pretrained_path={folder}"])
    check_weights(cfg)
    enc = HFClipTextEncoder(assets.require("roentgen", models), asset="roentgen")
    unet = build_unet(cfg, build_scheme(cfg), 4, enc.width, 16)
    assert unet.config.in_channels == 4  # text-to-image: no prior channels
    assert build_vae(cfg).config.latent_channels == 4


def test_chestx_det_loads_through_torchxrayvision_pspnet(xrv_files, tmp_path, monkeypatch):
    from bjexp.eval.xrv import import_xrv

    xrv = import_xrv()
    monkeypatch.setattr(xrv.utils, "download", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(MissingWeightsError, match="fetch chestx_det"):
        assets.require("chestx_det", folder=tmp_path)
    shutil.copy(xrv_files / assets.get("chestx_det").file, tmp_path)
    folder = assets.require("chestx_det", folder=tmp_path)
    with warnings.catch_warnings():
        from torchxrayvision.baseline_models.chestx_det import PSPNet
    net = PSPNet(cache_dir=str(folder))  # xrv's own loader: torch.load(weights_only=True) + 'module.' stripped
    saved = torch.load(tmp_path / assets.get("chestx_det").file, weights_only=True)
    assert len(saved) == len(net.model.state_dict())
    for k, v in list(net.model.state_dict().items())[:: 50]:
        torch.testing.assert_close(v, saved[f"module.{k}"], rtol=0, atol=0)


# --- checksums: recorded at fetch, verified at load ----------------------------------------------------------

def _fake_url_download(src: Path, calls: list):
    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        shutil.copy(src / url.rsplit("/", 1)[1], dst)
    return download


def test_fetch_records_checksums_and_xrv_load_verifies_them(xrv_files, tmp_path, monkeypatch, capsys):
    import torch.hub

    from bjexp.eval.xrv import XRVPredictor

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", _fake_url_download(xrv_files, calls))
    assert cli(["--dir", str(tmp_path), "fetch", "eval"]) == 0
    eval_files = [assets.get(n).urls[0] for n in assets.get("eval").includes]
    assert calls == [(u.url, u.published) for u in eval_files]  # Inception's published prefix is checked
    rec = assets.read_record(tmp_path / "xrv")
    race = tmp_path / "xrv" / assets.get("race").file
    assert rec["sha256"][race.name] == assets.sha256(race) and rec["sources"][race.name].startswith("https://")
    assert cli(["--dir", str(tmp_path), "fetch", "eval"]) == 0 and len(calls) == len(eval_files)  # present: no-op

    XRVPredictor(cache_dir=str(tmp_path / "xrv"), progress=False)  # verified and loaded
    with open(race, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ChecksumError) as e:
        XRVPredictor(cache_dir=str(tmp_path / "xrv"), progress=False)
    assert str(race) in str(e.value) and "recorded" in str(e.value) and "fetch race" in str(e.value)
    capsys.readouterr()
    assert cli(["--dir", str(tmp_path), "verify", "--checksums"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^CORRUPT\s+race", out, re.M) and str(race) in out
    assert re.search(r"^ok\s+sex", out, re.M) and re.search(r"^  no   eval=real ", out, re.M)


def test_hand_filled_folder_recorded_then_verified(models, tmp_path, capsys):
    root = tmp_path / "assets"
    shutil.copytree(models / "roentgen", root / "roentgen")
    assert cli(["--dir", str(root), "record", "roentgen"]) == 0
    assert assets.require("roentgen", root) == root / "roentgen"
    cfg_file = root / "roentgen" / "unet" / "config.json"
    cfg_file.write_text(cfg_file.read_text().replace('"in_channels": 4', '"in_channels": 4 '))
    with pytest.raises(ChecksumError) as e:
        assets.require("roentgen", root, subfolders=("unet",))
    assert str(cfg_file) in str(e.value) and "record roentgen" in str(e.value)
    assert assets.require("roentgen", root, subfolders=("vae",))  # only what is loaded is checked


def test_pickle_without_any_checksum_loads_with_a_warning(xrv_files, tmp_path, caplog):
    shutil.copy(xrv_files / assets.get("sex").file, tmp_path)
    with caplog.at_level(logging.WARNING, logger="bjexp.assets.local"):
        assets.require("sex", folder=tmp_path)
    assert f"record sex --folder {tmp_path}" in caplog.text and "unpickled" in caplog.text
    assert cli(["record", "sex", "--folder", str(tmp_path)]) == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bjexp.assets.local"):
        assets.require("sex", folder=tmp_path)
    assert caplog.text == ""  # recorded now: verified, no warning


def test_corrupt_published_checksum_is_named(xrv_files, tmp_path):
    shutil.copy(xrv_files / assets.get("inception").file, tmp_path)  # random weights at the published name
    with pytest.raises(ChecksumError, match="6726825d") as e:
        assets.require("inception", folder=tmp_path)
    assert str(tmp_path / assets.get("inception").file) in str(e.value)


# --- fetch: all or nothing, pinned, one line when it cannot ---------------------------------------------------

def test_hub_fetch_is_pinned_all_or_nothing_and_recorded(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def fake_snapshot(repo_id, revision, allow_patterns, local_dir):
        calls.append((repo_id, revision))
        if repo_id.startswith("microsoft/BiomedCLIP"):
            write_tiny_biomedclip(local_dir)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    dest = assets.fetch("biomedclip", tmp_path)
    assert calls == [(s.repo_id, s.revision) for s in assets.get("biomedclip").hub]
    rec = assets.read_record(dest)
    assert rec["sha256"]["vocab.txt"] == assets.sha256(dest / "vocab.txt")
    assert rec["sources"]["vocab.txt"].endswith("@9f341de24bfb00180f1b847274256e9b65a3a32e")
    assert assets.checksum_failures("biomedclip", assets_dir=tmp_path) == []

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: None)  # an empty download
    with pytest.raises(FetchError, match="lacks"):
        assets.fetch("sd15", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["biomedclip"]  # no half-written folder left behind


def test_fetch_without_network_is_one_line(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(*a, **k):
        raise ConnectionError("Failed to resolve 'huggingface.co'\nlong\ntraceback")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    assert cli(["--dir", str(tmp_path), "fetch", "instructpix2pix"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ConnectionError" in err and str(tmp_path / "instruct-pix2pix") in err
    assert not (tmp_path / "instruct-pix2pix").exists()


@pytest.mark.parametrize("args", [["fetch", "nope"], ["fetch", "sd15"], ["fetch", "roentgen"]])
def test_fetch_unknown_offline_or_undownloadable_is_one_line_no_traceback(tmp_path, args):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "bjexp.assets", "--dir", str(tmp_path), *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert {"nope": "unknown asset", "sd15": "offline", "roentgen": "stanfordmimi"}[args[1]] in r.stderr


# --- verify / list --------------------------------------------------------------------------------------------

def test_verify_names_the_runs_the_present_assets_enable(models, tmp_path, capsys):
    assert cli(["--dir", str(tmp_path), "verify"]) == 0  # a report: nothing was required
    out = capsys.readouterr().out
    assert f"python -m bjexp.assets --dir {tmp_path} fetch sd15" in out and not re.search(r"^\s+yes ", out, re.M)
    assert cli(["--dir", str(tmp_path), "verify", "sd15"]) == 1

    assert cli(["--dir", str(models), "verify", "sd15", "biomedclip", "instructpix2pix", "roentgen"]) == 0
    out = capsys.readouterr().out
    for run in ("model=sd15", "model=sd15 encoder=clip", "method=sd", "method=instructpix2pix",
                "method=instructpix2pix_ft", "method=roentgen_pretrained"):
        assert re.search(rf"^  yes  {re.escape(run)}\s", out, re.M), run
    assert re.search(r"^  no   eval=real\s.*\[needs eval\]", out, re.M)

    assert cli(["--dir", str(models), "verify", "instructpix2pix", "--folder", str(models / "stable-diffusion-v1-5")]) == 1
    assert "in_channels=4, expected 8" in capsys.readouterr().out


def test_list_shows_pinned_sources_and_how_to_obtain(capsys, tmp_path):
    assert cli(["--dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    for a in assets.registry().values():
        assert f"{a.name}" in out
        for s in a.hub:
            assert f"{s.repo_id}@{s.revision}" in out
    assert "pspnet_chestxray_best_model_4.pth" in out and "stanfordmimi.github.io/RoentGen" in out


def test_fake_writers_cover_every_model_asset():
    from bjexp.models.fake_assets import WRITERS

    folder_assets = {n for n, a in assets.registry().items() if a.hub or (a.required and not a.urls)}
    assert folder_assets <= set(WRITERS)
