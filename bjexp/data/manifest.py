"""The journey manifest: one row per triple (prior study, current study), the contract between all stages.

Synthetic generation and MIMIC ingestion both produce it; registration, training and evaluation read it.
Stored as CSV (human-readable, diff-able); label and attribute columns are flat so pandas reads them typed.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bjexp.errors import DataError, UserError
from bjexp.io import Mode, atomic_write, files_hash

# Identity and split columns.
ID_COLUMNS = ["pair_id", "patient_id", "split", "prior_study_id", "current_study_id"]
# Paths are relative to the manifest's folder (the image store), so a store can move as a whole.
PATH_COLUMNS = ["prior_path", "current_path"]
TEXT_COLUMNS = ["text"]  # the progression description the model is conditioned on
REQUIRED_COLUMNS = ID_COLUMNS + PATH_COLUMNS + TEXT_COLUMNS
# Optional, by convention: prior_<finding> / current_<finding> labels (1.0 / 0.0 / -1.0 uncertain / NaN blank),
# attribute columns attr_<name> (e.g. attr_sex, attr_age, attr_race), prior_report / current_report,
# gap_days, and ground-truth pose columns of the synthetic world (prior_pose_*, current_pose_*).
# Real data (bjexp.data.mimic) adds prior_/current_ dicom_id, view, date and image_hash (sha256 of the stored PNG,
# 16 hex), and writes `<manifest>.counts.json` (rows read / removed / per split) beside the manifest.
SPLITS = ("train", "val", "test")
NEEDED_SPLITS = ("train", "test")  # val may be empty (val_fraction=0): it only gives the validation loss


class ManifestError(UserError, ValueError):
    """A manifest that does not satisfy the contract (names the file and the problem)."""


def label_columns(df: pd.DataFrame, which: str) -> list[str]:
    """Finding names that have a `<which>_<finding>` label column (which = prior | current)."""
    skip = {"path", "study_id", "report", "state", "dicom_id", "view", "image_hash", "date"}
    out = []
    for c in df.columns:
        if c.startswith(which + "_"):
            name = c[len(which) + 1:]
            if name not in skip and not name.startswith("pose_"):
                out.append(name)
    return out


def attribute_columns(df: pd.DataFrame) -> list[str]:
    return [c[len("attr_"):] for c in df.columns if c.startswith("attr_")]


def validate(df: pd.DataFrame, source: str | Path = "<manifest>") -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{source}: missing column(s) {missing}; required: {REQUIRED_COLUMNS}")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise ManifestError(f"{source}: column 'split' has unknown value(s) {bad}; allowed: {list(SPLITS)}")
    if df["pair_id"].duplicated().any():
        dup = df.loc[df["pair_id"].duplicated(), "pair_id"].head(3).tolist()
        raise ManifestError(f"{source}: duplicate pair_id(s), e.g. {dup}")
    leaks = df.groupby("patient_id")["split"].nunique()
    if (leaks > 1).any():
        raise ManifestError(f"{source}: patient(s) in more than one split, e.g. {leaks[leaks > 1].index[:3].tolist()}")
    return df


def read(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path} (run `python -m bjexp.prepare` first)")
    try:
        df = pd.read_csv(path, dtype={"pair_id": str, "patient_id": str, "prior_study_id": str,
                                      "current_study_id": str, "text": str}, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not a readable CSV manifest ({e})") from e
    df["text"] = df["text"].fillna("")
    df.attrs["root"] = str(path.parent)
    df.attrs["source"] = str(path)
    return validate(df, path)


def write(df: pd.DataFrame, path: str | Path, perms: Mode | None = None) -> Path:
    """Validate and write atomically; `perms` for manifests that carry MIMIC-derived text (bjexp.io.private_mode)."""
    validate(df, path)
    path = Path(path)
    with atomic_write(path, "w", perms) as f:
        df.to_csv(f, index=False)
    return path


def split_counts(df: pd.DataFrame) -> dict[str, int]:
    return {s: int((df["split"] == s).sum()) for s in SPLITS}


def require_splits(df: pd.DataFrame, source: str | Path, hint: str = "") -> None:
    """Training needs a train split and evaluation a test split: an empty one is an error naming it and the counts."""
    counts = split_counts(df)
    empty = [s for s in NEEDED_SPLITS if counts[s] == 0]
    if empty:
        raise DataError(f"{source}: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty "
                        f"(journeys per split: {', '.join(f'{k} {v}' for k, v in counts.items())})"
                        + (f"; {hint}" if hint else ""))


def status_path(path: str | Path) -> Path:
    """`<manifest>.counts.json`: the builder's counts report, with what is `incomplete` (empty = complete)."""
    return Path(path).with_suffix(".counts.json")


def incomplete(path: str | Path) -> dict[str, int]:
    """What the builder could not finish for this manifest (e.g. {'describer: request budget': 3}); {} if complete."""
    import json

    p = status_path(path)
    return json.loads(p.read_text()).get("incomplete", {}) if p.is_file() else {}


def require_complete(path: str | Path) -> None:
    missing = incomplete(path)
    if missing:
        raise DataError(f"{path} is incomplete ({', '.join(f'{k}: {n} pairs' for k, n in missing.items())}); run the "
                        "same command again to fill in what is missing (finished work is cached), see "
                        f"{status_path(path)}")


def file_hash(path: str | Path) -> str:
    """Content hash of the manifest file (recorded by every run)."""
    return files_hash([path])


def resolve(df: pd.DataFrame, column: str) -> list[Path]:
    """Absolute paths of an image column (paths are stored relative to the manifest's folder)."""
    root = Path(df.attrs.get("root", "."))
    return [p if (p := Path(v)).is_absolute() else root / p for v in df[column]]
