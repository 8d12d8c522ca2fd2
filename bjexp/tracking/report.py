"""Local reports a person can open without W&B: the image grid, a per-run Markdown table, and sweep tables."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bjexp.io import atomic_write

HEADLINE = ["pathology_auroc", "pathology_auroc_changed", "pathology_accuracy", "race_auroc", "age_r", "sex_accuracy",
            "identity_similarity", "cmig"]


def grid_rows(df, n: int = 8, findings=None) -> np.ndarray:
    """Rows for picture grids: one pair per patient (as many patients as possible, up to `n` rows), pairs where a
    finding's label changed first, then the rest; stable order (manifest order within each group)."""
    import pandas as pd

    changed = np.zeros(len(df), bool)
    for f in findings if findings is not None else [c[8:] for c in df.columns if c.startswith("current_")]:
        if f"current_{f}" not in df or f"prior_{f}" not in df:
            continue
        a, b = (pd.to_numeric(df[f"{w}_{f}"], errors="coerce") for w in ("current", "prior"))
        changed |= (a.notna() & b.notna() & (a != b)).to_numpy()
    order = np.concatenate([np.flatnonzero(changed), np.flatnonzero(~changed)])
    patients = df["patient_id"].to_numpy()
    first, seen = [], set()
    for r in order:
        if patients[r] not in seen:
            seen.add(patients[r])
            first.append(r)
    rest = [r for r in order if r not in set(first)]
    return np.asarray((first + rest)[:n], dtype=np.int64)


def write_grid(path: Path, columns: dict[str, np.ndarray], texts: list[str], patients: list[str] | None = None) -> Path:
    """A PNG grid: one row per pair, one column per image set (e.g. prior | generated | VAE round trip | real
    current), the pair's full progression text wrapped beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, k = len(texts), len(columns)
    fig, axes = plt.subplots(n, k + 1, figsize=(2.1 * k + 2.6, 2.2 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [1.25] + [1] * k})
    for i in range(n):
        label = axes[i, 0]
        label.axis("off")
        head = f"{patients[i]}\n" if patients is not None else ""
        label.text(1.0, 0.5, head + "\n".join(_wrap(texts[i], 30)), fontsize=6.5, ha="right", va="center",
                   transform=label.transAxes)
        for j, (title, imgs) in enumerate(columns.items(), start=1):
            ax = axes[i, j]
            ax.imshow(imgs[i], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def fmt(m: dict | None) -> str:
    if not m or m.get("value") is None or math.isnan(m["value"]):
        return "–"
    ci = "" if math.isnan(m.get("lo", math.nan)) else f" [{m['lo']:.3f}, {m['hi']:.3f}]"
    return f"{m['value']:.3f}{ci}"


def metrics_table(rows: dict[str, dict], prefix: str = "test") -> str:
    """Markdown table: one row per run/method, headline metrics with 95% CIs."""
    cols = [c for c in HEADLINE if any(f"{prefix}/{c}" in r for r in rows.values())]
    out = ["| run | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in rows.items():
        out.append(f"| {name} | " + " | ".join(fmt(r.get(f"{prefix}/{c}")) for c in cols) + " |")
    return "\n".join(out)


def write_run_report(run_dir: Path, results: dict) -> Path:
    m = results["metrics"]
    body = ["# Run report", "", f"Run directory: `{run_dir}`", "",
            "Metrics with patient-level bootstrap 95% CIs. `test` = generated follow-ups; `ceiling` = the real "
            "current images; `floor` = the priors (what the identity baseline scores).", ""]
    body += [metrics_table({p: {k.replace(p, "test", 1): v for k, v in m.items() if k.startswith(p + "/")}
                            for p in ("test", "ceiling", "floor")})]
    per = sorted(k for k in m if k.startswith("test/pathology_auroc_changed/"))
    if per:
        body += ["", "Per finding (generated images): AUROC over all test pairs / over pairs where the finding changed", "",
                 "| finding | AUROC | AUROC (changed) | n changed |", "|---|---|---|---|"]
        for k in per:
            f = k.rsplit("/", 1)[1]
            body.append(f"| {f} | {fmt(m.get(f'test/pathology_auroc/{f}'))} | {fmt(m[k])} | "
                        f"{results['counts'].get(f'test/n_changed/{f}', '')} |")
    if results.get("notes"):
        body += ["", "Notes:", *[f"- {n}" for n in results["notes"]]]
    body += ["", "![grid](grid.png)", ""]
    path = Path(run_dir) / "report.md"
    with atomic_write(path, "w") as f:
        f.write("\n".join(body))
    return path


def load_results(run_dir: Path) -> dict | None:
    p = Path(run_dir) / "results.json"
    return json.loads(p.read_text()) if p.is_file() else None
