"""Faults, interruptions and bad inputs (issue 16): each test failed before its fix. docs/reliability.md lists the
promises and names these tests."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REPO, TINY, compose
from mimic_fake import CORRUPT_IMAGES, EXPECTED, make_tree
from mimic_fake import build as mimic

from bjexp import io
from bjexp.data import manifest
from bjexp.errors import DataError

PY = sys.executable
TINY_DATA = [o for o in TINY if o.startswith("data.")]


def env(cache: Path | None = None, **extra: str) -> dict:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "BJEXP_PROGRESS": "0", "WANDB_MODE": "offline"}
    e.pop("HYDRA_FULL_ERROR", None)
    if cache is not None:
        e["BJEXP_CACHE"] = str(cache)
    return {**e, **extra}


def bjexp(stage: str, *overrides: str, cache: Path, cwd: Path = REPO, timeout: int = 1800, **extra):
    return subprocess.run([PY, "-m", f"bjexp.{stage}", *overrides], cwd=cwd, env=env(cache, **extra),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("mimic"))


def keys(df: pd.DataFrame) -> set[tuple]:
    return {(int(r.patient_id), int(r.prior_study_id), int(r.current_study_id)) for r in df.itertuples()}


def manifests(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("manifest-*.csv") if p.suffixes == [".csv"]]


def jpeg(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 40)).astype(np.uint8)).save(path, quality=95)


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return f"http://127.0.0.1:{port}/v1/chat/completions"


# ==================================================================================================== data

def test_dead_llm_endpoint_stops_at_once_and_caches_nothing(tree, tmp_path):
    from chat_server import FakeChatServer

    from bjexp.data.describe.llm import LLMDescriber, LLMUnreachable

    dead = closed_port_url()
    d = LLMDescriber(dead, "m", tmp_path / "llm", backoff_s=0.01, backoff_max_s=0.05, concurrency=2)
    with pytest.raises(LLMUnreachable, match="unreachable .*5 connection failures in a row"):
        d(pd.DataFrame({"prior_report": ["a"] * 20, "current_report": [f"b{i}" for i in range(20)]}))
    assert d.requests_sent <= d.circuit_breaker + d.concurrency  # not 20 pairs x 7 attempts

    llm = ["describer=llm", "describer.model=m", "describer.backoff_s=0.01", f"describer.cache_dir={tmp_path / 'llm'}"]
    with pytest.raises(LLMUnreachable):
        mimic(tree, tmp_path / "c", *llm, f"describer.endpoint={dead}")
    assert not manifests(tmp_path / "c")  # no 0-journey manifest cached as good
    with FakeChatServer() as a, FakeChatServer() as b:
        path = mimic(tree, tmp_path / "c", *llm, f"describer.endpoint={a.url}")
        assert len(a.requests) > 0 and manifest.read(path)["text"].str.startswith("CHANGE[").all()
        # the endpoint is part of the key: another server is another manifest (its answers may differ)
        assert mimic(tree, tmp_path / "c", *llm, f"describer.endpoint={b.url}") != path


def test_request_budget_marks_the_manifest_incomplete_and_a_rerun_fills_exactly_the_gaps(tree, tmp_path):
    from chat_server import FakeChatServer

    with FakeChatServer() as server:
        llm = ["describer=llm", f"describer.endpoint={server.url}", "describer.model=m", "describer.concurrency=1",
               "describer.request_budget=3"]
        path = mimic(tree, tmp_path, *llm)  # 5 pairs have both reports: 3 asked, 2 left for the next run
        assert manifest.incomplete(path) == {"describer: request budget (3) exhausted": 2}
        assert len(manifest.read(path)) == 3 and len(server.requests) == 3
        with pytest.raises(DataError, match="incomplete.*run the same command again"):
            manifest.require_complete(path)  # what workflow.load_data does before training on it
        again = mimic(tree, tmp_path, *llm)  # the same command asks for exactly the 2 missing ones
        assert again == path and len(server.requests) == 5 and not manifest.incomplete(path)
        assert len(manifest.read(path)) == 5
        assert mimic(tree, tmp_path, *llm) == path and len(server.requests) == 5  # complete now: reused


def test_a_fixed_image_is_picked_up_by_the_next_build(tree, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(tree, root)
    corrupt = next(root.rglob(f"{next(iter(CORRUPT_IMAGES))}.jpg"))
    first = mimic(root, tmp_path / "c")
    assert (15000077, 55000001, 55000002) not in keys(manifest.read(first))
    assert mimic(root, tmp_path / "c") == first  # nothing changed: reused
    jpeg(corrupt)  # the download is repaired
    fixed = mimic(root, tmp_path / "c")
    assert fixed != first and (15000077, 55000001, 55000002) in keys(manifest.read(fixed))


def test_real_pairs_key_covers_the_images(tmp_path):
    root = tmp_path / "real"
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(16):
        for side in ("a", "b"):
            jpeg(root / "img" / f"{i}{side}.jpg", seed=i)
        rows.append({"pair_id": f"pair{i}", "patient_id": f"pt{i}", "prior_file": f"img/{i}a.jpg",
                     "current_file": f"img/{i}b.jpg", "delta_days": 3})
    pd.DataFrame(rows).to_csv(root / "pairs.csv", index=False)
    (root / "img" / "0a.jpg").write_bytes(b"\xff\xd8 broken")
    cfg = compose(["data=real_pairs", f"data.root={root}", f"paths.cache_dir={tmp_path / 'c'}", "data.image_size=16",
                   "data.text_template='after {delta_days:g} days'"])
    from bjexp.data.real_pairs import build_manifest

    first = build_manifest(cfg)
    assert "pair0" not in set(manifest.read(first)["pair_id"])
    jpeg(root / "img" / "0a.jpg")
    assert "pair0" in set(manifest.read(build_manifest(cfg))["pair_id"])


def test_an_empty_split_is_an_error_naming_it_and_nothing_is_cached(tree, tmp_path):
    with pytest.raises(DataError, match=r"the test split is empty \(journeys per split: train 5, val 0, test 0\)"):
        mimic(tree, tmp_path, "data.test_folders=[p21]")  # nobody in p21
    broken = tmp_path / "broken"
    shutil.copytree(tree, broken)
    for p in broken.rglob("*.jpg"):
        p.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="the train and test splits are empty"):
        mimic(broken, tmp_path)
    assert not manifests(tmp_path)


def test_metadata_only_keeps_the_pairs_whose_pixels_are_absent(tree, tmp_path):
    root = tmp_path / "metadata-only"
    shutil.copytree(tree, root, ignore=shutil.ignore_patterns("*.jpg"))
    df = manifest.read(mimic(root, tmp_path / "c", "data.images.enabled=false"))
    assert keys(df) == {e[:3] for e in EXPECTED} | {(13000055, 53000002, 53000003), (15000077, 55000001, 55000002)}


def test_orphans_of_a_killed_build_are_removed_by_the_next(tmp_path):
    code = ("import sys, time; from bjexp.io import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as tmp:\n"
            "    (tmp / 'half').write_text('x'); print('building', flush=True); time.sleep(120)\n")
    p = subprocess.Popen([PY, "-c", code, str(tmp_path / "entry")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "building"
    p.kill()
    p.wait()
    orphan, = tmp_path.glob(".entry.*.tmp")
    live = tmp_path / f".other.{socket.gethostname().replace('.', '_')}-{os.getppid()}.abc.tmp"  # its owner runs
    old = tmp_path / ".ancient.tmp"
    live.mkdir()
    old.mkdir()
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    io.build_once(tmp_path / "next", lambda t: (t / "done").write_text("1"))
    assert not orphan.exists() and not old.exists() and live.exists() and (tmp_path / "next" / "done").is_file()


@pytest.mark.slow
def test_a_second_process_waits_for_the_entry_lock_and_reuses_the_result(tmp_path):
    from bjexp.data import synthetic

    cfg = compose(TINY_DATA + [f"paths.cache_dir={tmp_path}"])
    world = synthetic.world_dir(cfg)
    with io.cache_lock(world):  # as a first process building the world would hold it
        p = subprocess.Popen([PY, "-m", "bjexp.prepare", *TINY_DATA, f"paths.cache_dir={tmp_path}",
                              f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, env=env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = []
        while not any("waiting for another process that is building" in line for line in seen):
            seen.append(p.stderr.readline())
            assert seen[-1], "".join(seen) + p.communicate()[1]  # it ended without waiting
        with io.atomic_dir(world) as tmp:
            synthetic.generate(cfg.data, tmp, mask_cache=tmp_path / "data")
        stamp = (world / "manifest.csv").stat().st_mtime_ns
    out, err = p.communicate(timeout=1800)
    assert p.returncode == 0, err[-3000:]
    assert f"manifest: {world / 'manifest.csv'}" in out
    assert (world / "manifest.csv").stat().st_mtime_ns == stamp  # reused, not built a second time


@pytest.mark.slow
def test_train_path_on_the_fake_mimic_tree_with_reports_missing(tree, tmp_path):
    """Studies without a report give blank report texts; the tiny encoder pretrains on them (it crashed on NaN)."""
    from omegaconf import open_dict

    from bjexp.workflow import build_module, load_data

    cfg = compose(["data=mimic", f"paths.mimic_root={tree}", f"paths.cache_dir={tmp_path}", "data.image_size=64",
                   "data.val_fraction=0", "model.vae.train_steps=2", "encoder.tiny.pretrain_steps=2",
                   "eval=real", "paths.run_dir=/unused"])
    with open_dict(cfg):
        cfg.eval.predictor = {}  # weights are another test's business; this one is about the data path
        cfg.eval.metrics.fid = None
    data = load_data(cfg)
    assert data.df["current_report"].isna().any()  # the tree has studies without a report
    module = build_module(cfg, data)
    assert module.encoder.width > 0 and data.tables.states is not None


@pytest.mark.slow
def test_train_data_mimic_end_to_end_on_the_fake_tree(tree, tmp_path):
    """`python -m bjexp.train data=mimic` on the fake tree: prepare, tiny models, training, sampling, evaluation with
    real-format (random) xrv weights. It crashed in the tiny encoder on studies without a report."""
    from bjexp.eval import fake_weights

    fake_weights.write_xrv(tmp_path / "xrv")
    fake_weights.write_chestx_det(tmp_path / "xrv")  # the anatomy Dice's segmenter
    run = tmp_path / "run"
    p = bjexp("train", "data=mimic", f"paths.mimic_root={tree}", "data.image_size=64", "data.val_fraction=0",
              "model.vae.train_steps=5", "encoder.tiny.pretrain_steps=2", "model.optim.batch_size=2",
              "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
              "sampler.steps=2", "eval=real", f"eval.weights_dir={tmp_path / 'xrv'}", "eval.verify_checksums=false",
              "eval.metrics.fid=null", "eval.metrics.kid=null", "eval.metrics.prdc=null",  # no Inception weights here
              "eval.n_bootstrap=10", "logger=csv",
              f"hydra.run.dir={run}", cache=tmp_path / "cache", timeout=1800)
    assert p.returncode == 0, p.stderr[-6000:]
    results = json.loads((run / "results.json").read_text())
    # registration (on by default) drops the fake tree's random-noise pairs it cannot align: 1 of the 2 test pairs
    assert results["counts"]["test/n_pairs"] == len(list((run / "samples").glob("*.png"))) >= 1
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


# ==================================================================================================== training

KILL_FIT = REPO / "tests" / "kill_fit.py"


def kill_fit(run_dir: Path, *args: str) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([PY, str(KILL_FIT), str(run_dir), *args], cwd=REPO, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(p: subprocess.Popen, timeout: int = 1800) -> str:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-4000:]
    return out


def wait_held(p: subprocess.Popen, run_dir: Path, timeout: float = 1800) -> None:
    t0 = time.monotonic()
    while not (run_dir / "held").is_file():
        assert p.poll() is None, p.communicate()[0][-4000:]
        assert time.monotonic() - t0 < timeout, "the fit never reached the step to hold at"
        time.sleep(0.1)


def killed_at_step_5(run_dir: Path, sig: int) -> tuple[subprocess.Popen, str]:
    """The tiny fit held after step 5 (checkpoints every 2 steps), then sent `sig`; its process and output."""
    p = kill_fit(run_dir, "--hold-at", "5")
    wait_held(p, run_dir)
    p.send_signal(sig)
    out, _ = p.communicate(timeout=1800)
    return p, out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """8 steps in one go (started in the background; the kill tests run meanwhile)."""
    run = tmp_path_factory.mktemp("uninterrupted")
    p = kill_fit(run)

    def result() -> dict:
        import torch

        if p.returncode is None:
            finish(p)
        return torch.load(run / "final.pt", weights_only=True)
    return result


def assert_same_training(a: dict, b: dict) -> None:
    import torch

    assert a["global_step"] == b["global_step"] == 8 and a["ema_steps"] == b["ema_steps"] == 8
    for k in a["unet"]:
        assert torch.equal(a["unet"][k], b["unet"][k]), k
    for i, (x, y) in enumerate(zip(a["ema"], b["ema"])):
        assert torch.equal(x, y), f"EMA tensor {i}"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k][n], sb[k][n]) for k in sa for n in ("exp_avg", "exp_avg_sq"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_mid_run_then_resumed_equals_the_uninterrupted_run_bit_for_bit(tmp_path, uninterrupted, sig):
    """Killed at step 5 (checkpoints every 2 steps), resumed by rerunning: the raw UNet, the EMA (it lagged one update
    per resume) and Adam's state equal those of 8 uninterrupted steps. SIGTERM (outside SLURM) also saves a checkpoint
    at step 5 and exits 143 (it exited 0 with no checkpoint)."""
    import torch

    run = tmp_path / "run"
    p, out = killed_at_step_5(run, sig)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    if sig == signal.SIGKILL:
        assert p.returncode == -signal.SIGKILL and ckpt["global_step"] == 4  # the last periodic checkpoint
    else:
        assert p.returncode == 143, out[-3000:]
        assert "interrupted by SIGTERM (checkpoint saved at step 5" in out and ckpt["global_step"] == 5
    assert ckpt["ema"]["optimization_step"] == ckpt["global_step"]  # the EMA is saved with its own step
    finish(kill_fit(run))  # rerun: resumes from last.ckpt
    resumed = torch.load(run / "final.pt", weights_only=True)
    assert_same_training(uninterrupted(), resumed)


def test_a_moved_run_dir_resumes_into_its_own_last_checkpoint(tmp_path, uninterrupted):
    """Killed at step 5, the run dir moved (a copy to scratch, a renamed study), resumed there: last.ckpt itself is
    updated (Lightning's version counter wrote last-v1.ckpt beside it, so a later rerun resumed from the stale one)
    and the training equals the uninterrupted run's."""
    import torch

    run, moved = tmp_path / "run", tmp_path / "moved"
    killed_at_step_5(run, signal.SIGKILL)
    shutil.move(run, moved)
    finish(kill_fit(moved))
    assert sorted(f.name for f in (moved / "checkpoints").glob("*.ckpt")) == ["last.ckpt"]
    assert torch.load(moved / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 8
    assert_same_training(uninterrupted(), torch.load(moved / "final.pt", weights_only=True))


def test_a_full_disk_during_a_checkpoint_save_keeps_the_good_checkpoint(tmp_path):
    """A real full disk: the run dir is an 8 MiB tmpfs (private mount namespace); $TMPDIR is elsewhere, as on most
    clusters. The next checkpoint (twice as large) does not fit: the save fails with ENOSPC and the previous
    last.ckpt is intact (Lightning copied the new one over it from $TMPDIR and left it truncated)."""
    if subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("needs unprivileged mount namespaces (unshare) to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"""
import errno, os, sys
sys.path.insert(0, {str(REPO / 'tests')!r})
import torch
from conftest import compose
from tiny_fit import OVERRIDES, tiny_data, tiny_module
from bjexp.workflow import fit, make_trainer
run = {str(disk)!r} + "/run"
cfg = compose(OVERRIDES + ["trainer.max_steps=2", "paths.run_dir=/unused"])
data = tiny_data()
module = tiny_module(cfg, data)
trainer = fit(cfg, module, data, run, loggers=[])
last = run + "/checkpoints/last.ckpt"
good = open(last, "rb").read()
save = module.on_save_checkpoint
module.on_save_checkpoint = lambda ck: (save(ck), ck.update(extra=torch.zeros(len(good) // 4)))  # the next one: 2x
st = os.statvfs({str(disk)!r})
with open({str(disk)!r} + "/filler", "wb") as f:  # leave room for half a checkpoint
    f.write(b"0" * (st.f_bavail * st.f_frsize - len(good) // 2))
try:
    trainer.save_checkpoint(last)
    print("SAVED")
except OSError as e:
    print("FAILED", errno.errorcode.get(e.errno))
print("INTACT" if open(last, "rb").read() == good else "DAMAGED", torch.load(last, weights_only=True)["global_step"])
print("TEMP LEFT" if [n for n in os.listdir(run + "/checkpoints") if n.endswith(".tmp")] else "CLEAN")
"""
    cmd = f"mount -t tmpfs -o size=8m tmpfs {disk} && exec {PY} -c \"$SCRIPT\""
    p = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", cmd], cwd=REPO,
                       env=env(SCRIPT=script), capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert p.stdout.split()[-5:] == ["FAILED", "ENOSPC", "INTACT", "2", "CLEAN"], p.stdout[-2000:]


def test_a_corrupt_checkpoint_is_an_error_naming_it(tmp_path):
    from tiny_fit import OVERRIDES, tiny_data, tiny_module

    from bjexp.checkpoints import CorruptCheckpointError, last_checkpoint
    from bjexp.workflow import fit

    cfg = compose(OVERRIDES + ["paths.run_dir=/unused"])
    last = last_checkpoint(tmp_path)
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 truncated by a full disk")
    data = tiny_data()
    with pytest.raises(CorruptCheckpointError, match=rf"checkpoint {last} is unreadable .*Move it away"):
        fit(cfg, tiny_module(cfg, data), data, tmp_path, loggers=[])


def recorded_run(run_dir: Path, *overrides: str, cache: Path) -> Path:
    """A run dir as `python -m bjexp.train` leaves it after recording (config.yaml + run.json), without the work."""
    from omegaconf import OmegaConf, open_dict

    from bjexp import runstate
    from bjexp.tracking import runinfo

    cfg = compose(list(overrides) + [f"paths.cache_dir={cache}", f"paths.run_dir={run_dir}"])
    with open_dict(cfg):
        del cfg["hydra"]
    runinfo.record(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)), run_dir)
    runstate.set_status(run_dir, "finished")  # (recorded by this process, which is alive: not "in use")
    return run_dir


def test_a_reused_run_dir_resumes_only_the_same_training(tmp_path):
    from bjexp import runstate
    from bjexp.errors import RunDirError

    run = recorded_run(tmp_path / "run", *TINY, cache=tmp_path)
    (run / "samples").mkdir()
    (run / "samples" / "p0.png").write_bytes(b"old pixels")

    def claim(*overrides):
        cfg = compose(TINY + list(overrides) + [f"paths.cache_dir={tmp_path}", f"paths.run_dir={run}"])
        runstate.claim(cfg, run)

    claim()  # the same config: resume
    claim("eval.n_bootstrap=7", "logger=none", "trainer.num_workers=2")  # no weight depends on these
    lr = re.escape(repr(compose(TINY).model.optim.lr))
    with pytest.raises(RunDirError, match=rf"another config .*model\.optim\.lr: {lr} -> 0\.5; seed: 0 -> 3"):
        claim("model.optim.lr=0.5", "seed=3")
    with pytest.raises(RunDirError, match=r"other sampler settings: sampler\.steps: 2 -> 5\. Add resample=true"):
        claim("sampler.steps=5")
    assert (run / "samples" / "p0.png").is_file()
    claim("sampler.steps=5", "resample=true")
    assert not (run / "samples").exists()  # old samples discarded: they are made again with the new settings


def test_a_run_dir_of_another_config_is_refused_before_any_work_and_left_untouched(tmp_path):
    run = recorded_run(tmp_path / "run", *TINY, cache=tmp_path / "c")
    def files():  # all but Hydra's log, which a refused command may append its message to
        return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".log"}
    before = files()
    p = bjexp("train", *TINY, "model.optim.lr=0.5", f"hydra.run.dir={run}", cache=tmp_path / "c")
    lr = compose(TINY).model.optim.lr
    assert p.returncode == 1 and f"model.optim.lr: {lr!r} -> 0.5" in p.stderr and "Traceback" not in p.stderr
    assert files() == before  # config.yaml, run.json as they were, and no other config written beside them
    assert not (tmp_path / "c").exists()  # no data prepared


def test_run_status_records_finished_failed_and_died(tmp_path):
    from bjexp import runstate

    cfg = compose(["paths.run_dir=" + str(tmp_path / "a")])
    assert runstate.tracked(lambda c: 42, cfg) == 42
    assert json.loads((tmp_path / "a" / "run.json").read_text())["status"] == "finished"
    cfg = compose(["paths.run_dir=" + str(tmp_path / "b")])

    def boom(c):
        raise RuntimeError("disk on fire")
    with pytest.raises(RuntimeError):
        runstate.tracked(boom, cfg)
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["status"] == "failed" and info["error"] == "RuntimeError: disk on fire"
    # a run killed while running (SIGKILL: nothing could record it) is not mistaken for a run in progress
    gone = subprocess.Popen([PY, "-c", "pass"])
    gone.wait()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.json").write_text(json.dumps({"status": "running", "host": socket.gethostname(),
                                                         "pid": gone.pid}))
    assert runstate.status(tmp_path / "c") == "died"


# ==================================================================================================== start-up

def assert_one_message(p: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 1 with the message alone: no traceback frames (Hydra's 10-50 lines are gone)."""
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-4000:]
    assert "Traceback" not in p.stderr and 'File "' not in p.stderr, p.stderr[-4000:]
    assert "\\n" not in p.stderr, p.stderr[-4000:]  # lines, not one repr'd string with literal \n's
    for n in needles:
        assert n in p.stderr, p.stderr[-4000:]


@pytest.mark.parametrize("stage,overrides,needles", [
    ("train", [*(o for o in TINY if not o.startswith(("eval.classifier", "eval.segmenter"))), "eval=real", "paths.assets_dir=/nonexistent"],
     ["missing weights: densenet121-res224-chex", "/nonexistent/xrv", "python -m bjexp.assets --dir /nonexistent fetch race"]),
    ("train", [*TINY, "sampler.scheduler=EulerAncestralDiscreteSchedulr"],
     ["sampler.scheduler='EulerAncestralDiscreteSchedulr' is not a diffusers scheduler"]),
    ("train", [*TINY, "trainer.max_steps=0"], ["trainer.max_steps=0: method=biomedjourney trains"]),
    ("train", [*TINY, "model.optim.lr_schedule=cosin"], ["model.optim.lr_schedule='cosin' is not a diffusers schedule"]),
    ("train", [*TINY, "model.optim.lr_warmup_steps=10"], ["lr_schedule=constant: diffusers' constant schedule has no "
                                                           "warm-up; use lr_schedule=constant_with_warmup"]),
    ("train", [*TINY, "eval.split=train"], ["eval.split='train': a run scores one of val, test"]),
    ("sample", ["run={run}"], ["no checkpoint at {run}/checkpoints/last.ckpt"]),
], ids=["eval-weights", "sampler", "zero-steps", "lr-schedule", "warm-up-ignored", "eval-split",
        "sample-without-checkpoint"])
def test_mistakes_fail_at_start_up_before_any_data_or_model_work(tmp_path, stage, overrides, needles):
    cache = tmp_path / "cache"
    run = recorded_run(tmp_path / "run", *TINY, cache=cache)
    fill = {"run": str(run)}
    p = bjexp(stage, *(o.format(**fill) for o in overrides), f"hydra.run.dir={tmp_path / 'out'}", cache=cache)
    assert_one_message(p, *(n.format(**fill) for n in needles))
    assert not cache.exists()  # nothing was prepared, trained or built


def test_scoring_a_split_the_manifest_lacks_names_what_it_has():
    import pandas as pd

    from bjexp.errors import ConfigError
    from bjexp.sample import scored_rows

    df = pd.DataFrame({"split": ["train", "train", "test"]})
    assert scored_rows(df, "test").tolist() == [2]
    with pytest.raises(ConfigError, match=r"^eval\.split=val: the manifest has no val pairs "
                                          r"\(it has train 2, test 1\); "):
        scored_rows(df, "val")


def test_sampling_a_run_whose_training_has_not_finished_is_refused(tmp_path):
    """`sample run=<dir>` on an interrupted fit would sample its partial checkpoint, and the resumed run would keep
    those samples beside the trained model's: refused, before any data work, until every curriculum stage is done."""
    import torch

    from bjexp.workflow import require_trained

    cache = tmp_path / "cache"
    run = recorded_run(tmp_path / "run", *TINY, cache=cache)
    (run / "checkpoints").mkdir()
    torch.save({"global_step": 3}, run / "checkpoints" / "last.ckpt")  # a readable checkpoint of an unfinished fit
    p = bjexp("sample", f"run={run}", f"hydra.run.dir={tmp_path / 'out'}", cache=cache)
    assert_one_message(p, f"{run} has not finished training (curriculum stages not done: triples)",
                       f"python -m bjexp.train hydra.run.dir={run}")
    assert not cache.exists() and not (run / "samples").exists()
    cfg = compose(TINY)
    (run / "checkpoints" / "stages.json").write_text(json.dumps(["triples"]))  # what fit writes when it is done
    require_trained(cfg, run)
    two = compose([*TINY, "curriculum=two_stage"])
    with pytest.raises(Exception, match="stages not done: single"):
        require_trained(two, run)


def test_a_key_no_schema_knows_is_an_error_also_with_plus(tmp_path):
    p = bjexp("train", "+trainer.max_stps=5", cache=tmp_path)
    assert_one_message(p, "unknown config key: trainer.max_stps", "did you mean trainer.max_steps?")
    from bjexp.schema.strict import unknown_keys

    bad = unknown_keys(compose(["+trainer.max_stps=5", "+model.optim.foo=1", "+bar=1"]))
    assert [(k, schema) for k, schema, _ in bad] == [("model.optim.foo", "OptimConfig"),
                                                     ("trainer.max_stps", "TrainerConfig"), ("bar", "Config")]


def test_expected_errors_are_one_message_unless_HYDRA_FULL_ERROR(tmp_path):
    p = bjexp("prepare", "data=mimic", "paths.mimic_root=/nonexistent", cache=tmp_path)
    assert_one_message(p, "MIMIC-CXR-JPG folder not found: /nonexistent")
    full = bjexp("prepare", "data=mimic", "paths.mimic_root=/nonexistent", cache=tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode == 1 and "Traceback" in full.stderr and "MimicFormatError" in full.stderr


def test_cfg_job_resolve_prints_the_config(tmp_path):
    p = bjexp("train", "--cfg", "job", "--resolve", cache=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "run_dir: null" in p.stdout and f"cache_dir: {tmp_path}" in p.stdout


# (assets: fetch of an unknown name / offline is one line, and checksums recorded at fetch are verified at load:
# tests/test_assets.py)


# ==================================================================================================== data protection

class RecordingProxy:
    """An HTTP 'proxy' that records what reaches it and answers 502."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.hits: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                proxy.hits.append(self.path)
                self.send_response(502)
                self.end_headers()
            do_CONNECT = do_GET = do_POST

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_report_text_goes_to_the_endpoint_only_not_to_proxies(tmp_path, monkeypatch):
    from chat_server import FakeChatServer

    from bjexp.data.describe.llm import LLMDescriber

    proxy = RecordingProxy()
    try:
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(var, proxy.url)
        for var in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(var, raising=False)
        pairs = pd.DataFrame({"prior_report": ["IMPRESSION: effusion."], "current_report": ["IMPRESSION: clear."]})
        with FakeChatServer() as server:
            d = LLMDescriber(server.url, "m", tmp_path / "llm", max_retries=0)
            assert d(pairs)["text"].tolist() == ["CHANGE[IMPRESSION: clear.]"]
            assert len(server.requests) == 1 and proxy.hits == []
            # the check can fail: with trust_env the same request goes to the proxy
            LLMDescriber(server.url, "m", tmp_path / "llm2", max_retries=0, trust_env=True)(pairs)
            assert proxy.hits and len(server.requests) == 1
    finally:
        proxy.close()


def modes(root: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"files": set(), "dirs": set()}
    for p in [root, *root.rglob("*")]:
        if p.name.endswith(".lock"):
            continue
        out["dirs" if p.is_dir() else "files"].add(oct(stat.S_IMODE(p.stat().st_mode)))
    return out


@pytest.mark.parametrize("group", [False, True], ids=["owner-only", "group-readable"])
def test_mimic_derived_files_are_never_world_readable(tree, tmp_path, group):
    from chat_server import FakeChatServer

    from bjexp.registration import register_manifest

    old = os.umask(0o022)  # a usual umask: what bjexp writes must not depend on it
    try:
        with FakeChatServer() as server:
            path = mimic(tree, tmp_path / "cache", "describer=llm", f"describer.endpoint={server.url}",
                         "describer.model=m", f"paths.group_readable={str(group).lower()}")
        cfg = compose(["data=mimic", f"paths.cache_dir={tmp_path / 'cache'}", "registration=affine_ecc",
                       "registration.workers=1", "registration.progress=false"])
        registered = register_manifest(path, cfg)
    finally:
        os.umask(old)
    want = {"files": {"0o640"}, "dirs": {"0o750"}} if group else {"files": {"0o600"}, "dirs": {"0o700"}}
    assert modes(tmp_path / "cache" / "llm") == want  # the LLM cache (full report texts)
    assert modes(path.parent) == want  # manifests with report columns, counts, failures, the image store
    assert "current_report" in manifest.read(registered)
    assert modes(registered.parent) == want  # the registered copy
    records = [p for p in (tmp_path / "cache" / "registration").rglob("*") if p.suffix in (".json", ".png")]
    assert records and {oct(stat.S_IMODE(p.stat().st_mode)) for p in records} == want["files"]  # the pair cache


# ==================================================================================================== registration

POOL_AFTER_THREADS = """
import sys, threading
from pathlib import Path
import numpy as np, pandas as pd, torch, cv2
from omegaconf import OmegaConf
from bjexp.data import manifest as mf
from bjexp.imaging import write_png
from bjexp.registration.base import pose_matrix
from bjexp.registration.known import known_pair, phantom
from bjexp.registration.stage import run
from bjexp.schema.registration import EccConfig


def main(tmp):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        p, c = known_pair(phantom(256, seed=i), pose_matrix(2.0, 1.0, -1.0, 1.01, (64, 64)), 64, rng=rng)
        write_png(tmp / f"p{i}.png", p)
        write_png(tmp / f"c{i}.png", c)
        rows.append({"pair_id": f"pair{i}", "patient_id": f"pt{i}", "split": "train", "prior_study_id": f"a{i}",
                     "current_study_id": f"b{i}", "prior_path": f"p{i}.png", "current_path": f"c{i}.png", "text": ""})
    m = mf.write(pd.DataFrame(rows), tmp / "manifest.csv")
    # the parent has run threads of its own: torch's intra-op pool, OpenCV's pool, and one still busy with both
    torch.set_num_threads(2)
    a = torch.randn(256, 256)
    big = rng.integers(0, 255, (1024, 1024)).astype(np.uint8)
    cv2.setNumThreads(2)
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            cv2.GaussianBlur(big, (31, 31), 5)
            a @ a
    t = threading.Thread(target=busy)
    t.start()
    try:
        for rep in range(8):  # each run starts a new pool of 2 workers (progress bar on: rich's thread runs too)
            reg = OmegaConf.merge(OmegaConf.structured(EccConfig), {"workers": 2, "progress": True})
            out = run(m, OmegaConf.create({"registration": reg, "paths": {"cache_dir": str(tmp / f"cache{rep}")}}))
            print("registered", len(mf.read(out)), flush=True)
    finally:
        stop.set()
        t.join()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
"""


def test_registration_workers_start_cleanly_after_the_parent_ran_threads(tmp_path):
    """With fork, 2 of 3 such runs hung forever (children stuck in cv2.setNumThreads on a lock inherited mid-use)."""
    script = tmp_path / "pool_after_threads.py"
    script.write_text(POOL_AFTER_THREADS)
    p = subprocess.run([PY, str(script), str(tmp_path)], cwd=REPO, env=env(BJEXP_PROGRESS="1"), capture_output=True,
                       text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-4000:]
    assert p.stdout.split("\n").count("registered 12") == 8


def slow_pairs(tmp_path: Path, n: int = 8) -> tuple[Path, dict]:
    """n pairs that take about a second each (SimpleITK, full resolution, no early stop)."""
    from omegaconf import OmegaConf

    from bjexp.imaging import write_png
    from bjexp.registration.base import pose_matrix
    from bjexp.registration.known import known_pair, phantom
    from bjexp.schema.registration import SitkConfig

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        p, c = known_pair(phantom(512, seed=i), pose_matrix(3.0, 2.0, 1.0, 1.02, (256, 256)), 256, rng=rng)
        write_png(tmp_path / f"p{i}.png", p)
        write_png(tmp_path / f"c{i}.png", c)
        rows.append({"pair_id": f"pair{i}", "patient_id": f"pt{i}", "split": "train", "prior_study_id": f"a{i}",
                     "current_study_id": f"b{i}", "prior_path": f"p{i}.png", "current_path": f"c{i}.png", "text": ""})
    m = manifest.write(pd.DataFrame(rows), tmp_path / "manifest.csv")
    reg = OmegaConf.merge(OmegaConf.structured(SitkConfig), {
        "workers": 2, "progress": False, "iterations": 2000, "shrink_factors": [1], "smoothing_sigmas": [0.0],
        "sampling_fraction": 1.0, "min_step": 1e-12, "stall_timeout_s": 0})
    return m, OmegaConf.create({"registration": reg, "paths": {"cache_dir": str(tmp_path / "cache")}})


def _workers_once_a_pair_is_done(tmp_path: Path, run_in_thread) -> list:
    import multiprocessing

    t0 = time.monotonic()
    while not list((tmp_path / "cache").rglob("*.json")):
        assert run_in_thread.is_alive(), "registration ended before a worker could be interrupted"
        assert time.monotonic() - t0 < 600
        time.sleep(0.05)
    return [p for p in multiprocessing.active_children() if "Process" in type(p).__name__]


@pytest.mark.parametrize("how", ["dies", "stalls"])
def test_a_dead_or_stalled_registration_worker_is_an_error_naming_the_pairs(tmp_path, how):
    import threading

    from omegaconf import open_dict

    from bjexp.registration.stage import RegistrationWorkerError, run

    m, cfg = slow_pairs(tmp_path)
    if how == "stalls":
        with open_dict(cfg):
            cfg.registration.stall_timeout_s = 3
    err: list[BaseException] = []

    def go():
        try:
            run(m, cfg)
        except BaseException as e:  # noqa: BLE001 (handed to the test thread)
            err.append(e)
    t = threading.Thread(target=go)
    t.start()
    workers = _workers_once_a_pair_is_done(tmp_path, t)
    assert workers
    for w in workers:  # every worker: whichever holds a pair
        os.kill(w.pid, signal.SIGKILL if how == "dies" else signal.SIGSTOP)
    t.join(timeout=300)
    assert not t.is_alive(), "the driver waits forever"
    assert err and isinstance(err[0], RegistrationWorkerError), err
    msg = str(err[0])
    assert ("a worker process died while registering pair" if how == "dies" else
            "no result for 3 s (registration.stall_timeout_s) from pair") in msg, msg
    assert re.search(r"pair\d \(\S+/p\d\.png <- \S+/c\d\.png\)", msg), msg  # the pair and its files
