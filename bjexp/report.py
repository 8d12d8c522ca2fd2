"""`python -m bjexp.report run=<run or multirun dir>`: the study report of a run or a whole sweep.

Finds every `results.json` below the folder, labels each run by the group choices that differ across the sweep,
and writes `report.html` (the study report: tables with CIs and the ceiling/floor rows, per-finding tables, plots,
loss curves, the same test pairs side by side for every arm, config differences; one self-contained file, readable
offline; bjexp.tracking.study), `summary.csv`, `metrics.png` and `report.md`. Columns are the metrics results.json
marks as headlines (`metric_info`, bjexp.eval.registry). `report.wandb=true` also builds a W&B Report
(bjexp.tracking.wandb_report). When W&B is online (`WANDB_MODE=online`), the table is also logged to a summary run.
A sweep that is a full two-level factorial (Table 2) also gets its main effects and two-way interactions with
paired CIs (`effects.csv`, bjexp.tracking.effects; reference levels = the config defaults).
"""
from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from bjexp import cli, schema
from bjexp.errors import ConfigError
from bjexp.io import atomic_write
from bjexp.tracking.report import SPECIALIZING, headline, legend, merged_info, metric_info, metrics_table

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
    varying = [g for g in sorted({g for _, c, _ in found for g in c} - SPECIALIZING)
               if len({c.get(g) for _, c, _ in found}) > 1]
    out: list[Run] = []
    for d, choices, results in found:
        label = ", ".join(f"{g}={choices.get(g)}" for g in varying) or d.name
        out.append(Run(label if label not in {r.label for r in out} else f"{label} ({d.name})", d, choices, results))
    return out


def collect(root: Path) -> dict[str, dict]:
    """{run label: metrics} for every finished run below `root`."""
    return {r.label: r.metrics for r in runs(root)}


def with_columns(info: dict[str, dict], columns) -> dict[str, dict]:
    """`report.columns` (metric names, in order) as the main table's columns instead of the headline metrics."""
    if not columns:
        return info
    bad = [c for c in columns if c not in info]
    if bad:
        raise ConfigError(f"report.columns: {bad} not among these runs' metrics {list(info)}")
    rest = {n: {**m, "headline": False} for n, m in info.items() if n not in columns}
    return {**{c: {**info[c], "headline": True} for c in columns}, **rest}


PLANTED_NOTE = ("What the world builds in (report.planted) against what the sweep measured: recovered = the effect's "
                "95% CI excludes 0 on the planted side; not shown = the CI holds 0; contradicted = it excludes 0 on "
                "the other side.")


def write(root: Path, rcfg=None, logger_cfg=None, baselines: dict[str, str] | None = None) -> dict[str, Path]:
    """The report files of a run or a sweep: `report.html` (the study report, self-contained), `summary.csv`,
    `metrics.png` and, for a sweep, `report.md`. A single run's `report.md` is its full run report (never a
    thinner one-row table). `rcfg` = the `report:` config (W&B report, image pairs); `baselines`: {group: reference
    option} for the effects table (the defaults; `report.reference_levels` overrides them)."""
    from bjexp.tracking import effects, study
    from bjexp.tracking.report import load_results, write_run_report

    root = Path(root)
    found = runs(root)
    rows = {r.label: r.metrics for r in found}
    info = with_columns(merged_info([metric_info(r.results) for r in found]), getattr(rcfg, "columns", None))
    flat = pd.DataFrame({name: {k: v["value"] for k, v in m.items()} for name, m in rows.items()}).T
    with atomic_write(root / "summary.csv", "w") as f:
        flat.to_csv(f)
    table = metrics_table(rows, info)
    refs = {**(baselines or {}), **dict(getattr(rcfg, "reference_levels", None) or {})}
    eff = effects.sweep_effects(found, info, refs)
    expected = list(getattr(rcfg, "planted", None) or [])
    if expected and eff is None:
        raise ConfigError(f"report.planted: {root} is not a two-level factorial sweep, so it has no effects to check")
    check = effects.planted(eff, expected) if expected else None
    if eff is not None:
        with atomic_write(root / "effects.csv", "w") as f:
            eff.to_csv(f, index=False)
    if check is not None:
        with atomic_write(root / "planted.csv", "w") as f:
            check.to_csv(f, index=False)
    png = root / "metrics.png"
    with atomic_write(png) as f:
        f.write(study.metrics_plot(found, info) or b"")
    single = load_results(root)
    if single is not None:  # a run folder: its own full report
        md_path = write_run_report(root, single)
        md = md_path.read_text()
    else:
        md = "\n".join([f"# Report: {root}", "", "Generated follow-ups; patient-bootstrap 95% CIs where the metric has "
                        "one. The full study report (images, plots, config): report.html.", "",
                        table, "", "Metrics:", *legend(info, headline(info)), "", "![metrics](metrics.png)", "",
                        *(["## Effects", "", effects.explain(eff), "", effects.markdown(eff), ""]
                          if eff is not None else []),
                        *(["## Planted by construction", "", PLANTED_NOTE, "", effects.planted_markdown(check), ""]
                          if check is not None else [])])
        with atomic_write(root / "report.md", "w") as f:
            f.write(md)
    extra = (study.section("Effects", f"<p>{html.escape(effects.explain(eff))}</p>{effects.html_table(eff)}")
             if eff is not None else "")
    if check is not None:
        extra += study.section("Planted by construction",
                               f"<p>{html.escape(PLANTED_NOTE)}</p>{effects.planted_html(check)}")
    page = study.write_html(root, found, info, grid_pairs=int(getattr(rcfg, "grid_pairs", 8) or 8), extra=extra)
    out = {"markdown": root / "report.md", "html": page, "csv": root / "summary.csv", "plot": png,
           **({"effects": root / "effects.csv"} if eff is not None else {}),
           **({"planted": root / "planted.csv"} if check is not None else {})}
    if os.environ.get("WANDB_MODE", "offline") == "online":
        import wandb

        with wandb.init(project="bjexp", job_type="report", name=f"report-{root.name}",
                        config={"metric_info": info}) as r:
            r.log({"summary": wandb.Table(dataframe=flat.reset_index(names="run")),
                   **({"effects": wandb.Table(dataframe=eff)} if eff is not None else {})})
    if rcfg is not None and rcfg.wandb:
        from bjexp.tracking import wandb_report

        project = rcfg.wandb_project or (logger_cfg.project if logger_cfg is not None else "bjexp")
        entity = rcfg.wandb_entity or (logger_cfg.entity if logger_cfg is not None else None)
        with_refs = metrics_table({**rows, **dict(study.reference_rows(found))}, info)
        print(wandb_report.publish(root, found, info, project=project, entity=entity, table_md=with_refs))
        if (root / "wandb_report.json").is_file():
            out["wandb_spec"] = root / "wandb_report.json"
    print(md)
    print(f"study report: {page}")
    return out


@cli.main()
def main(cfg: DictConfig) -> None:
    if not cfg.run:
        raise SystemExit("usage: python -m bjexp.report run=<run dir or multirun dir>")
    from hydra.core.hydra_config import HydraConfig

    # This command composes the same defaults list as a run: its group choices are the effects' reference levels.
    write(Path(cfg.run), cfg.report, cfg.logger,
          baselines={g: str(c) for g, c in HydraConfig.get().runtime.choices.items()})


if __name__ == "__main__":
    main()
