"""Does the generator keep the patient's overall density? Per race-like level (the miniature world draws it as the
body's soft-tissue density), the mean intensity of each generated follow-up minus its real current's, over the pairs
a run scored (its results.json `split`). A generator that copies the prior's density has the same error at every
level; one that pulls density towards the mean is too bright for the darkest level and too dark for the densest.

    python benchmarks/density_drift.py <run dir> [<run dir> ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write  # noqa: E402


def drift(run: Path) -> dict:
    """{split, n, per level: mean(generated - current) and its SD, spread: darkest level's mean - densest's}."""
    from bjexp.imaging import read_grey
    from bjexp.runstate import sample_dir

    split = json.loads((run / "results.json").read_text()).get("split", "test")
    manifest = Path(json.loads((run / "run.json").read_text())["manifest"])
    df = pd.read_csv(manifest)
    df = df[df["split"] == split]
    gen = np.array([read_grey(sample_dir(run) / f"{p}.png").mean() for p in df["pair_id"]]) / 255
    cur = np.array([read_grey(manifest.parent / p).mean() for p in df["current_path"]]) / 255
    err, race = gen - cur, df["attr_race"].to_numpy()
    levels = {int(k): {"n": int((race == k).sum()), "mean": float(err[race == k].mean()),
                       "sd": float(err[race == k].std())} for k in np.unique(race)}
    lo, hi = min(levels), max(levels)
    return {"split": split, "n": len(df), "levels": levels, "spread": levels[lo]["mean"] - levels[hi]["mean"]}


def main(runs: list[str]) -> None:
    if not runs:
        raise SystemExit(__doc__)
    out = {r: drift(Path(r)) for r in runs}
    rows = ["| run | split | pairs | generated − current, per level (darkest first) | spread |", "|---|---|---|---|---|"]
    for r, d in out.items():
        per = " / ".join(f"{v['mean']:+.4f}" for _, v in sorted(d["levels"].items()))
        rows.append(f"| `{Path(r).name}` | {d['split']} | {d['n']} | {per} | {d['spread']:.4f} |")
    print(write("density_drift", {"runs": out}, "\n".join(rows)))
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
