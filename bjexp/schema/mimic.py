"""Real-data source schemas (`data=mimic`, `data=real_pairs`). Each names its `builder`: fn(cfg) -> manifest path."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class ImageStoreConfig:
    """The preprocessed image store: grey, aspect-preserving resize + center crop to `image_size`, no flips."""
    # Source images: jpg (MIMIC-CXR-JPG) or dicom (MIMIC-CXR: same folder layout, `<dicom_id>.dcm`).
    format: str = "jpg"
    workers: int = 2
    # False: skip pixels (manifest paths point at the source files, relative to the store) — metadata-only runs.
    enabled: bool = True


@dataclass
class MimicDataConfig:
    name: str = "mimic"
    # MIMIC's data use agreement: no derived images to third parties, so none to an online W&B unless
    # logger.log_images=true is set explicitly.
    images_shareable: bool = False
    builder: str = "bjexp.data.mimic.build.build_manifest"
    # Where the MIMIC-CXR-JPG download lives (the CSVs + files/); default: paths.mimic_root.
    root: Optional[str] = "${paths.mimic_root}"
    # Reports (mimic-cxr-reports: files/p1X/pXXXXXXXX/sYYYYYYYY.txt); null = the same root as the images.
    reports_root: Optional[str] = None
    image_size: int = 256
    images: ImageStoreConfig = field(default_factory=ImageStoreConfig)
    # Views kept, in order of preference when a study has several (the paper: PA only).
    views: list[str] = field(default_factory=lambda: ["PA"])
    # Recover a blank ViewPosition from ViewCodeSequence_CodeMeaning (e.g. 'postero-anterior' -> PA).
    view_from_code_meaning: bool = True
    # Consecutive studies are paired only if min_gap_days <= gap <= max_gap_days (null = no bound).
    min_gap_days: float = 0.0
    max_gap_days: Optional[float] = None
    # Label source: chexpert | negbio (mimic-cxr-2.0.0-<labels>.csv).
    labels: str = "chexpert"
    # Split: patient_folder (the paper: p10-p18 train/val, p19 test) | official (mimic-cxr-2.0.0-split.csv).
    split: str = "patient_folder"
    trainval_folders: list[str] = field(default_factory=lambda: [f"p{i}" for i in range(10, 19)])
    test_folders: list[str] = field(default_factory=lambda: ["p19"])
    val_fraction: float = 0.1
    # Seed of the val draw (per-patient hash: a patient keeps its split when other filters change).
    split_seed: int = 0
    # Optional CSV subject_id -> sex, race, age (or anchor_age + anchor_year); see docs/data.md.
    demographics: Optional[str] = None
    # PHI placeholder `___` in reports is replaced by this string (then whitespace is tidied).
    phi_replacement: str = ""
    # Keep only the first N patients (sorted by id) after reading: quick looks at a huge download.
    limit_patients: Optional[int] = None


@dataclass
class RealPairsDataConfig:
    """Real same-patient pairs (../shared/data/real-cxr/pairs.csv) as a manifest: the pipeline on real pixels."""
    name: str = "real_pairs"
    images_shareable: bool = False  # public datasets under their own licences: opt in with logger.log_images=true
    builder: str = "bjexp.data.real_pairs.build_manifest"
    # Folder that holds pairs.csv (+ mhh_covid19/metadata.csv for sex/age).
    root: Optional[str] = "${oc.env:BJEXP_REAL_CXR,null}"
    image_size: int = 256
    workers: int = 2  # image preprocessing threads
    val_fraction: float = 0.15
    test_fraction: float = 0.3
    split_seed: int = 0
    # The pairs have no reports: the text is this template over the pair's columns.
    text_template: str = "{finding} follow-up after {delta_days:g} days"


cs = ConfigStore.instance()
cs.store(group="data", name="base_mimic", node=MimicDataConfig)
cs.store(group="data", name="base_real_pairs", node=RealPairsDataConfig)
