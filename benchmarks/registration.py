"""Registration benchmark: speed (pairs/s per core), accuracy where the transform is known, QC on real pairs.

    python benchmarks/registration.py [--n 200] [--n512 100] [--protocols border_free zero_border]
        [--synthetic-manifest PATH]

Writes benchmarks/results/registration.md (+ .json) and registration_overlay.jpg. Known transforms: each of the
94 real CXRs of ../shared/data/real-cxr (cycled) is observed through a centred square field of view before and
after a random affine (rotation ±6°, shift ±6 %, scale ±6 %, shear ±0.02) with an exposure change and noise
(bjexp.registration.known). Corner error = mean distance of the four image corners under the estimated vs the true
transform; a failure = corner error > 5 px or no estimate. Two protocols: border_free (both images are views of the
source, no black wedges) and zero_border (the moving image is the fixed one resampled through the transform, zeros
outside it, as after a resampling step). Single process, OpenCV and ITK at one thread: per core.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from bjexp.imaging import read_grey
from bjexp.registration import build_registrar, register_pair
from bjexp.registration.base import Flag, corner_error
from bjexp.registration.known import known_pair, pose_truth, random_pose
from bjexp.registration.methods import option_config
from bjexp.registration.qc import mutual_information, ncc

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real-cxr"
RESULTS = REPO / "benchmarks" / "results"
# The options of conf/registration/*.yaml, loaded through their schemas (so the benchmark runs what users run).
METHODS = ["none", "affine_ecc", "affine_ecc_full", "affine_sitk", "affine_sitk_published"]


@dataclass
class Timed:
    """Wraps a registrar to time its estimate alone (QC and warping are timed by the caller)."""
    inner: object
    seconds: float = 0.0
    name: str = field(init=False, default="")

    def estimate(self, fixed, moving):
        t0 = time.perf_counter()
        try:
            return self.inner.estimate(fixed, moving)
        finally:
            self.seconds += time.perf_counter() - t0


PROTOCOLS = {"border_free": False, "zero_border": True}  # -> known_pair(zero_border=...)


def known_set(size: int, n: int, seed: int, zero_border: bool = False) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    srcs = [read_grey(p) for p in sorted((REAL / "mhh_covid19" / "images").glob("*.jpg"))]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        truth = random_pose(rng, size)
        out.append((*known_pair(srcs[i % len(srcs)], truth, size, rng=rng, zero_border=zero_border), truth))
    return out


def run_known(cfgs: dict[str, dict], pairs) -> list[dict]:
    """All methods on the same pairs, interleaved pair by pair so that they share any load on the machine."""
    regs = {n: Timed(build_registrar(c)) for n, c in cfgs.items()}
    fallbacks = {n: (Timed(fb) if (fb := build_registrar(c, fallback=True)) else None) for n, c in cfgs.items()}
    errs = {n: [] for n in cfgs}
    flags = {n: [] for n in cfgs}
    total = dict.fromkeys(cfgs, 0.0)
    for fixed, moving, truth in pairs:
        for name, reg in regs.items():
            t0 = time.perf_counter()
            res = register_pair(reg, fixed, moving, fallback=fallbacks[name])
            total[name] += time.perf_counter() - t0
            est = res.extra.get("estimate", res.matrix)
            no_estimate = res.flag is Flag.FAILED and "estimate" not in res.extra
            errs[name].append(np.inf if no_estimate else corner_error(np.asarray(est), truth, fixed.shape))
            flags[name].append(res.flag.value)
    out = []
    for name, reg in regs.items():
        e, f = np.array(errs[name]), np.array(flags[name])
        bad = e > 5
        est_s = reg.seconds + (fallbacks[name].seconds if fallbacks[name] else 0.0)
        out.append({"method": name, "size": pairs[0][0].shape[0], "pairs": len(pairs),
                    "pairs_per_s_estimate": len(pairs) / est_s if est_s > 1e-3 else float("inf"),
                    "pairs_per_s_with_qc": len(pairs) / total[name],
                    "median_px": float(np.median(e)), "p95_px": float(np.percentile(e, 95)),
                    "failure_pct": 100 * float(bad.mean()), "flagged_pct": 100 * float((f == "failed").mean()),
                    "unflagged_failures": int((bad & (f != "failed")).sum())})
    return out


def run_real(name: str, cfg: dict, size: int = 256) -> tuple[dict, list]:
    pairs = pd.read_csv(REAL / "pairs.csv")
    reg, fallback = build_registrar(cfg), build_registrar(cfg, fallback=True)
    rows, keep = [], []
    for r in pairs.itertuples():
        fixed, moving = read_grey(REAL / r.prior_file, size), read_grey(REAL / r.current_file, size)
        res = register_pair(reg, fixed, moving, fallback=fallback)
        rows.append({"ssim_before": res.ssim_before, "ssim_after": res.ssim_after,
                     "ncc_before": res.score_before, "ncc_after": ncc(fixed, res.warped),
                     "mi_before": mutual_information(fixed, moving), "mi_after": mutual_information(fixed, res.warped),
                     "flag": res.flag.value, "fallback": bool(res.extra.get("fallback"))})
        keep.append((r.pair_id, fixed, moving, res.warped, res.flag.value))
    df = pd.DataFrame(rows)
    summary = {"method": name, "pairs": len(df), **{f"median_{c}": float(df[c].median()) for c in
               ("ncc_before", "ncc_after", "ssim_before", "ssim_after", "mi_before", "mi_after")},
               "improved_ssim_pct": 100 * float((df.ssim_after > df.ssim_before + 1e-6).mean()),
               "flags": df.flag.value_counts().to_dict(), "rescued_by_fallback": int(df.fallback.sum())}
    return summary, keep


def run_synthetic(manifest: Path, names: list[str], cfgs: dict) -> list[dict]:
    """Accuracy on the miniature world's planted pose change (prior_pose_* / current_pose_* columns)."""
    from bjexp.data import manifest as mf

    df = mf.read(manifest)
    fixed = [read_grey(p) for p in mf.resolve(df, "prior_path")]
    moving = [read_grey(p) for p in mf.resolve(df, "current_path")]
    pairs = [(f, m, pose_truth(row, f.shape)) for f, m, (_, row) in zip(fixed, moving, df.iterrows())]
    return run_known({n: cfgs[n] for n in names}, pairs)


