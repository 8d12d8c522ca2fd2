"""Benchmark: MIMIC-scale metadata -> journeys (time, peak RSS) vs the bare pandas CSV read; image preprocessing
throughput (images/s/core).

    python benchmarks/mimic_manifest.py [--repeats 5] [--images 24] [--out benchmarks/results]

Generates MIMIC-CXR-JPG-sized CSVs (377,110 images, 227,827 studies, 65,379 patients; view mix and long-tailed
studies per patient like the real download, gzipped like it) in a temp folder, then runs each measurement in a
fresh process (so peak RSS is that job's own) and reports medians. Writes <out>/mimic_manifest.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_IMAGES, N_STUDIES, N_PATIENTS = 377_110, 227_827, 65_379
# ViewPosition mix of MIMIC-CXR-JPG 2.0.0 (fractions of images; '' = blank).
VIEW_MIX = {"AP": 0.391, "PA": 0.255, "LATERAL": 0.218, "LL": 0.093, "": 0.040, "AP AXIAL": 0.001,
            "PA LLD": 0.001, "LAO": 0.001}
CODE_MEANING = {"AP": "antero-posterior", "PA": "postero-anterior", "LATERAL": "lateral", "LL": "left lateral",
                "": "", "AP AXIAL": "", "PA LLD": "", "LAO": "left anterior oblique"}
LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
          "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
          "Pneumothorax", "Support Devices"]


def generate(root: Path, seed: int = 0) -> None:
    import pandas as pd

    rng = np.random.default_rng(seed)
    # long-tailed studies per patient (>= 1), summing exactly to N_STUDIES
    w = rng.pareto(1.6, N_PATIENTS) + 1
    per_patient = np.maximum(1, np.floor(w / w.sum() * (N_STUDIES - N_PATIENTS)).astype(int) + 1)
    while per_patient.sum() < N_STUDIES:
        per_patient[rng.integers(N_PATIENTS)] += 1
    while per_patient.sum() > N_STUDIES:
        i = rng.integers(N_PATIENTS)
        per_patient[i] -= per_patient[i] > 1
    subjects = np.sort(rng.choice(np.arange(10_000_000, 20_000_000), N_PATIENTS, replace=False))
    study_subject = np.repeat(subjects, per_patient)
    study_ids = rng.choice(np.arange(50_000_000, 60_000_000), N_STUDIES, replace=False)  # not chronological
    dates = pd.to_datetime("2110-01-01") + pd.to_timedelta(rng.integers(0, 365 * 80, N_STUDIES), unit="D")
    study_date = dates.strftime("%Y%m%d").astype(int).to_numpy()
    secs = rng.integers(0, 86_400_000, N_STUDIES) / 1000  # whole milliseconds
    study_time = np.round((secs // 3600) * 10000 + (secs % 3600 // 60) * 100 + secs % 60, 3)  # lost leading zeros
    # images per study: every study has one, the rest spread with a long tail
    img_per_study = np.ones(N_STUDIES, dtype=int)
    extra = rng.choice(N_STUDIES, N_IMAGES - N_STUDIES, p=None)
    np.add.at(img_per_study, extra, 1)
    idx = np.repeat(np.arange(N_STUDIES), img_per_study)
    views = rng.choice(list(VIEW_MIX), N_IMAGES, p=np.array(list(VIEW_MIX.values())) / sum(VIEW_MIX.values()))
    dicom = [f"{a:08x}-{b:08x}-{c:08x}-{d:08x}-{e:08x}" for a, b, c, d, e in rng.integers(0, 2**32, (N_IMAGES, 5))]
    meta = pd.DataFrame({
        "dicom_id": dicom, "subject_id": study_subject[idx], "study_id": study_ids[idx],
        "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": views,
        "Rows": rng.integers(2000, 3100, N_IMAGES), "Columns": rng.integers(2000, 3100, N_IMAGES),
        "StudyDate": study_date[idx], "StudyTime": study_time[idx],
        "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
        "ViewCodeSequence_CodeMeaning": [CODE_MEANING[v] for v in views],
        "PatientOrientationCodeSequence_CodeMeaning": "Erect"})
    meta.to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    lab = rng.choice([1.0, 0.0, -1.0, np.nan], (N_STUDIES, len(LABELS)), p=[0.12, 0.05, 0.03, 0.80])
    pd.DataFrame({"subject_id": study_subject, "study_id": study_ids, **dict(zip(LABELS, lab.T))}).to_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    split = np.where(meta["subject_id"] // 1_000_000 == 19, "test", "train")
    meta[["dicom_id", "study_id", "subject_id"]].assign(split=split).to_csv(
        root / "mimic-cxr-2.0.0-split.csv.gz", index=False)


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: ru_maxrss survives execve, so a child would inherit the
    peak of the (big) parent that forked it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, root: Path) -> None:
    """One measurement in this fresh process: imports timed apart from the work (prepare has them loaded anyway)."""
    t0 = time.perf_counter()
    import pandas as pd

    if kind != "bare":
        from omegaconf import OmegaConf

        from bjexp.data.mimic.build import add_labels, build_pairs
        from bjexp.data.mimic.counts import Counts
        from bjexp.data.mimic.metadata import read_labels
        from bjexp.schema.mimic import MimicDataConfig
    t1 = time.perf_counter()
    if kind == "bare":
        n = sum(len(pd.read_csv(root / f"mimic-cxr-2.0.0-{x}.csv.gz")) for x in ("metadata", "chexpert", "split"))
        info = {"rows": n}
    else:
        cfg = OmegaConf.structured(MimicDataConfig)
        if kind == "official":
            cfg.split = "official"
        counts = Counts()
        pairs = add_labels(build_pairs(root, cfg, counts), read_labels(root), counts)
        info = {"pairs": len(pairs), "per_split": pairs["split"].value_counts().to_dict(),
                "torch_imported": "torch" in sys.modules}
    info["seconds"] = time.perf_counter() - t1
    info["import_seconds"] = t1 - t0
    info["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(info))


def _run_child(*args: str) -> dict:
    # this checkout's bjexp first, whichever one is installed
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"benchmark child {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict]) -> dict:
    return {**runs[-1], "seconds": statistics.median(r["seconds"] for r in runs),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
            "import_seconds": statistics.median(r["import_seconds"] for r in runs),
            "seconds_all": [round(r["seconds"], 3) for r in runs]}


def image_throughput(n: int, size: int = 256) -> dict:
    """Preprocess MIMIC-sized JPEGs (2544 x 3056, quality 95) on one thread: images/s/core, with and without
    reduced-scale decoding; plus the 1024 px SIIM DICOM when the real test data is there."""
    from PIL import Image

    from bjexp.data.image_store import fit, preprocess, read_dicom, read_grey

    rng = np.random.default_rng(0)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        yy, xx = np.mgrid[0:3056, 0:2544]
        base = 128 + 50 * np.sin(xx / 300) * np.cos(yy / 410)
        paths = []
        for i in range(n):
            img = (base + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8)
            p = Path(tmp) / f"{i}.jpg"
            Image.fromarray(img).save(p, quality=95)
            paths.append(p)
        for name, fn in (("jpg_reduced_decode", lambda p: preprocess(p, size)),
                         ("jpg_full_decode", lambda p: fit(read_grey(p), size))):
            t = time.perf_counter()
            for p in paths:
                fn(p)
            out[name] = round(n / (time.perf_counter() - t), 2)
    dcm = next((Path(__file__).resolve().parents[2] / "shared" / "data" / "real-cxr" / "singles").glob("*.dcm"), None)
    if dcm is not None:
        t = time.perf_counter()
        for _ in range(n):
            fit(read_dicom(dcm), size)
        out["dicom_1024px"] = round(n / (time.perf_counter() - t), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--child", nargs=2, metavar=("KIND", "ROOT"))
    a = ap.parse_args()
    if a.child:
        if a.child[0] == "images":
            return print(json.dumps(image_throughput(int(a.child[1]))))
        return child(a.child[0], Path(a.child[1]))
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        generate(root)
        gen_s = time.perf_counter() - t
        kinds = ("bare", "journeys", "official")
        runs: dict[str, list] = {k: [] for k in kinds}
        for _ in range(a.repeats):  # interleaved, so a busy neighbour slows every job alike
            for k in kinds:
                runs[k].append(_run_child(k, str(root)))
        res = {k: summarize(v) for k, v in runs.items()}
    res["images_per_s_per_core"] = _run_child("images", str(a.images))
    res["load_avg_at_start"] = round(load, 2)
    res["ratio_journeys_to_bare"] = round(res["journeys"]["seconds"] / res["bare"]["seconds"], 2)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    import pandas as pd

    res["machine"] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                      "pandas": pd.__version__, "numpy": np.__version__, "platform": platform.platform()}
    res["command"] = "python benchmarks/mimic_manifest.py " + " ".join(
        f"--{k} {v}" for k, v in (("repeats", a.repeats), ("images", a.images)))
    res["generated_in_s"] = round(gen_s, 1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mimic_manifest.json").write_text(json.dumps(res, indent=2, default=str))
    b, j, o, im = res["bare"], res["journeys"], res["official"], res["images_per_s_per_core"]
    md = f"""# MIMIC-CXR metadata -> journeys, image preprocessing

