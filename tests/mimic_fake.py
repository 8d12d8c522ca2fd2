"""A faithful miniature MIMIC-CXR-JPG tree with the real quirks, and the journeys a person computes by hand from it.

Quirks: dates in the 2100s; StudyTime floats that lost leading zeros (80556.875 = 08:05:56.875); study ids not in
time order; several images per study (a lateral, two PAs); a blank ViewPosition recoverable from
ViewCodeSequence_CodeMeaning and one that is not; two studies at the same timestamp; an AP-only study between PA
studies; reports with an addendum, FINDINGS only, IMPRESSION only, neither, or missing; PHI as `___`;
a patient outside p10-p19; a missing and a corrupt JPEG; a study without a label row.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

NAN = float("nan")
LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
          "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
          "Pneumothorax", "Support Devices"]

# (subject, study, dicom_id, ViewPosition, ViewCodeSequence_CodeMeaning, StudyDate, StudyTime)
IMAGES = [
    # A p10: ids not chronological (56699142 is the earliest); a lateral beside a PA; an AP-only study in between.
    (10000032, 50414267, "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA", "postero-anterior", 21800506, 213014.531),
    (10000032, 50414267, "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL", "lateral", 21800506, 213014.531),
    (10000032, 53189527, "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "PA", "postero-anterior", 21800626, 165500.312),
    (10000032, 59999999, "ffffffff-00000000-00000000-00000000-00000001", "AP", "antero-posterior", 21800701, 101010.0),
    (10000032, 53911762, "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "PA", "postero-anterior", 21800723, 80556.875),
    (10000032, 56699142, "ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c", "PA", "postero-anterior", 21800415, 61232.0),
    # B p11: two studies at the same timestamp; two PA images in one study; a blank view recovered; one not.
    (11000011, 51000001, "bbbbbbbb-0000-0000-0000-000000000002", "PA", "postero-anterior", 21500101, 120000.0),
    (11000011, 51000001, "aaaaaaaa-0000-0000-0000-000000000001", "PA", "postero-anterior", 21500101, 120000.0),
    (11000011, 51000002, "cccccccc-0000-0000-0000-000000000003", "PA", "postero-anterior", 21500101, 120000.0),
    (11000011, 51000003, "dddddddd-0000-0000-0000-000000000004", "", "postero-anterior", 21500103, 93000),
    (11000011, 51000004, "eeeeeeee-0000-0000-0000-000000000005", "", "", 21500103, 100000),
    # C p12: one PA study only.
    (12000022, 52000001, "c0000000-0000-0000-0000-000000000001", "PA", "postero-anterior", 21600101, 10000.5),
    # D p19 (test): three studies, the last three years later (for max_gap_days).
    (19000033, 59000001, "d0000000-0000-0000-0000-000000000001", "PA", "postero-anterior", 21100101, 90000),
    (19000033, 59000002, "d0000000-0000-0000-0000-000000000002", "PA", "postero-anterior", 21100201, 90000),
    (19000033, 59000003, "d0000000-0000-0000-0000-000000000003", "PA", "postero-anterior", 21130101, 90000),
    # E p20: outside the paper's folders.
    (20000044, 50000001, "e0000000-0000-0000-0000-000000000001", "PA", "postero-anterior", 21200101, 90000),
    (20000044, 50000002, "e0000000-0000-0000-0000-000000000002", "PA", "postero-anterior", 21200301, 90000),
    # F p13: the last study's JPEG is missing.
    (13000055, 53000001, "f0000000-0000-0000-0000-000000000001", "PA", "postero-anterior", 21200101, 100000),
    (13000055, 53000002, "f0000000-0000-0000-0000-000000000002", "PA", "postero-anterior", 21200105, 100000),
    (13000055, 53000003, "f0000000-0000-0000-0000-000000000003", "PA", "postero-anterior", 21200110, 100000),
    # G p14: the second study has no label row.
    (14000066, 54000001, "90000000-0000-0000-0000-000000000001", "PA", "postero-anterior", 21200101, 100000),
    (14000066, 54000002, "90000000-0000-0000-0000-000000000002", "PA", "postero-anterior", 21200201, 100000),
    # H p15: the prior JPEG is corrupt.
    (15000077, 55000001, "a0000000-0000-0000-0000-000000000001", "PA", "postero-anterior", 21200101, 100000),
    (15000077, 55000002, "a0000000-0000-0000-0000-000000000002", "PA", "postero-anterior", 21200201, 100000),
]
MISSING_IMAGES = {"f0000000-0000-0000-0000-000000000003"}
CORRUPT_IMAGES = {"a0000000-0000-0000-0000-000000000001"}

# study -> {CheXpert column: value}; studies not listed get all-blank rows (counted as unlabelled by the labels
# describer), 54000002 gets no row at all.
LABEL_VALUES = {
    56699142: {"Pleural Effusion": 1.0},
    50414267: {"Pleural Effusion": 1.0, "Cardiomegaly": -1.0},
    53189527: {"Pleural Effusion": 0.0, "Cardiomegaly": 1.0},
    53911762: {"No Finding": 1.0},
    51000001: {"Edema": 1.0},
    51000003: {"Edema": 1.0, "Pneumothorax": 1.0},
    59000001: {"No Finding": 1.0},
    59000002: {"Consolidation": 1.0},
    59000003: {"Consolidation": 0.0},
    53000001: {"Atelectasis": -1.0},
    53000002: {"Atelectasis": 1.0},
    54000001: {"Support Devices": 1.0},
    53000003: {"Atelectasis": 1.0},
    55000001: {"No Finding": 1.0},
    55000002: {"No Finding": 1.0},
    50000001: {"No Finding": 1.0},
    50000002: {"No Finding": 1.0},
}
NO_LABEL_ROW = {54000002}

HEADER = "                                 FINAL REPORT\n"
REPORTS = {
    # neither FINDINGS nor IMPRESSION (free text under other headers)
    50414267: HEADER + " EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___F with cough\n \n"
                       " PA AND LATERAL VIEWS OF THE CHEST:  The lungs are clear.\n",
    56699142: HEADER + " INDICATION:  ___ year old woman with effusion\n \n COMPARISON:  ___\n \n FINDINGS: \n \n"
                       " Small left pleural effusion.  No pneumothorax.\n \n IMPRESSION: \n \n Small left pleural\n"
                       " effusion.\n",
    53189527: HEADER + " FINDINGS: \n \n Heart size is mildly enlarged.  Effusion has resolved since ___.\n \n"
                       " IMPRESSION: \n \n Resolved effusion; mild cardiomegaly.\n",
    53911762: HEADER + " IMPRESSION: \n \n No acute cardiopulmonary process.\n",
    # 51000003: no report file at all
    51000001: HEADER + " FINDINGS: \n \n Mild pulmonary edema.\n",
    59000001: HEADER + " IMPRESSION:  Normal chest.\n",
    # addendum first, as MIMIC writes it
    59000002: "                                 FINAL ADDENDUM\n ADDENDUM:  Findings discussed with Dr. ___ at\n"
              " 10:00 on ___.\n \n" + HEADER + " FINDINGS:  Right lower lobe opacity.\n \n IMPRESSION: \n \n"
              " Right lower lobe pneumonia.\n",
    59000003: HEADER + " FINDINGS: \n \n The right lower lobe opacity has cleared.\n",
    53000001: HEADER + " IMPRESSION:  Possible atelectasis.\n",
    53000002: HEADER + " IMPRESSION:  Left basilar atelectasis.\n",
    54000001: HEADER + " IMPRESSION:  Tube in place.\n",
    54000002: HEADER + " IMPRESSION:  Tube removed.\n",
    55000001: HEADER + " IMPRESSION:  Normal.\n",
    55000002: HEADER + " IMPRESSION:  Normal.\n",
    52000001: HEADER + " IMPRESSION:  Normal.\n",
}

# Hand-computed journeys of the default config (PA, no gap bounds, patient-folder split, val_fraction=0):
# (patient, prior study, current study, split, gap days, labels text, impression text)
EXPECTED = [
    (10000032, 56699142, 50414267, "train",
     (21 * 86400 + (21 * 3600 + 30 * 60 + 14.531) - (6 * 3600 + 12 * 60 + 32)) / 86400,
     "new possible cardiomegaly; pleural effusion unchanged", None),
    (10000032, 50414267, 53189527, "train",
     (51 * 86400 + (16 * 3600 + 55 * 60 + 0.312) - (21 * 3600 + 30 * 60 + 14.531)) / 86400,
     "cardiomegaly, previously possible; resolved pleural effusion", "Resolved effusion; mild cardiomegaly."),
    (10000032, 53189527, 53911762, "train",
     (27 * 86400 + (8 * 3600 + 5 * 60 + 56.875) - (16 * 3600 + 55 * 60 + 0.312)) / 86400,
     "resolved cardiomegaly", "No acute cardiopulmonary process."),
    (11000011, 51000001, 51000003, "train", (2 * 86400 + 9.5 * 3600 - 12 * 3600) / 86400,
     "pulmonary edema unchanged; new pneumothorax", None),
    (13000055, 53000001, 53000002, "train", 4.0,
     "atelectasis, previously possible", "Left basilar atelectasis."),
    (19000033, 59000001, 59000002, "test", 31.0, "new consolidation", "Right lower lobe pneumonia."),
    (19000033, 59000002, 59000003, "test", 1065.0,
     "resolved consolidation", "The right lower lobe opacity has cleared."),
]


def _label_rows() -> pd.DataFrame:
    studies = sorted({(s, st) for s, st, *_ in IMAGES})
    rows = []
    for subj, study in studies:
        if study in NO_LABEL_ROW:
            continue
        row = {"subject_id": subj, "study_id": study, **{c: NAN for c in LABELS}}
        row.update(LABEL_VALUES.get(study, {}))
        rows.append(row)
    return pd.DataFrame(rows)


def make_tree(root: Path, gz: bool = True, image_px: tuple[int, int] = (48, 40)) -> Path:
    """Write the fake MIMIC-CXR-JPG tree under `root` (CSVs gzipped like the download) and return root."""
    root = Path(root)
    ext = ".csv.gz" if gz else ".csv"
    meta = pd.DataFrame([{
        "dicom_id": d, "subject_id": s, "study_id": st, "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
        "ViewPosition": v, "Rows": image_px[0], "Columns": image_px[1], "StudyDate": date, "StudyTime": time,
        "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)", "ViewCodeSequence_CodeMeaning": code,
        "PatientOrientationCodeSequence_CodeMeaning": "Erect"} for s, st, d, v, code, date, time in IMAGES])
    meta.to_csv(root / f"mimic-cxr-2.0.0-metadata{ext}", index=False)
    labels = _label_rows()
    labels.to_csv(root / f"mimic-cxr-2.0.0-chexpert{ext}", index=False)
    labels.to_csv(root / f"mimic-cxr-2.0.0-negbio{ext}", index=False)
    split = meta[["dicom_id", "study_id", "subject_id"]].assign(
        split=np.where(meta["subject_id"] // 1_000_000 == 19, "test", "train"))
    split.loc[split["subject_id"] == 11000011, "split"] = "validate"
    split.to_csv(root / f"mimic-cxr-2.0.0-split{ext}", index=False)
    rng = np.random.default_rng(0)
    for s, st, d, *_ in IMAGES:
        folder = root / "files" / f"p{s // 1_000_000}" / f"p{s}" / f"s{st}"
        folder.mkdir(parents=True, exist_ok=True)
        if d in MISSING_IMAGES:
            continue
        p = folder / f"{d}.jpg"
        if d in CORRUPT_IMAGES:
            p.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
            continue
        h, w = image_px
        img = (np.linspace(0, 255, w)[None, :] * 0.5 + rng.uniform(0, 120, (h, w))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(p, quality=95)
    for (s, st) in sorted({(s, st) for s, st, *_ in IMAGES}):
        if st in REPORTS:
            (root / "files" / f"p{s // 1_000_000}" / f"p{s}" / f"s{st}.txt").write_text(REPORTS[st])
    return root


def build(tree: Path, cache: Path, *extra: str) -> Path:
    """As `python -m bjexp.prepare data=mimic ...` does: compose, then call the configured builder (16 px, no val)."""
    from hydra.utils import get_method

    from conftest import compose

    cfg = compose(["data=mimic", f"paths.mimic_root={tree}", f"paths.cache_dir={cache}", "data.image_size=16",
                   "data.val_fraction=0", *extra])
    return get_method(cfg.data.builder)(cfg)