def overlay(samples: list, path: Path, cell: int = 128) -> None:
    """Rows = pairs; columns = prior | current | checkerboard before | after | colour overlay before | after.
    Both images are contrast-normalised first (exposure differs between studies); in the colour overlay the prior
    is magenta and the current green, so misalignment shows as coloured fringes and alignment as grey."""
    def norm(a):
        a = a.astype(np.float32)
        return np.clip((a - a.mean()) / (a.std() + 1e-6) * 48 + 128, 0, 255).astype(np.uint8)

    def checker(a, b, k=8):
        yy, xx = np.mgrid[0:a.shape[0], 0:a.shape[1]] * k // a.shape[0]
        g = np.where((yy + xx) % 2 == 0, a, b)
        return np.dstack([g, g, g])

    def colour(a, b):
        return np.dstack([a, b, a])  # BGR: prior in blue+red (magenta), current in green

    rows = []
    for _, f, m, w, _ in samples:
        f, m, w = norm(f), norm(m), norm(w)
        tiles = [np.dstack([f] * 3), np.dstack([m] * 3), checker(f, m), checker(f, w), colour(f, m), colour(f, w)]
        rows.append(np.hstack([cv2.resize(t, (cell, cell), interpolation=cv2.INTER_AREA) for t in tiles]))
    img = np.vstack(rows)
    for j, label in enumerate(["prior", "current", "checker before", "checker after", "overlay before",
                               "overlay after"]):
        cv2.putText(img, label, (j * cell + 3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 255, 255), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 85])  # X-ray texture: PNG would be ~5x larger


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="known-transform pairs at 256 px")
    ap.add_argument("--n512", type=int, default=100, help="known-transform pairs at 512 px")
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS),
                    help="border_free: both images are views of the source; zero_border: the moving image is the "
                         "fixed one resampled with zeros outside")
    ap.add_argument("--synthetic-manifest", type=Path, help="a miniature-world manifest with pose columns")
    ap.add_argument("--out", type=Path, default=RESULTS / "registration")
    a = ap.parse_args()
    if not REAL.is_dir():
        sys.exit(f"real CXRs not found at {REAL} (the benchmark needs ../shared/data/real-cxr beside the repo)")
    cv2.setNumThreads(1)
    load_start = [round(x, 1) for x in os.getloadavg()]
    cfgs = {n: {**option_config(n), "threads": 1} for n in a.methods}
    known = []
    for protocol in a.protocols:
        for size, n in ((256, a.n), (512, a.n512)):
            if n <= 0:
                continue
            for row in run_known(cfgs, known_set(size, n, seed=size, zero_border=PROTOCOLS[protocol])):
                known.append({"protocol": protocol, **row})
                print(json.dumps(known[-1]), flush=True)
    real, samples = [], {}
    for name in a.methods:
        s, keep = run_real(name, cfgs[name])
        real.append(s)
        samples[name] = keep
        print(json.dumps(s), flush=True)
    synth = run_synthetic(a.synthetic_manifest, a.methods, cfgs) if a.synthetic_manifest else []
    best = "affine_ecc" if "affine_ecc" in samples else a.methods[-1]
    picks = [k for k in samples[best] if k[4] == "ok"][:4] + [k for k in samples[best] if k[4] == "failed"][:1]
    overlay(picks, a.out.parent / f"{a.out.name}_overlay.jpg")

    ref = {(r["protocol"], r["size"]): r for r in known if r["method"] == "affine_sitk_published"}
    for r in known:
        if (r["protocol"], r["size"]) in ref and r["method"] != "none":
            r["speedup_vs_published"] = (r["pairs_per_s_estimate"]
                                         / ref[(r["protocol"], r["size"])]["pairs_per_s_estimate"])
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln), "?")
    load_end = [round(x, 1) for x in os.getloadavg()]
    machine = {"load_avg_1_5_15_start": load_start, "load_avg_1_5_15_end": load_end, "cores": os.cpu_count(),
               "cpu": cpu, "python": platform.python_version(), "opencv": cv2.__version__,
               "simpleitk": __import__("SimpleITK").Version_VersionString(), "numpy": np.__version__}
    command = "python " + " ".join(sys.argv)
    (a.out.with_suffix(".json")).write_text(json.dumps({"command": command, "machine": machine, "known": known,
                                                        "real": real, "synthetic": synth}, indent=2))
    kcols = ["protocol", "method", "size", "pairs", "pairs_per_s_estimate", "pairs_per_s_with_qc",
             "speedup_vs_published",
             "median_px", "p95_px", "failure_pct", "flagged_pct", "unflagged_failures"]
    rcols = ["method", "pairs", "median_ncc_before", "median_ncc_after", "median_ssim_before", "median_ssim_after",
             "median_mi_before", "median_mi_after", "improved_ssim_pct", "flags", "rescued_by_fallback"]
    md = [f"# Registration benchmark\n\nCommand: `{command}`  \nMachine: {machine}  \n"
          f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n",
          "## Known transforms (real CXRs, random affine + exposure change + noise)\n",
          "Speed is per core (one process, one thread). `failure_pct`: corner error > 5 px or no estimate; "
          "`flagged_pct`: flagged failed by QC; `unflagged_failures`: failures QC did not catch. "
          "For `none` the error is the planted misalignment itself.\n", table(known, kcols),
          "\n## Real same-patient pairs (../shared/data/real-cxr/pairs.csv, both at 256 px)\n",
          "Medians over all 59 pairs (a pair flagged failed keeps its unregistered current image). "
          "MI in nats (32-bin joint histogram).\n", table(real, rcols),
          f"\n![overlay]({a.out.name}_overlay.jpg)\n\nRows: four pairs registered by `{best}` and one it flagged "
          "failed; columns: prior, current, checkerboard before/after, colour overlay before/after (prior magenta, "
          "current green: coloured fringes = misalignment), contrast-normalised.\n"]
    if synth:
        md += ["\n## Miniature world (planted pose change)\n", table(synth, kcols)]
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {a.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