Command: `{res['command']}` (medians of {a.repeats} fresh processes, jobs interleaved; peak RSS = the process's VmHWM)
Machine: {cpu}, {os.cpu_count()} cores (shared; load average at start {res['load_avg_at_start']}), Python {platform.python_version()}, pandas {pd.__version__}
Data: generated MIMIC-scale CSVs ({N_IMAGES:,} images, {N_STUDIES:,} studies, {N_PATIENTS:,} patients, gzipped)

| job | median s (work) | median s (imports) | peak RSS MiB | result |
|---|---:|---:|---:|---|
| bare `pd.read_csv` of metadata + chexpert + split | {b['seconds']:.2f} | {b['import_seconds']:.2f} | {b['peak_rss_mib']:.0f} | {b['rows']:,} rows |
| metadata -> PA journeys + split + labels (patient folder) | {j['seconds']:.2f} | {j['import_seconds']:.2f} | {j['peak_rss_mib']:.0f} | {j['pairs']:,} pairs {j['per_split']}; torch imported: {j['torch_imported']} |
| same, official split file (reads it too) | {o['seconds']:.2f} | {o['import_seconds']:.2f} | {o['peak_rss_mib']:.0f} | {o['pairs']:,} pairs |

Journeys / bare read (work): **{res['ratio_journeys_to_bare']}x** (target <= 2x, <= 500 MiB). Imports: pandas only
for the bare read; pandas + omegaconf + hydra's ConfigStore + bjexp for ours (already loaded inside `bjexp.prepare`).

Image preprocessing to 256 px, one thread (images/s/core): MIMIC-sized JPEG (2544x3056) with reduced-scale decode
**{im['jpg_reduced_decode']}**, full decode {im['jpg_full_decode']}; 1024 px DICOM {im.get('dicom_1024px', 'n/a')}.
"""
    (out / "mimic_manifest.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
