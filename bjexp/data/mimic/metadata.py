"""Read MIMIC-CXR-JPG's CSVs (metadata, CheXpert/NegBio labels, split, optional demographics) with their real quirks.

Quirks handled here: `.csv` or `.csv.gz`; StudyDate shifted into the 2100s (yyyymmdd int); StudyTime a float
HHMMSS.fff whose leading zeros were lost (80556.875 = 08:05:56.875); blank ViewPosition; label cells
1.0 / 0.0 / -1.0 / blank. A missing column or an unparseable date/time is a `MimicFormatError` naming the file,
the column and example rows. Pure pandas/numpy: no torch on this path (it must stay fast and small).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bjexp.data.findings import CHEXPERT_TO_CANONICAL
from bjexp.errors import UserError

PREFIX = "mimic-cxr-2.0.0"
METADATA_COLUMNS = ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"]
LABEL_COLUMNS = list(CHEXPERT_TO_CANONICAL)  # the 14 CheXpert/NegBio columns


class MimicFormatError(UserError, ValueError):
    """A MIMIC input that is missing or malformed (the message names the file and the column)."""


def find_csv(root: str | Path, name: str) -> Path:
    """`<root>/mimic-cxr-2.0.0-<name>.csv[.gz]` (either compression)."""
    root = Path(root)
    for suffix in (".csv.gz", ".csv"):
        p = root / f"{PREFIX}-{name}{suffix}"
        if p.is_file():
            return p
    raise MimicFormatError(f"{root}: no {PREFIX}-{name}.csv.gz (or .csv); is data.root / paths.mimic_root the "
                           "MIMIC-CXR-JPG folder (the one holding files/ and the CSVs)?")


def _read(path: Path, required: list[str], optional: tuple[str, ...] = (), dtype: dict | None = None) -> pd.DataFrame:
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError) as e:
        raise MimicFormatError(f"{path}: not a readable CSV ({e})") from e
    missing = [c for c in required if c not in header]
    if missing:
        raise MimicFormatError(f"{path}: missing column(s) {missing} (has {list(header)})")
    cols = required + [c for c in optional if c in header]
    try:
        return pd.read_csv(path, usecols=cols, dtype={k: v for k, v in (dtype or {}).items() if k in cols})
    except (ValueError, pd.errors.ParserError) as e:
        raise MimicFormatError(f"{path}: cannot parse ({e}); check the columns {cols}") from e


def _int_ids(df: pd.DataFrame, path: Path, cols: list[str]) -> None:
    for c in cols:
        if not pd.api.types.is_integer_dtype(df[c]):
            num = pd.to_numeric(df[c], errors="coerce")
            bad = df.index[num.isna() | (num % 1 != 0)]
            if len(bad):
                raise MimicFormatError(_bad(path, c, df, bad, "integer ids"))
            df[c] = num.astype(np.int64)


def _bad(path: Path, col: str, df: pd.DataFrame, bad_idx, expected: str) -> str:
    vals = [df.at[i, col] for i in bad_idx[:3]]
    ex = ", ".join(f"line {i + 2}: {v.item() if hasattr(v, 'item') else v!r}" for i, v in zip(bad_idx, vals))
    return f"{path}: column {col!r} has {len(bad_idx)} value(s) that are not {expected} (e.g. {ex})"


def study_timestamps(df: pd.DataFrame, path: Path) -> np.ndarray:
    """StudyDate (yyyymmdd) + StudyTime (HHMMSS.fff float, leading zeros lost) -> int64 ns since epoch."""
    d = pd.to_numeric(df["StudyDate"], errors="coerce")
    days = pd.to_datetime(pd.DataFrame({"year": d // 10000, "month": d // 100 % 100, "day": d % 100}),
                          errors="coerce")
    days[(d % 1 != 0) | (d < 1e7) | (d >= 1e8)] = pd.NaT
    bad = df.index[days.isna()]
    if len(bad):
        raise MimicFormatError(_bad(path, "StudyDate", df, bad, "dates yyyymmdd"))
    t = pd.to_numeric(df["StudyTime"], errors="coerce").to_numpy(dtype=np.float64)
    hh = np.floor(t / 10000)
    mm = np.floor(t / 100) % 100
    ss = t - hh * 10000 - mm * 100
    bad = df.index[~((t >= 0) & (hh < 24) & (mm < 60) & (ss < 60))]  # NaN fails every comparison
    if len(bad):
        raise MimicFormatError(_bad(path, "StudyTime", df, bad, "times HHMMSS[.fff]"))
    secs = hh * 3600 + mm * 60 + ss
    return days.to_numpy(dtype="datetime64[ns]").astype(np.int64) + np.round(secs * 1e9).astype(np.int64)


def read_metadata(root: str | Path) -> pd.DataFrame:
    """One row per image: dicom_id, subject_id, study_id, view (ViewPosition, '' if blank), view_code, timestamp."""
    path = find_csv(root, "metadata")
    df = _read(path, METADATA_COLUMNS, optional=("ViewCodeSequence_CodeMeaning",),
               dtype={"dicom_id": str, "ViewPosition": "category", "ViewCodeSequence_CodeMeaning": "category"})
    _int_ids(df, path, ["subject_id", "study_id"])
    out = pd.DataFrame({
        "dicom_id": df["dicom_id"],
        "subject_id": df["subject_id"],
        "study_id": df["study_id"],
        "view": _clean_category(df["ViewPosition"]),
        "view_code": _clean_category(df.get("ViewCodeSequence_CodeMeaning", pd.Series(np.nan, index=df.index))),
        "timestamp": study_timestamps(df, path),
    })
    out.attrs["source"] = str(path)
    return out


def _clean_category(s: pd.Series) -> pd.Categorical:
    """Category column -> stripped upper-case strings with blanks as '' (work on the few categories, not the rows)."""
    s = s.astype("category")
    names = [str(c).strip().upper() for c in s.cat.categories] + [""]
    uniq = list(dict.fromkeys(names))
    remap = np.array([uniq.index(n) for n in names], dtype=np.int32)
    return pd.Categorical.from_codes(remap[s.cat.codes.to_numpy()], categories=uniq)  # code -1 (blank) -> ''


def read_labels(root: str | Path, source: str = "chexpert") -> pd.DataFrame:
    """study_id-indexed float32 labels (1 / 0 / -1 / NaN) with canonical (xrv) finding names."""
    if source not in ("chexpert", "negbio"):
        raise MimicFormatError(f"data.labels must be chexpert or negbio, got {source!r}")
    path = find_csv(root, source)
    df = _read(path, ["subject_id", "study_id", *LABEL_COLUMNS], dtype={c: "float32" for c in LABEL_COLUMNS})
    _int_ids(df, path, ["study_id"])
    v = df[LABEL_COLUMNS].to_numpy()
    ok = np.isnan(v) | (v == 1) | (v == 0) | (v == -1)
    if not ok.all():
        col = int(np.flatnonzero(~ok.all(axis=0))[0])
        bad = df.index[~ok[:, col]]
        raise MimicFormatError(_bad(path, LABEL_COLUMNS[col], df, bad, "labels 1.0 / 0.0 / -1.0 / blank"))
    if df["study_id"].duplicated().any():
        raise MimicFormatError(f"{path}: column 'study_id' has duplicates, e.g. "
                               f"{df.loc[df['study_id'].duplicated(), 'study_id'].head(3).tolist()}")
    return df.drop(columns="subject_id").set_index("study_id").rename(columns=CHEXPERT_TO_CANONICAL)


def read_split(root: str | Path) -> pd.Series:
    """Official split: study_id -> train | val | test."""
    path = find_csv(root, "split")
    df = _read(path, ["study_id", "split"], dtype={"split": "category"})
    _int_ids(df, path, ["study_id"])
    split = df.drop_duplicates("study_id").set_index("study_id")["split"].astype(str).replace({"validate": "val"})
    bad = sorted(set(split) - {"train", "val", "test"})
    if bad:
        raise MimicFormatError(f"{path}: column 'split' has unknown value(s) {bad}")
    return split


def read_demographics(path: str | Path) -> pd.DataFrame:
    """subject_id-indexed sex, race and age (or anchor_age + anchor_year, for age at each study)."""
    path = Path(path)
    if not path.is_file():
        raise MimicFormatError(f"data.demographics: file not found: {path}")
    header = pd.read_csv(path, nrows=0).columns
    want = [c for c in ("sex", "race", "age", "anchor_age", "anchor_year") if c in header]
    if "subject_id" not in header or not want:
        raise MimicFormatError(f"{path}: needs column 'subject_id' and some of sex, race, age, anchor_age + "
                               f"anchor_year (has {list(header)})")
    if ("anchor_age" in want) != ("anchor_year" in want):
        raise MimicFormatError(f"{path}: columns 'anchor_age' and 'anchor_year' go together (has {list(header)})")
    df = pd.read_csv(path, usecols=["subject_id", *want])
    _int_ids(df, path, ["subject_id"])
    return df.drop_duplicates("subject_id").set_index("subject_id")
