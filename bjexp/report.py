"""`python -m bjexp.report run=<run or multirun dir>`: one table + plot for a run or a whole sweep.

Finds every `results.json` below the folder, labels each run by the group choices that differ across the sweep,
and writes `summary.csv`, `report.md` and `report.html` (open without W&B) plus `metrics.png` (values with 95%
CIs). Columns are the metrics results.json marks as headlines (`metric_info`, bjexp.eval.registry). A sweep that is
a full two-level factorial (Table 2) also gets its main effects and two-way interactions with paired CIs
(`effects.csv`, bjexp.tracking.effects; reference levels = the config defaults). When W&B is online
(`WANDB_MODE=online`), the table is also logged to a summary run of the study's group.
"""
from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from bjexp import schema
from bjexp.io import atomic_write
from bjexp.tracking.report import column, fmt, headline, legend, merged_info, metric_info, metrics_table

schema.register()


@dataclass
class Run:
    label: str
    dir: Path
    choices: dict
    results: dict = field(repr=False)

    @property
    def metrics(self) -> dict:
        return self.results["metrics"]


def runs(root: Path) -> list[Run]:
    """Every finished run below `root`, labelled by the group choices (and seeds) that vary across them."""
    found = []
    for res in sorted(Path(root).rglob("results.json")):
        info_path = res.parent / "run.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        choices = {**info.get("choices", {}), "seed": info.get("seed")}  # seeds of a sweep label their runs too
        found.append((res.parent, choices, json.loads(res.read_text())))
    if not found:
        raise FileNotFoundError(f"no results.json below {root}: run `python -m bjexp.train` (or -m for a sweep) first")
    varying = [g for g in sorted({g for _, c, _ in found for g in c}) if len({c.get(g) for _, c, _ in found}) > 1]
    out: list[Run] = []
    for d, choices, results in found:
        label = ", ".join(f"{g}={choices.get(g)}" for g in varying) or d.name
        out.append(Run(label if label not in {r.label for r in out} else f"{label} ({d.name})", d, choices, results))
    return out


def collect(root: Path) -> dict[str, dict]:
    """{run label: metrics} for every finished run below `root`."""
    return {r.label: r.metrics for r in runs(root)}


def plot(rows: dict[str, dict], info: dict[str, dict], path: Path, prefix: str = "test") -> Path:
    """One panel per headline metric (their scales differ: AUROC, CMIG in %, FID), a bar per run with its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = [c for c in headline(info) if any(f"{prefix}/{c}" in r for r in rows.values())] or ["(none)"]
    ncol = min(4, len(cols))
    nrow = math.ceil(len(cols) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow + 0.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, c in zip(axes.flat, cols):
        vals = np.array([r.get(f"{prefix}/{c}", {}).get("value", math.nan) for r in rows.values()], float)
        lo = np.array([r.get(f"{prefix}/{c}", {}).get("lo", math.nan) for r in rows.values()], float)
        hi = np.array([r.get(f"{prefix}/{c}", {}).get("hi", math.nan) for r in rows.values()], float)
        err = np.nan_to_num(np.stack([vals - lo, hi - vals]))
        ax.bar(np.arange(len(rows)), vals, yerr=err, capsize=2, color=[colors[i % len(colors)] for i in range(len(rows))])
        ax.set_title(column(c, info), fontsize=8)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i % len(colors)]) for i in range(len(rows))]
    fig.legend(handles, list(rows), loc="lower center", fontsize=7, ncol=min(3, len(rows)), frameon=False)
    fig.tight_layout(rect=(0, 0.05 + 0.03 * math.ceil(len(rows) / 3), 1, 1))
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def write(root: Path, baselines: dict[str, str] | None = None) -> dict[str, Path]:
    """The sweep's report files. `baselines`: {group: reference option} for the effects table (the defaults)."""
    from bjexp.tracking import effects

    root = Path(root)
    found = runs(root)
    rows = {r.label: r.metrics for r in found}
    info = merged_info([metric_info(r.results) for r in found])
    flat = pd.DataFrame({name: {k: v["value"] for k, v in m.items()} for name, m in rows.items()}).T
    with atomic_write(root / "summary.csv", "w") as f:
        flat.to_csv(f)
    table = metrics_table(rows, info)
    png = plot(rows, info, root / "metrics.png")
    md = [f"# Report: {root}", "", "Generated follow-ups; patient-bootstrap 95% CIs where the metric has one.", "",
          table, "", "Metrics:", *legend(info, headline(info)), ""]
    md += ["![metrics](metrics.png)", ""]
    eff = effects.sweep_effects(found, info, baselines or {})
    if eff is not None:
        with atomic_write(root / "effects.csv", "w") as f:
            eff.to_csv(f, index=False)
        md += ["## Effects", "", effects.explain(eff), "", effects.markdown(eff, info), ""]
    md = "\n".join(md)
    with atomic_write(root / "report.md", "w") as f:
        f.write(md)
    cols = [c for c in headline(info) if any(f"test/{c}" in r for r in rows.values())]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run", *[column(c, info) for c in cols]])
    body = "".join("<tr><td>" + html.escape(n) + "</td>" + "".join(f"<td>{fmt(m.get(f'test/{c}'))}</td>" for c in cols)
                   + "</tr>" for n, m in rows.items())
    desc = "".join(f"<li><b>{html.escape(c)}</b>: {html.escape(info[c].get('description', ''))}</li>" for c in cols)
    page = (f"<!doctype html><meta charset=utf-8><title>bjexp report</title><h1>{html.escape(str(root))}</h1>"
            f"<p>Generated follow-ups; values with patient-bootstrap 95% CIs where the metric has one.</p>"
            f"<table border=1 cellpadding=4><tr>{head}</tr>{body}</table><ul>{desc}</ul>"
            "<p><img src='metrics.png'></p>")
    if eff is not None:
        page += f"<h2>Effects</h2><p>{html.escape(effects.explain(eff))}</p>{effects.html_table(eff, info)}"
    with atomic_write(root / "report.html", "w") as f:
        f.write(page)
    if os.environ.get("WANDB_MODE", "offline") == "online":
        import wandb

        with wandb.init(project="bjexp", job_type="report", name=f"report-{root.name}",
                        config={"metric_info": info}) as r:
            r.log({"summary": wandb.Table(dataframe=flat.reset_index(names="run")),
                   **({"effects": wandb.Table(dataframe=eff)} if eff is not None else {})})
    print(md)
    out = {"markdown": root / "report.md", "html": root / "report.html", "csv": root / "summary.csv", "plot": png}
    return out if eff is None else {**out, "effects": root / "effects.csv"}


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if not cfg.run:
        raise SystemExit("usage: python -m bjexp.report run=<run dir or multirun dir>")
    from hydra.core.hydra_config import HydraConfig

    # This command composes the same defaults list as a run: its group choices are the reference levels.
    write(Path(cfg.run), baselines={g: str(c) for g, c in HydraConfig.get().runtime.choices.items()})


if __name__ == "__main__":
    main()
