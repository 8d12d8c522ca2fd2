"""The intersection rule: every ablation of a sweep is evaluated on the same pairs.

Registration methods drop different pairs (failures, low scores); comparing a method's metrics on its own survivors
against `none` on all pairs would mix registration quality with pair selection. So every arm of a sweep uses the
pairs kept by *every* arm (the `none` manifest keeps all):

- before training (recommended): `registration.same_pairs_as=[none,affine_ecc]` in every arm; each arm then trains
  and evaluates on the same pairs (`same_pairs` below, called by `register_manifest`);
- after the fact: `python -m bjexp.registration common-pairs OUT.csv MANIFEST [MANIFEST ...]` writes the
  common pair_ids, and `restrict(df, OUT.csv)` applies them to any manifest or result table.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from bjexp.data import manifest as mf
from bjexp.io import atomic_write, config_hash, makedirs, mode_like, write_json


def common_pair_ids(manifests: list[str | Path]) -> list[str]:
    if not manifests:
        raise ValueError("common_pair_ids: no manifests given")
    common: set[str] | None = None
    for p in manifests:
        if not Path(p).is_file():
            raise FileNotFoundError(f"manifest not found: {p}")
        ids = set(pd.read_csv(p, usecols=["pair_id"], dtype={"pair_id": str})["pair_id"])
        common = ids if common is None else common & ids
    return sorted(common or ())


def write_common_subset(manifests: list[str | Path], out: str | Path) -> Path:
    ids = common_pair_ids(manifests)
    with atomic_write(out, "w") as f:
        pd.DataFrame({"pair_id": ids}).to_csv(f, index=False)
    return Path(out)


def restrict(df: pd.DataFrame, subset: str | Path | None) -> pd.DataFrame:
    """Rows of `df` whose pair_id is in the subset file (None = no restriction)."""
    if subset is None:
        return df
    if not Path(subset).is_file():
        raise FileNotFoundError(f"pair subset not found: {subset} "
                                "(write it with python -m bjexp.registration common-pairs)")
    keep = set(pd.read_csv(subset, dtype={"pair_id": str})["pair_id"])
    return df[df["pair_id"].astype(str).isin(keep)].reset_index(drop=True)


def same_pairs(registered: Path, source: Path, cfg: DictConfig, others: list[str]) -> Path:
    """`registered` (this arm's manifest) restricted to the pairs that each option in `others` also keeps, written
    to the cache (paths re-rooted) with `excluded.csv` naming which option dropped each excluded pair."""
    from bjexp.registration import register_manifest
    from bjexp.registration.methods import option_config

    runtime = {k: cfg.registration.get(k) for k in ("workers", "progress")}
    theirs = {}
    for name in others:
        ocfg = OmegaConf.create({"registration": {**option_config(name), **runtime, "same_pairs_as": []},
                                 "paths": OmegaConf.to_container(cfg.paths, resolve=True)})
        theirs[name] = register_manifest(source, ocfg)
    ids = set(common_pair_ids([registered, *theirs.values()]))
    df = mf.read(registered)
    if ids == set(df["pair_id"]):
        return registered
    key = config_hash(mf.file_hash(registered), sorted((n, mf.file_hash(p)) for n, p in theirs.items()))
    out_dir = Path(cfg.paths.cache_dir) / "registration" / "same_pairs" / key
    if (out_dir / "manifest.csv").is_file():
        return out_dir / "manifest.csv"
    kept = df[df["pair_id"].isin(ids)].copy()
    for col in mf.PATH_COLUMNS:  # re-root: paths are relative to the manifest's folder
        kept[col] = [os.path.relpath(p, out_dir) for p in mf.resolve(kept, col)]
    perms = mode_like(registered)  # a copy of MIMIC-derived rows is as private as its source
    makedirs(out_dir, perms)
    kept_by = {n: set(common_pair_ids([p])) for n, p in theirs.items()}
    excluded = [{"pair_id": pid, "dropped_by": ",".join(n for n, k in kept_by.items() if pid not in k)}
                for pid in sorted(set(df["pair_id"]) - ids)]
    with atomic_write(out_dir / "excluded.csv", "w", perms) as f:
        pd.DataFrame(excluded, columns=["pair_id", "dropped_by"]).to_csv(f, index=False)
    write_json(out_dir / "sources.json", {"arm": str(registered), **{n: str(p) for n, p in theirs.items()}}, perms)
    return mf.write(kept.reset_index(drop=True), out_dir / "manifest.csv", perms)
