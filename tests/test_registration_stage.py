"""Manifest-level registration: cached registered manifest, QC columns, drops with reasons, shards, resume,
intersection rule, the Hydra entry point."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from bjexp.data import manifest as mf
from bjexp.imaging import read_grey, write_png
from bjexp.registration import register_manifest, restrict, write_common_subset
from bjexp.registration.base import corner_error, pose_matrix
from bjexp.registration.known import known_pair, phantom
from bjexp.registration.qc import ncc
import bjexp.registration.stage as stage
from bjexp.registration.stage import parse_shard, run
from bjexp.schema.registration import EccConfig, RegistrationConfig, SitkConfig

REPO = Path(__file__).resolve().parents[1]
N = 8
SIZE = 64


@pytest.fixture
def store(tmp_path):
    """A miniature image store: N pairs, the current image moved by a known pose (columns as the synthetic world),
    plus one pair whose current image is unrelated noise."""
    rng = np.random.default_rng(0)
    rows = []
    (tmp_path / "img").mkdir()
    for i in range(N):
        angle, tx, ty, scale = rng.uniform(-4, 4), *rng.uniform(-3, 3, 2), 1 + rng.uniform(-0.04, 0.04)
        truth = pose_matrix(angle, tx, ty, scale, (SIZE, SIZE))
        prior, current = known_pair(phantom(256, seed=i), truth, SIZE, rng=rng)
        if i == N - 1:
            current = rng.integers(0, 256, (SIZE, SIZE)).astype(np.uint8)
        write_png(tmp_path / f"img/p{i}.png", prior)
        write_png(tmp_path / f"img/c{i}.png", current)
        rows.append({"pair_id": f"pair{i}", "patient_id": f"pt{i}", "split": ["train", "val", "test"][i % 3],
                     "prior_study_id": f"s{i}a", "current_study_id": f"s{i}b", "prior_path": f"img/p{i}.png",
                     "current_path": f"img/c{i}.png", "text": "no change", "current_pose_angle": angle,
                     "current_pose_tx": tx, "current_pose_ty": ty, "current_pose_scale": scale})
    return mf.write(pd.DataFrame(rows), tmp_path / "manifest.csv")


def make_cfg(tmp_path, **reg):
    base = OmegaConf.structured(EccConfig if reg.get("method", "ecc") == "ecc" else RegistrationConfig)
    r = OmegaConf.merge(base, {"workers": 1, "progress": False, **reg})
    return OmegaConf.create({"registration": r, "paths": {"cache_dir": str(tmp_path / "cache")}})


def test_none_returns_input(store, tmp_path):
    assert register_manifest(store, make_cfg(tmp_path, method="none", name="none")) == store


def test_registered_manifest_warps_current_into_prior_frame(store, tmp_path):
    out = register_manifest(store, make_cfg(tmp_path))
    df = mf.read(out)
    dropped = pd.read_csv(out.parent / "dropped.csv")
    assert list(dropped["pair_id"]) == [f"pair{N - 1}"] and dropped["reg_drop_reason"][0].startswith("failed")
    assert set(df["pair_id"]) == {f"pair{i}" for i in range(N - 1)}
    assert {"reg_flag", "reg_score", "reg_ssim_before", "reg_ssim_after", "reg_oof", "reg_matrix"} <= set(df.columns)
    for row, prior_p, cur_p in zip(df.itertuples(), mf.resolve(df, "prior_path"), mf.resolve(df, "current_path")):
        truth = pose_matrix(row.current_pose_angle, row.current_pose_tx, row.current_pose_ty,
                            row.current_pose_scale, (SIZE, SIZE))
        assert corner_error(np.array(json.loads(row.reg_matrix)), truth, (SIZE, SIZE)) < 0.5
        prior, warped = read_grey(prior_p), read_grey(cur_p)  # the prior is untouched, the current now matches it
        assert np.array_equal(prior, read_grey(store.parent / f"img/p{row.pair_id[4:]}.png"))
        before = read_grey(store.parent / f"img/c{row.pair_id[4:]}.png")
        assert ncc(prior[6:-6, 6:-6], warped[6:-6, 6:-6]) > max(0.97, ncc(prior, before))
        assert row.reg_ssim_after > row.reg_ssim_before
    summary = json.loads((out.parent / "summary.json").read_text())
    assert summary["complete"] and summary["kept"] == N - 1 and summary["dropped"] == 1


def test_prior_to_current_direction_warps_the_prior(store, tmp_path):
    df = mf.read(register_manifest(store, make_cfg(tmp_path, direction="prior_to_current")))
    assert all(Path(p).name == f"c{pid[4:]}.png" for p, pid in zip(df["current_path"], df["pair_id"]))
    assert all(Path(p).parent.name != "img" for p in df["prior_path"])  # the warped priors live in the cache


def test_min_score_drops_with_reason(store, tmp_path):
    scores = mf.read(register_manifest(store, make_cfg(tmp_path, min_score=-1.0))).set_index("pair_id")["reg_score"]
    cut = float(scores.median())
    out = register_manifest(store, make_cfg(tmp_path, min_score=cut))
    dropped = pd.read_csv(out.parent / "dropped.csv", dtype={"pair_id": str})
    low = dropped[dropped["reg_drop_reason"].str.startswith("low_score")]
    assert set(low["pair_id"]) == set(scores[scores < cut].index)
    assert set(mf.read(out)["pair_id"]) == set(scores[scores >= cut].index)


def test_cache_hit_on_rerun(store, tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path)
    first = register_manifest(store, cfg)
    mtime = first.stat().st_mtime_ns
    monkeypatch.setattr(stage, "_work", _no_registering)
    assert register_manifest(store, cfg) == first and first.stat().st_mtime_ns == mtime
    # a different min_score re-filters from the per-pair cache without registering anything
    assert mf.read(register_manifest(store, make_cfg(tmp_path, min_score=-1.0))) is not None


def _no_registering(*a, **k):
    raise AssertionError("a pair was registered again despite a complete cache")


def test_shard_union_equals_full_run(store, tmp_path, monkeypatch):
    full = mf.read(register_manifest(store, make_cfg(tmp_path / "a")))
    cfg = make_cfg(tmp_path / "b")
    assert run(store, cfg, shard=(0, 2)) is None and run(store, cfg, shard=(1, 2)) is None
    pairs = list((tmp_path / "b" / "cache" / "registration").glob("*/pairs/*/*.json"))
    assert len(pairs) == N
    monkeypatch.setattr(stage, "_work", _no_registering)  # assembling after all shards registers nothing
    union = mf.read(run(store, cfg))
    cols = ["pair_id", "reg_flag", "reg_score", "reg_matrix"]
    pd.testing.assert_frame_equal(full[cols], union[cols])
    for a, b in zip(mf.resolve(full, "current_path"), mf.resolve(union, "current_path")):
        assert np.array_equal(read_grey(a), read_grey(b))


def test_resume_and_missing_image_recorded(store, tmp_path):
    cfg = make_cfg(tmp_path)
    (store.parent / "img/c2.png").rename(store.parent / "img/c2.moved")
    out = register_manifest(store, cfg)
    dropped = pd.read_csv(out.parent / "dropped.csv")
    assert "image file missing" in dropped.set_index("pair_id").loc["pair2", "reg_drop_reason"]
    assert not json.loads((out.parent / "summary.json").read_text())["complete"]
    (store.parent / "img/c2.moved").rename(store.parent / "img/c2.png")
    df = mf.read(register_manifest(store, cfg))  # resumes: only pair2 is new
    assert "pair2" in set(df["pair_id"])


def test_parallel_pool_matches_serial(store, tmp_path):
    serial = mf.read(register_manifest(store, make_cfg(tmp_path / "s")))
    pooled = mf.read(register_manifest(store, make_cfg(tmp_path / "p", workers=2)))
    assert list(serial["reg_matrix"]) == list(pooled["reg_matrix"])


def test_intersection_rule(tmp_path):
    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    pd.DataFrame({"pair_id": ["1", "2", "3"]}).to_csv(a, index=False)
    pd.DataFrame({"pair_id": ["2", "3", "4"]}).to_csv(b, index=False)
    sub = write_common_subset([a, b], tmp_path / "subset.csv")
    df = pd.DataFrame({"pair_id": ["1", "2", "3", "4"], "x": range(4)})
    assert list(restrict(df, sub)["pair_id"]) == ["2", "3"]
    assert restrict(df, None) is df
    p = subprocess.run([sys.executable, "-m", "bjexp.registration", "common-pairs", str(tmp_path / "cli.csv"), str(a),
                        str(b)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and list(pd.read_csv(tmp_path / "cli.csv")["pair_id"]) == [2, 3]
    p = subprocess.run([sys.executable, "-m", "bjexp.registration", "common-pairs", str(tmp_path / "x.csv"),
                        str(tmp_path / "missing.csv")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "manifest not found" in p.stderr and "Traceback" not in p.stderr


def test_parse_shard(monkeypatch):
    assert parse_shard(None) == (0, 1) and parse_shard("2/4") == (2, 4)
    with pytest.raises(ValueError, match="registration.shard"):
        parse_shard("4/4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    assert parse_shard("auto") == (2, 4)


def test_entry_point(store, tmp_path):
    """`python -m bjexp.register` with --shard i/n twice, then unsharded to assemble."""
    args = [sys.executable, "-m", "bjexp.register", "registration=affine_ecc",
            f"registration.manifest={store}", f"paths.cache_dir={tmp_path / 'cache'}", "registration.workers=1",
            f"hydra.run.dir={tmp_path / 'run'}"]
    for extra in (["--shard", "0/2"], ["--shard=1/2"], []):
        p = subprocess.run(args + extra, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
    out = Path(p.stdout.strip().splitlines()[-1])
    assert len(mf.read(out)) == N - 1
    assert len(list((tmp_path / "cache" / "registration").glob("*/pairs/*/*.json"))) == N


def test_same_pairs_as_gives_every_arm_the_same_pairs(store, tmp_path):
    """The intersection rule before training: `none` and `affine_ecc` arms end with identical pair sets (the
    noise pair that ECC drops is excluded from `none` too, with who dropped it)."""
    none = make_cfg(tmp_path, method="none", name="none", same_pairs_as=["none", "affine_ecc"])
    ecc = make_cfg(tmp_path, same_pairs_as=["none", "affine_ecc"])
    a, b = register_manifest(store, none), register_manifest(store, ecc)
    da, db = mf.read(a), mf.read(b)
    assert set(da["pair_id"]) == set(db["pair_id"]) == {f"pair{i}" for i in range(N - 1)}
    excluded = pd.read_csv(a.parent / "excluded.csv")
    assert excluded.to_dict("records") == [{"pair_id": f"pair{N - 1}", "dropped_by": "affine_ecc"}]
    # re-rooted paths still point at the original images (none) and the warped ones (ecc)
    assert all(p.is_file() for d in (da, db) for p in mf.resolve(d, "current_path"))
    assert read_grey(mf.resolve(da, "current_path")[0]).tobytes() == read_grey(store.parent / "img/c0.png").tobytes()


@pytest.mark.parametrize("option", sorted(p.stem for p in (REPO / "conf" / "registration").glob("*.yaml")))
def test_every_option_composes_and_maps_onto_its_registrar(option):
    import dataclasses

    from bjexp.registration import build_registrar
    from bjexp.registration.methods import option_config

    cfg = option_config(option)
    assert cfg["name"] == option
    reg = build_registrar(cfg)
    # every method field of the schema reaches the registrar (no silently ignored setting)
    method_fields = set(cfg) - {f.name for f in dataclasses.fields(RegistrationConfig)}
    assert method_fields <= {f.name for f in dataclasses.fields(reg)}, method_fields


@pytest.mark.parametrize("schema", [RegistrationConfig, EccConfig, SitkConfig])
def test_a_mistyped_key_fails_naming_it(schema):
    with pytest.raises(Exception, match="iteratons"):
        OmegaConf.merge(OmegaConf.structured(schema), {"iteratons": 3})


def test_the_tiny_vae_and_encoder_pretrain_on_unregistered_images_in_every_arm(store, tmp_path):
    """Registration changes what the UNet sees, never the frozen parts: both arms of a registration sweep hand the
    tiny VAE and the tiny encoder the same (prepared, unwarped) images, although their own current images differ."""
    from bjexp.data.datamodule import load_tables
    from bjexp.workflow import Data, pretraining_manifest, vae_training_images

    arms = {}
    for name, cfg in {"none": make_cfg(tmp_path, method="none", name="none"), "ecc": make_cfg(tmp_path)}.items():
        path = register_manifest(store, cfg)
        df = mf.read(path)
        tables, index = load_tables(df, SIZE)
        arms[name] = Data(path, df, tables, index, prepared_path=store)
    train = np.flatnonzero((arms["ecc"].df["split"] == "train").to_numpy())
    warped = arms["ecc"].tables.images[arms["ecc"].index["current"][train]].numpy()
    original = arms["none"].tables.images[arms["none"].index["current"][train]].numpy()
    assert not np.array_equal(warped, original)  # the arms really see different current images
    a, b = (vae_training_images(arms[k], SIZE) for k in ("none", "ecc"))
    assert a.shape == (2 * len(train), SIZE, SIZE) and np.array_equal(a, b)
    pa, pb = (pretraining_manifest(arms[k]) for k in ("none", "ecc"))
    assert pb["current_path"].tolist() == pa["current_path"].tolist() == mf.read(store)["current_path"].tolist()
