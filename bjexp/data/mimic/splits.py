"""Patient-level splits: by MIMIC's patient folder (the paper: p10-p18 train/val, p19 test) or the official file.

The val draw hashes (seed, subject_id), so a patient keeps its split when other filters change the patient set.
No patient is ever in two splits (asserted).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bjexp.data.mimic.counts import Counts
from bjexp.errors import DataError


def patient_folder(subject_id: np.ndarray) -> np.ndarray:
    """MIMIC's files/pXX folder of a subject: 'p' + the first two digits of the 8-digit id."""
    return np.char.add("p", (np.asarray(subject_id) // 1_000_000).astype(str))


def unit_hash(ids: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic uniform [0, 1) per (seed, id): splitmix64 finaliser, vectorised."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def by_patient_folder(pairs: pd.DataFrame, counts: Counts, trainval_folders: list[str], test_folders: list[str],
                      val_fraction: float, seed: int) -> pd.DataFrame:
    overlap = set(trainval_folders) & set(test_folders)
    if overlap:
        raise DataError(f"data.trainval_folders and data.test_folders overlap: {sorted(overlap)}")
    folder = patient_folder(pairs["subject_id"].to_numpy())
    split = np.full(len(pairs), "", dtype=object)
    split[np.isin(folder, test_folders)] = "test"
    tv = np.isin(folder, trainval_folders)
    is_val = unit_hash(pairs["subject_id"].to_numpy(), seed) < val_fraction
    split[tv & is_val] = "val"
    split[tv & ~is_val] = "train"
    outside = split == ""
    tv = f"{trainval_folders[0]}..{trainval_folders[-1]}" if trainval_folders else "none"
    counts.remove("pairs", f"patient folder not in train/val {tv} or test {','.join(test_folders) or 'none'}",
                  outside.sum())
    return pairs.loc[~outside].assign(split=split[~outside])


def official(pairs: pd.DataFrame, counts: Counts, study_split: pd.Series) -> pd.DataFrame:
    """Split of each pair = the official split of its studies (they must agree)."""
    prior = pairs["prior_study_id"].map(study_split)
    current = pairs["current_study_id"].map(study_split)
    missing = prior.isna() | current.isna()
    counts.remove("pairs", "study not in the official split file", missing.sum())
    pairs, prior, current = pairs.loc[~missing], prior[~missing], current[~missing]
    disagree = prior != current
    if disagree.any():
        ex = pairs.loc[disagree, ["subject_id", "prior_study_id", "current_study_id"]].head(3).to_dict("records")
        raise DataError(f"official split puts studies of one patient in different splits, e.g. {ex}")
    return pairs.assign(split=current.to_numpy())


def assert_patient_disjoint(pairs: pd.DataFrame) -> None:
    n = pairs.groupby("subject_id")["split"].nunique()
    if (n > 1).any():
        raise AssertionError(f"patients in more than one split: {n[n > 1].index[:5].tolist()}")
