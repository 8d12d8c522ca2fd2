"""The 2-run sweep `python -m bjexp.train -m encoder=biomedclip,clip` on a CPU that another job also uses, with the
code of a base revision (before bjexp set its own CPU threads) vs the working tree (after), in alternating turns.

    python benchmarks/threads.py --before <rev> [--after HEAD] [--repeats 2] [--full] [extra hydra overrides...]

Both sides share one warm cache (data, tiny VAE/encoders, feature cache, classifier: built by an untimed warm-up
sweep), so the timed sweeps are training + sampling + evaluation. While each timed sweep runs, one competing CPU job
runs beside it: a PyTorch loop at its default threads and OpenMP settings (another user's job, as in the issue).
By default the world is reduced (--full: the default settings). The children run with the caller's environment
minus OMP_NUM_THREADS / OMP_WAIT_POLICY, so each side runs with its own defaults. Writes
benchmarks/results/threads.{md,json}: wall seconds per sweep, fit seconds and steps/s per run, the load average
around every sweep, and the before/after ratio of the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# A reduced world (documented in the results): same structure (2 runs, one competing job), minutes not hours.
REDUCED = ["data.n_patients=60", "data.classifier_images=400", "model.vae.train_steps=50",
           "encoder.tiny.pretrain_steps=20", "eval.classifier.steps=50", "trainer.max_steps=30",
           "trainer.val_check_interval=15", "trainer.checkpoint_every_n_steps=15", "sampler.steps=5",
           "eval.n_bootstrap=50"]
COMMON = ["logger=csv", "trainer.enable_progress_bar=false"]
SWEEP = ["-m", "encoder=biomedclip,clip"]
COMPETITOR = ("import torch\n"
              "x = torch.randn(32, 64, 16, 16); w = torch.randn(64, 64, 3, 3); a = torch.randn(256, 256)\n"
              "while True:\n"
              "    torch.nn.functional.conv2d(x, w, padding=1).relu_(); a @ a\n")


def checkout(rev: str, dest: Path) -> Path:
    """The tree of `rev` (git archive: no worktree registered, nothing of the working tree)."""
    data = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
    dest.mkdir(parents=True)
    tar = dest.with_suffix(".tar")
    tar.write_bytes(data)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    tar.unlink()
    return dest


def child_env(tree: Path, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    return {**env, "PYTHONPATH": str(tree), "BJEXP_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "BJEXP_PROGRESS": "0",
            "WANDB_MODE": "offline"}


def sweep(tree: Path, cache: Path, out: Path, overrides: list[str], competitor: bool) -> dict:
    cmd = [sys.executable, "-m", "bjexp.train", *SWEEP, *overrides, f"hydra.sweep.dir={out}"]
    env = child_env(tree, cache)
    rival = None
    if competitor:
        rival = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(2)  # let it start spinning
    load0, t0 = os.getloadavg(), time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    finally:
        wall = time.perf_counter() - t0
        if rival is not None:
            rival.kill()
            rival.wait()
    if p.returncode != 0:
        sys.exit(f"sweep failed in {tree}:\n{p.stderr[-4000:]}")
    runs = []
    for res in sorted(out.glob("*/results.json")):
        r = json.loads(res.read_text())
        info = json.loads((res.parent / "run.json").read_text())
        fit = r["timings_s"]["fit"]
        steps = int(next(o.split("=")[1] for o in overrides[::-1] if o.startswith("trainer.max_steps=")))
        runs.append({"encoder": info["choices"]["encoder"], "fit_s": fit, "steps_per_s": steps / fit,
                     "cpu_threads": info.get("cpu_threads"), "timings_s": r["timings_s"]})
    return {"wall_s": wall, "load_1min_before": round(load0[0], 2), "load_1min_after": round(os.getloadavg()[0], 2),
            "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision without product-set threads (e.g. main)")
    ap.add_argument("--after", default="HEAD", help="git revision with them (both are checked out: later edits of "
                                                    "the working tree do not leak into a running benchmark)")
    ap.add_argument("--repeats", type=int, default=2, help="before/after turns (alternating)")
    ap.add_argument("--full", action="store_true", help="the default world and 1,000 steps (not reduced)")
    ap.add_argument("--no-competitor", action="store_true")
    a, extra = ap.parse_known_args()
    overrides = COMMON + ([] if a.full else REDUCED) + extra
    if not any(o.startswith("trainer.max_steps=") for o in overrides):
        overrides.append("trainer.max_steps=1000")
    with tempfile.TemporaryDirectory(prefix="bjexp-threads-") as tmp:
        tmp = Path(tmp)
        trees = {side: checkout(rev, tmp / side) for side, rev in (("before", a.before), ("after", a.after))}
        cache = tmp / "cache"
        print("warm-up sweep (untimed) ...", flush=True)
        sweep(trees["after"], cache, tmp / "warmup", overrides + ["trainer.max_steps=1", "trainer.val_check_interval=1",
                                                        "trainer.checkpoint_every_n_steps=1"], competitor=False)
        res = {"before": [], "after": []}
        for i in range(a.repeats):
            for side in ("before", "after"):
                r = sweep(trees[side], cache, tmp / f"{side}{i}", overrides, competitor=not a.no_competitor)
                res[side].append(r)
                print(side, json.dumps(r), flush=True)
    rev = subprocess.run(["git", "rev-parse", "--short", a.before], cwd=REPO, capture_output=True, text=True).stdout
    head = subprocess.run(["git", "rev-parse", "--short", a.after], cwd=REPO, capture_output=True, text=True).stdout
    med = {s: median([r["wall_s"] for r in v]) for s, v in res.items()}
    ratio = med["before"] / med["after"]
    rows = ["| side | turn | sweep wall (s) | steps/s per run (biomedclip, clip) | threads | load 1-min before → after |",
            "|---|---|---|---|---|---|"]
    for side, v in res.items():
        for i, r in enumerate(v):
            sps = ", ".join(f"{x['steps_per_s']:.2f}" for x in r["runs"])
            thr = ", ".join(str(x["cpu_threads"]) for x in r["runs"])
            rows.append(f"| {side} | {i} | {r['wall_s']:.0f} | {sps} | {thr} | {r['load_1min_before']} → "
                        f"{r['load_1min_after']} |")
    table = "\n".join(rows) + (
        f"\n\nbefore = {a.before} ({rev.strip()}), after = {a.after} ({head.strip()}). Median sweep wall: "
        f"before {med['before']:.0f} s, after {med['after']:.0f} s: **{ratio:.2f}x** faster after. "
        f"{'One competing CPU job ran beside every timed sweep. ' if not a.no_competitor else ''}"
        f"Overrides: `{' '.join(overrides)}`.")
    write("threads", {"before": a.before, "overrides": overrides, "results": res, "ratio_before_over_after": ratio},
          table)


if __name__ == "__main__":
    main()
