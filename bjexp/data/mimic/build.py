"""`data=mimic` builder: MIMIC-CXR-JPG download -> image store + journey manifest (cached by content/config hash).

    python -m bjexp.prepare data=mimic paths.mimic_root=/data/mimic-cxr-jpg [describer=impression|llm ...]

Output, under <paths.cache_dir>/mimic/<store key>/ (the store key: source folder, image size and format):
  images/pXX/pSUBJECT/<dicom_id>.png    the preprocessed store, shared by every manifest of that key
  manifest-<key>.csv                    one row per journey; <key> hashes the data + describer config (endpoint
                                        included) and the size/mtime of the input CSVs and of every source image
                                        and report of the journeys, so a changed option, download or fixed image
                                        makes a new one
  manifest-<key>.counts.json            the counts report (rows read, removed per rule, journeys per split) and what
                                        is `incomplete` (LLM requests that failed transiently or were over budget):
                                        an incomplete manifest is rebuilt by the next run, asking for just those
  manifest-<key>.describer_failures.csv pairs whose text could not be made, with the reason
  failed_images.csv                     images that were missing or corrupt

Everything here is MIMIC-derived (report text, pixels): written owner-only, group-readable with
paths.group_readable=true. A build holds a lock per manifest: a second process preparing it waits and reuses it.
An empty train or test split is an error naming the counts, and nothing is cached.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from bjexp.data import manifest
from bjexp.data.mimic import journeys, splits
from bjexp.data.mimic.counts import Counts
from bjexp.data.mimic.layout import image_key, image_path, read_reports, report_path
from bjexp.data.mimic.metadata import (MimicFormatError, find_csv, read_demographics, read_labels, read_metadata,
                                        read_split)
from bjexp.io import Mode, atomic_write, cache_lock, config_hash, makedirs, private_mode, stat_fingerprint

log = logging.getLogger(__name__)
# Options that change how fast, not what: left out of the manifest key (the describer's class is in it by `name`).
RUNTIME_KEYS = {"data": {"images"}, "describer": {"_target_", "concurrency", "max_retries", "backoff_s", "backoff_max_s",
                                                  "timeout_s", "request_budget", "cache_dir", "api_key_env",
                                                  "auth", "trust_env", "circuit_breaker"}}


def _plain(cfg, drop: set[str]) -> dict:
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return {k: v for k, v in d.items() if k not in drop}


def mimic_root(cfg: DictConfig) -> Path:
    root = cfg.data.root
    if not root:
        raise MimicFormatError("no MIMIC-CXR-JPG folder: set paths.mimic_root=/path/to/mimic-cxr-jpg "
                               "(or MIMIC_CXR_ROOT, or data.root)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MimicFormatError(f"MIMIC-CXR-JPG folder not found: {root} (paths.mimic_root / data.root)")
    return root


def build_manifest(cfg: DictConfig) -> Path:
    """The `data.builder` of data=mimic: returns the manifest path (at once when it is already built)."""
    from bjexp.data import describe

    d = cfg.data
    root = mimic_root(cfg)
    cache_dir = Path(cfg.paths.cache_dir).expanduser()
    perms = private_mode(cfg.paths.group_readable)
    describer = describe.build(cfg.describer, cache_dir, perms)  # fails early on a bad describer config
    inputs = [find_csv(root, "metadata"), find_csv(root, d.labels)]
    if d.split == "official":
        inputs.append(find_csv(root, "split"))
    elif d.split != "patient_folder":
        raise MimicFormatError(f"data.split={d.split!r}: expected patient_folder or official")
    if d.demographics:
        inputs.append(Path(d.demographics).expanduser())
    fingerprint = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in inputs if p.exists()]
    fmt = d.images.format
    if fmt not in ("jpg", "dicom"):
        raise MimicFormatError(f"data.images.format={fmt!r}: expected jpg or dicom")
    store_dir = cache_dir / "mimic" / config_hash(str(root.resolve()), d.image_size, fmt, d.images.enabled)
    counts = Counts()
    pairs = build_pairs(root, d, counts)  # metadata only (seconds): it names the files the manifest depends on
    reports_root = Path(d.reports_root).expanduser() if d.reports_root else root
    sources = source_files(pairs, root, reports_root, "dcm" if fmt == "dicom" else "jpg")
    key = config_hash(_plain(d, RUNTIME_KEYS["data"]), _plain(cfg.describer, RUNTIME_KEYS["describer"]), fingerprint,
                      stat_fingerprint(sources))
    out = store_dir / f"manifest-{key}.csv"
    counts_path = manifest.status_path(out)
    for folder in (store_dir.parent, store_dir):  # owner-only (or group) even when made by an older version
        makedirs(folder, perms)
        os.chmod(folder, perms.dir)
    with cache_lock(out):  # a second process preparing the same manifest waits here, then reuses it
        if out.is_file() and counts_path.is_file() and not (cached := Counts.load(counts_path)).incomplete:
            log.info("data=mimic: cached manifest %s", out)
            cached.print()
            return out
        return _build(cfg, pairs, counts, describer, root, reports_root, store_dir, out, perms)


def source_files(pairs: pd.DataFrame, root: Path, reports_root: Path, ext: str) -> list[Path]:
    """Every source image and report file the journeys read (sorted, each once)."""
    files = set()
    for side in ("prior", "current"):
        for subj, study, dicom in zip(pairs["subject_id"], pairs[f"{side}_study_id"], pairs[f"{side}_dicom_id"]):
            files.add(image_path(root, subj, study, dicom, ext))
            files.add(report_path(reports_root, subj, study))
    return sorted(files)


def _build(cfg: DictConfig, pairs: pd.DataFrame, counts: Counts, describer, root: Path, reports_root: Path,
           store_dir: Path, out: Path, perms: Mode) -> Path:
    d = cfg.data
    pairs = add_labels(pairs, read_labels(root, d.labels), counts)
    pairs = add_reports(pairs, reports_root, d.phi_replacement, counts)
    pairs = add_images(pairs, root, store_dir, d, counts, perms)  # before the describer: never pay for a lost pair
    described = describer(pairs)
    failed = described["text_error"].notna()
    counts.remove("pairs", f"describer={cfg.describer.name} could not make a text", failed.sum())
    # reasons grouped by their head ('gave up after 7 attempts; last: HTTP 500: <body>' -> 'gave up after 7 attempts')
    heads = described["text_error"].str.split(";").str[0].str[:80]
    for reason, n in heads[failed].value_counts().items():
        counts.notes[f"describer failure: {reason}"] = int(n)
    for reason, n in heads[failed & described["text_retry"]].value_counts().items():
        counts.incomplete[f"describer: {reason}"] = int(n)
    _write_csv(out.with_suffix(".describer_failures.csv"),
               pairs.loc[failed, ["subject_id", "prior_study_id", "current_study_id"]].assign(
                   reason=described.loc[failed, "text_error"], retried_next_run=described.loc[failed, "text_retry"]),
               perms)
    pairs = pairs.loc[~failed].assign(text=described.loc[~failed, "text"])
    if d.demographics:
        pairs = add_demographics(pairs, read_demographics(Path(d.demographics).expanduser()), counts)
    df = to_manifest(pairs)
    counts.journeys = manifest.split_counts(df)
    counts.print()
    if not counts.incomplete:  # (an incomplete one is rebuilt by the next run, and never trained on)
        manifest.require_splits(df, f"data=mimic ({out.name})",
                                "see the counts above for what removed the rest; nothing was cached")
    manifest.write(df, out, perms)
    counts.write(manifest.status_path(out), perms)  # last: its presence (and no `incomplete`) marks the entry done
    if counts.incomplete:
        log.warning("data=mimic: %s is incomplete (%s); the next run retries exactly those pairs", out,
                    ", ".join(f"{k}: {v}" for k, v in counts.incomplete.items()))
    return out


def build_pairs(root: Path, d: DictConfig, counts: Counts) -> pd.DataFrame:
    """Metadata -> split journeys (the fast path: pandas only, no reports, no pixels)."""
    meta = read_metadata(root)
    if d.limit_patients:
        keep = np.sort(meta["subject_id"].unique())[: int(d.limit_patients)]
        meta = meta.loc[meta["subject_id"].isin(keep)].reset_index(drop=True)
        counts.notes[f"patients kept by data.limit_patients={d.limit_patients}"] = len(keep)
    pairs = journeys.build_journeys(meta, list(d.views), counts, min_gap_days=d.min_gap_days,
                                    max_gap_days=d.max_gap_days, from_code_meaning=d.view_from_code_meaning)
    if d.split == "official":
        pairs = splits.official(pairs, counts, read_split(root))
    else:
        pairs = splits.by_patient_folder(pairs, counts, list(d.trainval_folders), list(d.test_folders),
                                         d.val_fraction, d.split_seed)
    splits.assert_patient_disjoint(pairs)
    return pairs.reset_index(drop=True)


def add_labels(pairs: pd.DataFrame, labels: pd.DataFrame, counts: Counts) -> pd.DataFrame:
    for side in ("prior", "current"):
        ids = pairs[f"{side}_study_id"]
        lab = labels.reindex(ids.to_numpy()).add_prefix(f"{side}_").set_axis(pairs.index)
        lab[f"{side}_has_labels"] = ids.isin(labels.index).to_numpy()
        counts.notes[f"pairs whose {side} study has no label row"] = int((~lab[f"{side}_has_labels"]).sum())
        pairs = pd.concat([pairs, lab], axis=1)
    return pairs


def add_reports(pairs: pd.DataFrame, reports_root: Path, phi_replacement: str, counts: Counts) -> pd.DataFrame:
    studies = pd.concat([pairs[["subject_id", "prior_study_id"]].set_axis(["subject_id", "study_id"], axis=1),
                         pairs[["subject_id", "current_study_id"]].set_axis(["subject_id", "study_id"], axis=1)]
                        ).drop_duplicates("study_id")
    rep = read_reports(reports_root, studies, phi_replacement)
    counts.notes["studies in pairs without a report file"] = int((~rep["found"]).sum())
    counts.notes["reports with neither IMPRESSION nor FINDINGS"] = int(
        (rep["found"] & (rep["impression"] == "") & (rep["findings"] == "")).sum())
    for side in ("prior", "current"):
        r = rep.reindex(pairs[f"{side}_study_id"].to_numpy()).set_axis(pairs.index)
        pairs = pairs.assign(**{f"{side}_impression": r["impression"], f"{side}_findings": r["findings"],
                                f"{side}_report": r["report"], f"{side}_report_found": r["found"]})
    return pairs


def add_demographics(pairs: pd.DataFrame, demo: pd.DataFrame, counts: Counts) -> pd.DataFrame:
    """attr_sex / attr_race / attr_age (age at the current study: anchor_age + year - anchor_year when given)."""
    dm = demo.reindex(pairs["subject_id"].to_numpy()).set_axis(pairs.index)
    counts.notes["pairs whose patient is not in the demographics CSV"] = int(dm.isna().all(axis=1).sum())
    out = {}
    if "sex" in dm:
        out["attr_sex"] = dm["sex"]
    if "race" in dm:
        out["attr_race"] = dm["race"]
    if "anchor_age" in dm:
        year = pd.to_datetime(pairs["current_timestamp"], unit="ns").dt.year
        out["attr_age"] = dm["anchor_age"] + (year - dm["anchor_year"])
    elif "age" in dm:
        out["attr_age"] = dm["age"]
    return pairs.assign(**out)


def add_images(pairs: pd.DataFrame, root: Path, store_dir: Path, d: DictConfig, counts: Counts,
               perms: Mode | None = None) -> pd.DataFrame:
    """Store each source image (or, with images.enabled=false, point at the sources: a metadata-only run keeps every
    pair, whether or not its pixels are on disk) and drop the pairs whose image is missing or corrupt."""
    ext = "dcm" if d.images.format == "dicom" else "jpg"
    src = {}
    for side in ("prior", "current"):
        for subj, study, dicom in zip(pairs["subject_id"], pairs[f"{side}_study_id"], pairs[f"{side}_dicom_id"]):
            src[image_key(subj, dicom)] = image_path(root, subj, study, dicom, ext)
    if not d.images.enabled:
        rel = {k: _relpath(p, store_dir) for k, p in src.items()}
        hashes: dict[str, str] = {}
        failed: list[tuple[str, str, str]] = []
    else:
        res = _store(list(src.items()), store_dir, d, perms)
        rel, hashes, failed = res.paths, res.hashes, res.failed
    bad = {k for k, _, _ in failed}
    _write_csv(store_dir / "failed_images.csv", pd.DataFrame(failed, columns=["key", "source", "reason"]), perms)
    counts.notes["images missing or corrupt"] = len(bad)
    for side in ("prior", "current"):
        keys = [image_key(s, x) for s, x in zip(pairs["subject_id"], pairs[f"{side}_dicom_id"])]
        pairs = pairs.assign(**{f"{side}_path": [str(rel.get(k, "")) for k in keys],
                                f"{side}_image_hash": [hashes.get(k, "") for k in keys], f"_{side}_bad": [
                                    k in bad for k in keys]})
    drop = pairs["_prior_bad"] | pairs["_current_bad"]
    counts.remove("pairs", "prior or current image missing or corrupt (see failed_images.csv)", drop.sum())
    pairs = pairs.loc[~drop].drop(columns=["_prior_bad", "_current_bad"])
    if not d.images.enabled:
        pairs = pairs.drop(columns=["prior_image_hash", "current_image_hash"])
    return pairs


def _store(items, store_dir: Path, d: DictConfig, perms: Mode | None = None):
    from bjexp.data.image_store import build_store

    return build_store(items, store_dir, d.image_size, workers=d.images.workers, perms=perms)


def _relpath(p: Path, start: Path) -> str:
    return os.path.relpath(p, start)


def to_manifest(pairs: pd.DataFrame) -> pd.DataFrame:
    from bjexp.data.findings import CHEXPERT_TO_CANONICAL

    subj = pairs["subject_id"].astype(str)
    df = pd.DataFrame({
        "pair_id": ("p" + subj + "_s" + pairs["prior_study_id"].astype(str)
                    + "_s" + pairs["current_study_id"].astype(str)),
        "patient_id": subj,
        "split": pairs["split"],
        "prior_study_id": pairs["prior_study_id"].astype(str),
        "current_study_id": pairs["current_study_id"].astype(str),
        "prior_path": pairs["prior_path"],
        "current_path": pairs["current_path"],
        "text": pairs["text"],
        "gap_days": pairs["gap_days"].round(4),
        "prior_date": pd.to_datetime(pairs["prior_timestamp"], unit="ns").dt.strftime("%Y-%m-%dT%H:%M:%S"),
        "current_date": pd.to_datetime(pairs["current_timestamp"], unit="ns").dt.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    for side in ("prior", "current"):
        for c in ("dicom_id", "view", "image_hash"):
            if f"{side}_{c}" in pairs:
                df[f"{side}_{c}"] = pairs[f"{side}_{c}"]
    for side in ("prior", "current"):
        for f in CHEXPERT_TO_CANONICAL.values():
            df[f"{side}_{f}"] = pairs[f"{side}_{f}"]
    for c in ("attr_sex", "attr_age", "attr_race"):
        if c in pairs:
            df[c] = pairs[c]
    df["prior_report"] = pairs["prior_report"]
    df["current_report"] = pairs["current_report"]
    return df.reset_index(drop=True)


def _write_csv(path: Path, df: pd.DataFrame, perms: Mode | None = None) -> None:
    with atomic_write(path, "w", perms) as f:
        df.to_csv(f, index=False)
