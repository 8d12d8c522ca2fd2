"""`python -m bjexp.report run=<run or multirun dir>`: one table + plot for a run or a whole sweep.

Finds every `results.json` below the folder, labels each run by the group choices that differ across the sweep,
and writes `summary.csv`, `report.md` and `report.html` (open without W&B) plus `metrics.png` (values with 95%
CIs). When W&B is online (`WANDB_MODE=online`), the table is also logged to a summary run of the study's group.
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from bjexp import cli, schema
from bjexp.io import atomic_write
from bjexp.tracking.report import HEADLINE, fmt, metrics_table

schema.register()


def collect(root: Path) -> dict[str, dict]:
    """{run label: metrics} for every finished run below `root`."""
    runs = []
    for res in sorted(Path(root).rglob("results.json")):
        info_path = res.parent / "run.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        choices = {**info.get("choices", {}), "seed": info.get("seed")}  # seeds of a sweep label their runs too
        runs.append((res.parent, choices, json.loads(res.read_text())["metrics"]))
    if not runs:
        raise FileNotFoundError(f"no results.json below {root}: run `python -m bjexp.train` (or -m for a sweep) first")
    varying = [g for g in sorted({g for _, c, _ in runs for g in c}) if len({c.get(g) for _, c, _ in runs}) > 1]
    out = {}
    for d, choices, metrics in runs:
        label = ", ".join(f"{g}={choices.get(g)}" for g in varying) or d.name
        out[label if label not in out else f"{label} ({d.name})"] = metrics
    return out


def plot(rows: dict[str, dict], path: Path, prefix: str = "test") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [c for c in HEADLINE if c != "cmig" and any(f"{prefix}/{c}" in r for r in rows.values())]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(cols)), 3.6))
    w = 0.8 / max(len(rows), 1)
    for i, (name, r) in enumerate(rows.items()):
        vals = [r.get(f"{prefix}/{c}", {}).get("value", math.nan) for c in cols]
        lo = [v - r.get(f"{prefix}/{c}", {}).get("lo", v) for c, v in zip(cols, vals)]
        hi = [r.get(f"{prefix}/{c}", {}).get("hi", v) - v for c, v in zip(cols, vals)]
        ax.bar(np.arange(len(cols)) + i * w, vals, w, yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], capsize=2, label=name)
    ax.set_xticks(np.arange(len(cols)) + w * (len(rows) - 1) / 2, cols, rotation=20, fontsize=8)
    ax.set_ylabel("value (95% CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def write(root: Path) -> dict[str, Path]:
    root = Path(root)
    rows = collect(root)
    flat = pd.DataFrame({name: {k: v["value"] for k, v in m.items()} for name, m in rows.items()}).T
    with atomic_write(root / "summary.csv", "w") as f:
        flat.to_csv(f)
    table = metrics_table(rows)
    cmig = "\n".join(f"- {n}: CMIG {fmt(m.get('test/cmig'))}" for n, m in rows.items())
    png = plot(rows, root / "metrics.png")
    md = f"# Report: {root}\n\nGenerated follow-ups, patient-bootstrap 95% CIs.\n\n{table}\n\n{cmig}\n\n![metrics](metrics.png)\n"
    with atomic_write(root / "report.md", "w") as f:
        f.write(md)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run", *[c for c in HEADLINE]])
    body = "".join("<tr><td>" + html.escape(n) + "</td>" + "".join(f"<td>{fmt(m.get(f'test/{c}'))}</td>" for c in HEADLINE)
                   + "</tr>" for n, m in rows.items())
    page = (f"<!doctype html><meta charset=utf-8><title>bjexp report</title><h1>{html.escape(str(root))}</h1>"
            f"<p>Generated follow-ups; values with patient-bootstrap 95% CIs.</p><table border=1 cellpadding=4>"
            f"<tr>{head}</tr>{body}</table><p><img src='metrics.png'></p>")
    with atomic_write(root / "report.html", "w") as f:
        f.write(page)
    if os.environ.get("WANDB_MODE", "offline") == "online":
        import wandb

        with wandb.init(project="bjexp", job_type="report", name=f"report-{root.name}") as r:
            r.log({"summary": wandb.Table(dataframe=flat.reset_index(names="run"))})
    print(md)
    return {"markdown": root / "report.md", "html": root / "report.html", "csv": root / "summary.csv", "plot": png}


@cli.main()
def main(cfg: DictConfig) -> None:
    if not cfg.run:
        raise SystemExit("usage: python -m bjexp.report run=<run dir or multirun dir>")
    write(Path(cfg.run))


if __name__ == "__main__":
    main()
