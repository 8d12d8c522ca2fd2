"""`data=real_pairs`: the real same-patient CXR series of ../shared/data/real-cxr/pairs.csv as a journey manifest.

Not MIMIC (mostly COVID-19 bedside AP films), but real pixels through the same image store, so registration,
training and evaluation can run end to end on real radiographs without MIMIC access. The pairs have no reports:
the text is `data.text_template` over the pair's columns (e.g. '{finding} follow-up after {delta_days:g} days').
Splits are by patient (seeded hash); sex and age come from mhh_covid19/metadata.csv where present.

    python -m bjexp.prepare data=real_pairs data.root=../shared/data/real-cxr
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from bjexp.data import manifest
from bjexp.data.image_store import build_store
from bjexp.data.mimic.splits import unit_hash
from bjexp.errors import UserError
from bjexp.io import atomic_write, cache_lock, config_hash, files_hash, stat_fingerprint

log = logging.getLogger(__name__)
REQUIRED = ["pair_id", "patient_id", "prior_file", "current_file", "delta_days"]


class RealPairsError(UserError, ValueError):
    pass


def split_by_patient(patients: pd.Series, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    ids = np.array([int(hashlib.sha256(str(p).encode()).hexdigest()[:15], 16) for p in patients], dtype=np.uint64)
    u = unit_hash(ids, seed)
    return np.where(u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "val", "train"))


def build_manifest(cfg: DictConfig) -> Path:
    d = cfg.data
    if not d.root:
        raise RealPairsError("data=real_pairs needs data.root=<folder with pairs.csv> (e.g. ../shared/data/real-cxr, "
                             "or set BJEXP_REAL_CXR)")
    root = Path(d.root).expanduser()
    src = root / "pairs.csv"
    if not src.is_file():
        raise RealPairsError(f"{src}: not found (data.root should hold pairs.csv)")
    store_dir = Path(cfg.paths.cache_dir).expanduser() / "real_pairs" / config_hash(str(root.resolve()), d.image_size)
    plain = {k: v for k, v in OmegaConf.to_container(d, resolve=True).items() if k != "workers"}
    pairs = pd.read_csv(src, dtype={"patient_id": str, "pair_id": str})
    missing = [c for c in REQUIRED if c not in pairs]
    if missing:
        raise RealPairsError(f"{src}: missing column(s) {missing}")
    files = pd.unique(pd.concat([pairs["prior_file"], pairs["current_file"]]))
    # The key covers every image file (size + mtime): a fixed or replaced image makes a new manifest.
    out = store_dir / f"manifest-{config_hash(plain, files_hash([src]), stat_fingerprint(root / f for f in files))}.csv"
    with cache_lock(out):  # a second process preparing it waits, then reuses it
        return out if out.is_file() else _build(d, root, pairs, files, store_dir, out)


def _build(d: DictConfig, root: Path, pairs: pd.DataFrame, files, store_dir: Path, out: Path) -> Path:
    res = build_store([(_key(f), root / f) for f in files], store_dir, d.image_size, workers=d.workers)
    if res.failed:
        with atomic_write(store_dir / "failed_images.csv", "w") as f:
            pd.DataFrame(res.failed, columns=["key", "source", "reason"]).to_csv(f, index=False)
    ok = pairs["prior_file"].map(_key).isin(res.paths) & pairs["current_file"].map(_key).isin(res.paths)
    if (~ok).any():
        log.warning("data=real_pairs: %d pair(s) dropped: image missing or corrupt (%s)", (~ok).sum(),
                    store_dir / "failed_images.csv")
    pairs = pairs.loc[ok].reset_index(drop=True)
    try:
        text = [d.text_template.format(**row) for row in pairs.astype(object).where(pairs.notna(), "").to_dict("records")]
    except (KeyError, ValueError, IndexError) as e:
        raise RealPairsError(f"data.text_template={d.text_template!r}: {e} (columns: {list(pairs.columns)})") from e
    df = pd.DataFrame({
        "pair_id": pairs["pair_id"], "patient_id": pairs["patient_id"],
        "split": split_by_patient(pairs["patient_id"], d.val_fraction, d.test_fraction, d.split_seed),
        "prior_study_id": pairs["prior_file"].map(lambda f: Path(f).stem),
        "current_study_id": pairs["current_file"].map(lambda f: Path(f).stem),
        "prior_path": pairs["prior_file"].map(lambda f: res.paths[_key(f)]),
        "current_path": pairs["current_file"].map(lambda f: res.paths[_key(f)]),
        "text": text,
        "gap_days": pairs["delta_days"],
        "prior_view": pairs.get("prior_view"), "current_view": pairs.get("current_view"),
        "prior_image_hash": pairs["prior_file"].map(lambda f: res.hashes[_key(f)]),
        "current_image_hash": pairs["current_file"].map(lambda f: res.hashes[_key(f)]),
    })
    df = df.join(_attributes(root, pairs))
    manifest.require_splits(df, f"data=real_pairs ({root / 'pairs.csv'})", "nothing was cached")
    manifest.write(df, out)
    log.info("data=real_pairs: %d pairs (%s) -> %s", len(df), df["split"].value_counts().to_dict(), out)
    return out


def _key(file: str) -> str:
    return str(Path(file).with_suffix(""))


def _attributes(root: Path, pairs: pd.DataFrame) -> pd.DataFrame:
    """attr_sex (M/F) and attr_age of the current image, from mhh_covid19/metadata.csv (file column) if present."""
    meta_path = root / "mhh_covid19" / "metadata.csv"
    if not meta_path.is_file():
        return pd.DataFrame(index=pairs.index)
    meta = pd.read_csv(meta_path, usecols=["file", "sex", "age"])
    meta["file"] = "mhh_covid19/" + meta["file"]
    m = meta.drop_duplicates("file").set_index("file").reindex(pairs["current_file"]).set_axis(pairs.index)
    return pd.DataFrame({"attr_sex": m["sex"].str.upper(), "attr_age": m["age"]}, index=pairs.index)
