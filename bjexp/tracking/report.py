"""Local reports a person can open without W&B: the image grid, a per-run Markdown table, and sweep tables."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bjexp.io import atomic_write

HEADLINE = ["pathology_auroc", "pathology_auroc_changed", "pathology_accuracy", "race_auroc", "age_r", "sex_accuracy",
            "identity_similarity", "cmig"]


def write_grid(path: Path, prior: np.ndarray, gen: np.ndarray, cur: np.ndarray, texts: list[str], n: int = 8) -> Path:
    """Rows of (prior | generated | real current) with the progression text, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(gen))
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.3 * n), squeeze=False)
    for i in range(n):
        for j, (img, title) in enumerate(((prior[i], "prior"), (gen[i], "generated"), (cur[i], "real current"))):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
        axes[i, 0].set_ylabel("\n".join(_wrap(texts[i], 28)[:4]), fontsize=6, rotation=0, ha="right", va="center")
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
