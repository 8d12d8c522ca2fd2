"""Local reports a person can open without W&B: the image grid, a per-run Markdown table, and sweep tables."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bjexp.io import atomic_write

SIDES = {"test": "generated follow-ups", "ceiling": "the real current images", "floor": "the priors (identity)",
         "latent": "the real current images after the generator's autoencoder round trip (the latent's ceiling)"}
ARROW = {"higher": "↑", "lower": "↓"}


# Groups conf/config.yaml selects from other choices (e.g. method_model: ${method}_${model}): never a label or a
# factor of a sweep.
SPECIALIZING = {"model_overrides", "encoder_model", "method_model"}

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


def metric_info(results: dict) -> dict[str, dict]:
    """A results.json's `metric_info` (bjexp.eval.registry: description, direction, headline, ...). Results written
    before the registry have none: their one-level `test/<name>` keys count as headlines of unknown direction."""
    if results.get("metric_info"):
        return results["metric_info"]
    names = dict.fromkeys(k.split("/")[1] for k in results.get("metrics", {}) if k.count("/") == 1)
    return {n: {"description": "", "direction": None, "headline": True, "bootstrap": None, "unit": ""} for n in names}


def merged_info(infos: list[dict[str, dict]]) -> dict[str, dict]:
    """One metric_info over several runs (a sweep): first description wins, order of first appearance."""
    out: dict[str, dict] = {}
    for info in infos:
        for name, meta in info.items():
            out.setdefault(name, meta)
    return out


def headline(info: dict[str, dict]) -> list[str]:
    return [n for n, m in info.items() if m.get("headline")]


def column(name: str, info: dict[str, dict]) -> str:
    """Column title: the name with its direction (↑ higher is better, ↓ lower) and unit."""
    m = info.get(name, {})
    unit = f" ({m['unit']})" if m.get("unit") else ""
    return f"{name}{unit} {ARROW.get(m.get('direction'), '')}".rstrip()


def metrics_table(rows: dict[str, dict], info: dict[str, dict], prefix: str = "test") -> str:
    """Markdown table: one row per run/method, the headline metrics (from metric_info) with 95% CIs."""
    cols = [c for c in headline(info) if any(f"{prefix}/{c}" in r for r in rows.values())]
    out = ["| run | " + " | ".join(column(c, info) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in rows.items():
        out.append(f"| {name} | " + " | ".join(fmt(r.get(f"{prefix}/{c}")) for c in cols) + " |")
    return "\n".join(out)


def legend(info: dict[str, dict], names: list[str] | None = None) -> list[str]:
    """One line per metric: what it is, which way is better, whether it has a CI."""
    out = []
    for n in names or list(info):
        m = info.get(n, {})
        how = {True: "patient-bootstrap 95% CI", False: "set-level, no CI"}.get(m.get("bootstrap"), "")
        bits = ", ".join(x for x in (f"{m['direction']} is better" if m.get("direction") else "", how) if x)
        out.append(f"- **{n}**: {m.get('description', '')}" + (f" ({bits})" if bits else ""))
    return out


def sub_tables(m: dict, info: dict[str, dict]) -> list[str]:
    """Per metric with sub-keys (`name/<sub>`, e.g. per finding or structure): subs x sides."""
    out = []
    for name in info:
        subs = list(dict.fromkeys(k.split("/", 2)[2] for k in m if k.count("/") == 2 and k.split("/")[1] == name))
        if not subs:
            continue
        sides = [s for s in SIDES if any(f"{s}/{name}/{x}" in m for x in subs)]  # columns in SIDES order
        out += ["", f"**{name}/…**: {info[name].get('description', '')}", "",
                "| | " + " | ".join(sides) + " |", "|---|" + "---|" * len(sides)]
        out += [f"| {x} | " + " | ".join(fmt(m.get(f"{s}/{name}/{x}")) for s in sides) + " |" for x in subs]
    return out


def latent_ratios(m: dict, info: dict[str, dict]) -> dict:
    """Each higher-is-better headline metric of the generated images as a fraction of the latent's ceiling (point
    values, no CI): how much of what the autoencoder keeps the generator keeps."""
    out = {}
    for c in (c for c in headline(info) if info[c].get("direction") == "higher"):
        t, z = m.get(f"test/{c}", {}).get("value"), m.get(f"latent/{c}", {}).get("value")
        if t is not None and z and not math.isnan(t) and not math.isnan(z):
            out[f"test/{c}"] = {"value": t / z, "lo": math.nan, "hi": math.nan}
    return out


def write_run_report(run_dir: Path, results: dict) -> Path:
    m, info = results["metrics"], metric_info(results)
    sides = [p for p in SIDES if any(k.startswith(p + "/") for k in m)]
    split = results.get("split", "test")  # results written before eval.split scored the test split
    body = ["# Run report", "", f"Run directory: `{run_dir}`", "", f"Scored on the **{split}** split.", "",
            "Headline metrics; patient-level bootstrap 95% CIs where the metric has one. "
            + "; ".join(f"`{p}` = {SIDES[p]}" for p in sides) + ".", ""]
    rows = {p: {k.replace(p, "test", 1): v for k, v in m.items() if k.startswith(p + "/")} for p in sides}
    if "latent" in rows:
        rows["test ÷ latent"] = latent_ratios(m, info)
    body += [metrics_table(rows, info)]
    body += ["", "Metrics:", *legend(info)]
    body += sub_tables(m, info)
    c = results.get("counts", {})
    if c:
        changed = ", ".join(f"{k.rsplit('/', 1)[1]} {v}" for k, v in c.items() if k.startswith("test/n_changed/"))
        body += ["", f"{split.capitalize()} pairs: {c.get('test/n_pairs', '?')} from "
                 f"{c.get('test/n_patients', '?')} patients"
                 + (f"; pairs whose label changed: {changed}" if changed else "") + "."]
    if results.get("notes"):
        body += ["", "Notes:", *[f"- {n}" for n in results["notes"]]]
    body += ["", "![grid](grid.png)", ""]
    for name, what in (("memorization.png", "Memorization audit, the closest pairs (generated | nearest training "
                                            "image | real current)"),
                       ("guidance.png", "Guidance curves: instruction-following against retention")):
        if (Path(run_dir) / name).is_file():
            body += [f"{what}:", "", f"![{name[:-4]}]({name})", ""]
    path = Path(run_dir) / "report.md"
    with atomic_write(path, "w") as f:
        f.write("\n".join(body))
    return path


def load_results(run_dir: Path) -> dict | None:
    p = Path(run_dir) / "results.json"
    return json.loads(p.read_text()) if p.is_file() else None
