"""Patient journeys from MIMIC-CXR metadata: one image per study, studies in time order, consecutive pairs.

Rules (each removal is counted with its reason):
1. Views: a blank ViewPosition is recovered from ViewCodeSequence_CodeMeaning when possible ('postero-anterior'
   -> PA, ...); images whose view is not in `views` are dropped.
2. One image per study: the first by (rank of its view in `views`, dicom_id) — deterministic and documented.
3. Studies are ordered by (StudyDate + StudyTime, study_id); study ids are not chronological, so the id only
   breaks ties. Studies of one patient at the same timestamp: the lowest study_id is kept, the others dropped.
4. Consecutive remaining studies of a patient form (prior -> current) pairs; a pair is kept only if
   min_gap_days <= gap_days <= max_gap_days. Pairs are not re-formed around a dropped pair (no skipping).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bjexp.data.mimic.counts import Counts

NS_PER_DAY = 86400 * 10**9
# ViewCodeSequence_CodeMeaning (upper-cased) -> ViewPosition vocabulary.
VIEW_CODE_MEANING = {
    "POSTERO-ANTERIOR": "PA", "ANTERO-POSTERIOR": "AP", "LATERAL": "LATERAL", "LEFT LATERAL": "LL",
    "RIGHT LATERAL": "RL", "LEFT ANTERIOR OBLIQUE": "LAO", "RIGHT ANTERIOR OBLIQUE": "RAO",
}


def _codes_and_names(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    c = col.astype("category")
    return c.cat.codes.to_numpy(), [str(x) for x in c.cat.categories]


def select_images(meta: pd.DataFrame, views: list[str], counts: Counts, from_code_meaning: bool = True) -> pd.DataFrame:
    """Image rows -> one row per study with an allowed view (columns of `meta` + view resolved).

    Works on category codes (a handful of view names), never on 377k strings, to stay fast."""
    views = [v.upper() for v in views]
    counts.read["images"] = len(meta)
    counts.read["studies"] = int(meta["study_id"].nunique())
    counts.read["patients"] = int(meta["subject_id"].nunique())
    codes, names = _codes_and_names(meta["view"])
    rank_of = np.array([views.index(n) if n in views else np.nan for n in names] + [np.nan])
    rank = rank_of[codes]  # code -1 (NaN category) -> last entry
    blank = np.isin(codes, [i for i, n in enumerate(names) if n == ""] + [-1])
    if from_code_meaning and blank.any():
        vc_codes, vc_names = _codes_and_names(meta["view_code"])
        recovered_of = np.array([VIEW_CODE_MEANING.get(n, "") for n in vc_names] + [""], dtype=object)
        recovered = recovered_of[vc_codes[blank]]
        counts.notes["images: blank ViewPosition recovered from ViewCodeSequence_CodeMeaning"] = int(
            (recovered != "").sum())
        rank[blank] = np.array([views.index(v) if v in views else np.nan for v in recovered])
        blank[np.flatnonzero(blank)[recovered != ""]] = False
    counts.remove("images", "blank ViewPosition (unrecoverable)", blank.sum())
    keep = ~np.isnan(rank)
    counts.remove("images", f"view not in {views}", (~keep & ~blank).sum())
    sel = meta.loc[keep].assign(view=np.array(views, dtype=object)[rank[keep].astype(int)], _rank=rank[keep])
    # per study: the best-ranked view, then the lowest dicom_id (strings sorted only where a study has a tie)
    sel = sel.loc[sel["_rank"].to_numpy() == sel.groupby("study_id")["_rank"].transform("min").to_numpy()]
    tie = sel["study_id"].duplicated(keep=False).to_numpy()
    first = pd.concat([sel.loc[~tie], sel.loc[tie].sort_values("dicom_id").drop_duplicates("study_id")])
    counts.remove("images", "extra image of a study (kept the first by view rank, dicom_id)",
                  int(keep.sum()) - len(first))
    first = first.drop(columns="_rank")
    counts.remove("studies", f"no image with a view in {views}", counts.read["studies"] - len(first))
    return first


def order_studies(studies: pd.DataFrame, counts: Counts) -> pd.DataFrame:
    """Sort studies by patient and time (study_id breaks ties); drop same-timestamp duplicates (keep lowest id)."""
    s = studies.sort_values(["subject_id", "timestamp", "study_id"], kind="stable")
    dup = s.duplicated(["subject_id", "timestamp"])
    counts.remove("studies", "same patient and timestamp as a kept study (kept the lowest study_id)", dup.sum())
    return s.loc[~dup].reset_index(drop=True)


def pair_consecutive(studies: pd.DataFrame, counts: Counts, min_gap_days: float = 0.0,
                     max_gap_days: float | None = None) -> pd.DataFrame:
    """Ordered studies -> consecutive (prior, current) pairs with gap_days; gap filters counted."""
    subj = studies["subject_id"].to_numpy()
    n_per = pd.Series(subj).value_counts()
    counts.remove("patients", "only one usable study (no pair)", (n_per == 1).sum())
    same = np.zeros(len(studies), dtype=bool)
    same[1:] = subj[1:] == subj[:-1]
    cur = np.flatnonzero(same)
    prv = cur - 1
    cols = ["study_id", "dicom_id", "view", "timestamp"]
    pairs = pd.DataFrame({"subject_id": subj[cur]})
    for c in cols:
        v = studies[c].to_numpy()
        pairs[f"prior_{c}"] = v[prv]
        pairs[f"current_{c}"] = v[cur]
    pairs["gap_days"] = (pairs["current_timestamp"] - pairs["prior_timestamp"]) / NS_PER_DAY
    counts.read["consecutive pairs"] = len(pairs)
    keep = pairs["gap_days"] >= min_gap_days
    counts.remove("pairs", f"gap < min_gap_days={min_gap_days:g}", (~keep).sum())
    if max_gap_days is not None:
        over = pairs["gap_days"] > max_gap_days
        counts.remove("pairs", f"gap > max_gap_days={max_gap_days:g}", (over & keep).sum())
        keep &= ~over
    return pairs.loc[keep].reset_index(drop=True)


def build_journeys(meta: pd.DataFrame, views: list[str], counts: Counts, *, min_gap_days: float = 0.0,
                   max_gap_days: float | None = None, from_code_meaning: bool = True) -> pd.DataFrame:
    """Image metadata (read_metadata) -> consecutive same-patient study pairs (before splits, texts, images)."""
    studies = select_images(meta, views, counts, from_code_meaning)
    studies = order_studies(studies, counts)
    return pair_consecutive(studies, counts, min_gap_days, max_gap_days)
