"""Per-run cost of the real-world evaluation, cold (no caches) vs warm (reference side cached), on this machine.

    python benchmarks/eval_cost.py [--pairs 1214] [--size 256] [--measure 16] [--age-arch senet154] [--device cpu]

Weights are random-initialised at the real architectures (timing only; `bjexp.eval.fake_weights`). Model
throughput is measured on `--measure` images per model (median of repeats, after a warm-up batch) and scaled to
the run's image count; everything that does not scale per image that simply (reading PNGs, hashing, cache reads,
the bootstrap scoring, the FID distance) is run at full size. A run classifies 3 x pairs images cold (generated,
current, prior) and 1 x pairs warm; FID extracts features of 2 x pairs images cold and 1 x pairs warm.
Writes benchmarks/results/eval_cost.md (+ .json) with the command and machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


def _median_time(fn, repeats: int = 3) -> float:
    """Median of `repeats` timed calls after one warm-up call (repeats=0: time the single call)."""
    if repeats == 0:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    fn()  # warm-up (allocator, oneDNN primitives)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1214)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--measure", type=int, default=16, help="images per model throughput measurement")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--age-arch", default="senet154", choices=["senet154", "tiny"])
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_cost.md"))
    args = ap.parse_args()

    from bjexp.eval import cache, fake_weights, fid, metrics, registry
    from bjexp.eval.xrv import XRVPredictor, to_resolution
    from bjexp.imaging import read_grey, uint8_to_xrv, write_png
    from bjexp.io import write_json

    rng = np.random.default_rng(0)
    n, s = args.pairs, args.size
    findings = ["Effusion", "Lung Opacity", "Atelectasis", "Cardiomegaly", "Edema"]
    df = pd.DataFrame({"patient_id": [f"p{i}" for i in np.repeat(np.arange(n), 2)[:n]]})
    for f in findings:
        df[f"current_{f}"] = rng.choice([1.0, 0.0, -1.0, np.nan], n)
        df[f"prior_{f}"] = rng.choice([1.0, 0.0, np.nan], n)
    df["attr_race"], df["attr_age"], df["attr_sex"] = rng.integers(0, 3, n), rng.uniform(20, 90, n), rng.integers(0, 2, n)
    r: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="bjexp-evalbench-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        fake_weights.write_xrv(tmp / "xrv", age_arch=args.age_arch)
        inception = fake_weights.write_inception(tmp / "torch-fidelity")
        r["setup_write_random_weights_s"] = time.perf_counter() - t

        # Reading the run's PNGs (generated) — measured at full size on real files.
        imgs = rng.integers(0, 256, (n, s, s), dtype=np.uint8)
        for i, im in enumerate(imgs):
            write_png(tmp / "samples" / f"{i}.png", im)
        t = time.perf_counter()
        for i in range(n):
            read_grey(tmp / "samples" / f"{i}.png")
        r["read_pngs_per_run_images_s"] = time.perf_counter() - t

        t = time.perf_counter()
        pred = XRVPredictor(cache_dir=str(tmp / "xrv"), verify_checksums=False, batch_size=args.batch,
                            device=args.device, progress=False)
        r["load_classifiers_s"] = time.perf_counter() - t
        t = time.perf_counter()
        fingerprint = pred.fingerprint()  # hashes the weight files once per process
        r["hash_weight_files_s"] = time.perf_counter() - t

        # Per-image model throughput on --measure images.
        x = torch.as_tensor(imgs[: args.measure])
        xx = uint8_to_xrv(x).unsqueeze(1).to(pred.device)
        x224, x320 = to_resolution(xx, 224), to_resolution(xx, 320)
        per_image = {}
        with torch.inference_mode():
            per_image["densenet121_pathology+features2"] = _median_time(lambda: pred.densenet.features2(x224)) / args.measure
            per_image["race_resnet34_320"] = _median_time(lambda: pred.race_model(x320)) / args.measure
            per_image["age_" + args.age_arch + "_320"] = _median_time(lambda: pred.age_model(x320), repeats=1) / args.measure
            per_image["sex_resnet34_224"] = _median_time(lambda: pred.sex_model(x224)) / args.measure
        per_image["predict_all_models_measured"] = _median_time(lambda: pred.predict(imgs[: args.measure]), repeats=1) / args.measure
        r.update({f"per_image/{k}_s": v for k, v in per_image.items()})

        # FID feature extraction throughput (torch-fidelity path) and the distance itself, at full size.
        fid.register()
        from torch_fidelity.utils import create_feature_extractor
        fe_inc = create_feature_extractor(fid.INCEPTION_EXTRACTOR, ["2048"], cuda=args.device.startswith("cuda"),
                                          feature_extractor_weights_path=str(inception), verbose=False)
        fe_xrv = create_feature_extractor(fid.XRV_EXTRACTOR, ["features2"], cuda=args.device.startswith("cuda"),
                                          feature_extractor_weights_path=str(pred.files["pathology"]), verbose=False)
        rgb = fid.GreyAsRGB(imgs[: args.measure])
        batch = torch.stack([rgb[i] for i in range(len(rgb))]).to(args.device)
        with torch.inference_mode():
            r["per_image/fid_inception_features_s"] = _median_time(lambda: fe_inc(batch)) / args.measure
            r["per_image/fid_xrv_features_s"] = _median_time(lambda: fe_xrv(batch)) / args.measure
        f1, f2 = rng.normal(size=(n, 2048)), rng.normal(size=(n, 2048)) * 1.1
        r["fid_distance_inception_2048d_s"] = _median_time(lambda: fid.fid_from_features(f1, f2), repeats=1)
        r["fid_distance_xrv_1024d_s"] = _median_time(lambda: fid.fid_from_features(f1[:, :1024], f2[:, :1024]), repeats=1)
        # for comparison: torch-fidelity's own distance (eigenvalues of the D x D product), not used by a run
        r["fid_distance_inception_2048d_torch_fidelity_s"] = _median_time(lambda: fid.fid_torch_fidelity(f1, f2), repeats=0)

        # Scoring with patient-bootstrap CIs (one prefix), at full size.
        p = metrics.Predictions(findings={f: rng.uniform(0, 1, n) for f in findings}, race=rng.dirichlet(np.ones(3), n),
                                age=rng.uniform(20, 90, n), sex=rng.uniform(0, 1, n), features=rng.normal(size=(n, 1024)))
        t = time.perf_counter()
        registry.score_predictions(registry.config_metrics(), p, df, prior=p, findings=findings,
                                   n_bootstrap=args.n_bootstrap)
        r["score_one_prefix_bootstrap_s"] = time.perf_counter() - t

        # Cache hits at full size: hash the image set + load a cached predictions file.
        t = time.perf_counter()
        cache.save_predictions(p, tmp / "pred.npz")
        r["cache_write_predictions_s"] = time.perf_counter() - t
        t = time.perf_counter()
        fid.images_hash(imgs)
        cache.load_predictions(tmp / "pred.npz")
        r["cache_hit_one_reference_set_s"] = time.perf_counter() - t

    pi = {k: v for k, v in r.items() if k.startswith("per_image/")}
    classify = pi["per_image/predict_all_models_measured_s"]
    fid_feat = pi["per_image/fid_inception_features_s"] + pi["per_image/fid_xrv_features_s"]
    fixed = r["load_classifiers_s"] + r["hash_weight_files_s"] + 3 * r["score_one_prefix_bootstrap_s"] \
        + r["fid_distance_inception_2048d_s"] + r["fid_distance_xrv_1024d_s"]
    cold = fixed + 3 * r["read_pngs_per_run_images_s"] + 3 * n * classify + 2 * n * fid_feat + 2 * r["cache_write_predictions_s"]
    warm = fixed + 3 * r["read_pngs_per_run_images_s"] + n * classify + n * fid_feat + 2 * r["cache_hit_one_reference_set_s"]
    summary = {"cold_per_run_s": cold, "warm_per_run_s": warm, "speedup": cold / warm}

    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "torch_threads": torch.get_num_threads(), "device": args.device,
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "python": platform.python_version(), "torch": torch.__version__,
               "load_avg_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()],
               "cpu_count": os.cpu_count()}
    script = Path(sys.argv[0]).resolve()
    command = " ".join(["python", str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0],
                        *sys.argv[1:]])
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"command": command, "machine": machine, "args": vars(args),
                                          "measured": r, "estimated": summary})
    lines = [f"# Evaluation cost per run ({n} pairs, {s} px, {args.device})", "", f"Command: `{command}`", "",
             f"Machine: {machine}", "",
             "Random-initialised weights at the real architectures (timing only). Per-image model costs are medians "
             f"over {args.measure} images and scaled to the run; the rest is measured at full size.", "",
             "| estimate | seconds | minutes |", "|---|---:|---:|",
             f"| **cold** (classify 3 x {n}, FID features 2 x {n}) | {cold:.0f} | {cold / 60:.1f} |",
             f"| **warm** (reference predictions + FID stats cached: classify {n}, FID features {n}) | {warm:.0f} | {warm / 60:.1f} |",
             "", "| measured | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in r.items()]
    from bjexp.io import atomic_write
    with atomic_write(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
