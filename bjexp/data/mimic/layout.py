"""MIMIC-CXR folder layout: files/p1X/pSUBJECT/sSTUDY/<dicom_id>.jpg and the report files/p1X/pSUBJECT/sSTUDY.txt."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from bjexp.data import reports


def folder(subject_id: int) -> str:
    return f"p{int(subject_id) // 1_000_000}"


def study_dir(root: Path, subject_id: int, study_id: int) -> Path:
    return Path(root) / "files" / folder(subject_id) / f"p{int(subject_id)}" / f"s{int(study_id)}"


def image_path(root: Path, subject_id: int, study_id: int, dicom_id: str, ext: str = "jpg") -> Path:
    return study_dir(root, subject_id, study_id) / f"{dicom_id}.{ext}"


def report_path(root: Path, subject_id: int, study_id: int) -> Path:
    return study_dir(root, subject_id, study_id).with_suffix(".txt")


def image_key(subject_id: int, dicom_id: str) -> str:
    """Where a stored image goes inside the store's images/ (sharded by patient folder like the source)."""
    return f"{folder(subject_id)}/p{int(subject_id)}/{dicom_id}"


def read_reports(root: Path, studies: pd.DataFrame, phi_replacement: str = "", workers: int = 8) -> pd.DataFrame:
    """study_id-indexed found / impression / findings / report (sections only, PHI removed) for (subject_id, study_id)
    rows. A missing file gives found=False and empty texts (counted by the caller, not an error)."""
    def one(args: tuple[int, int]) -> tuple[bool, str, str, str]:
        p = report_path(root, *args)
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return False, "", "", ""
        r = reports.parse(text)
        imp = reports.remove_phi(r.impression, phi_replacement)
        fin = reports.remove_phi(r.findings, phi_replacement)
        both = " ".join(x for x in (f"FINDINGS: {fin}" if fin else "", f"IMPRESSION: {imp}" if imp else "") if x)
        return True, imp, fin, both

    keys = list(zip(studies["subject_id"].astype(int), studies["study_id"].astype(int)))
    with ThreadPoolExecutor(workers) as pool:  # file reads: I/O bound (network file systems especially)
        rows = list(pool.map(one, keys))
    return pd.DataFrame(rows, columns=["found", "impression", "findings", "report"],
                        index=pd.Index([s for _, s in keys], name="study_id"))
