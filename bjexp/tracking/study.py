"""The study report: one self-contained HTML page for a run or a sweep (`python -m bjexp.report run=<dir>`).

Everything is inlined (plots and image strips as PNG data URIs, CSS in the page), so the file opens offline and can
be mailed. It holds: the headline metrics with their CIs and the ceiling / floor rows; each headline metric's
per-sub table (per finding: all pairs, changed pairs); the metrics plot with the ceiling and floor as reference
lines; training and validation loss per arm; for a sweep, each ablation axis against its options; the same test
pairs side by side for every arm (distinct patients, changed pairs first, full progression text); the config
differences between arms and each run's git SHA, seed and manifest hash. Which metrics are headlines, their
direction and whether they have a CI come from results.json's `metric_info` (bjexp.eval.registry).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bjexp.tracking.report import column, fmt, headline

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:34px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}tr.ref td{color:#555;background:#fafafa}
td.best{font-weight:600}img{max-width:100%}code{background:#f4f4f4;padding:0 3px}.note{color:#666}
"""
SIDE_LABEL = {"ceiling": "ceiling (real current)", "floor": "floor (prior = identity)",
              "latent": "latent ceiling (real current via the autoencoder)"}
REF_STYLE = {"ceiling": dict(color="tab:green", ls="--"), "latent": dict(color="tab:orange", ls="-."),
             "floor": dict(color="grey", ls=":")}  # the plots' reference lines


def page(root: Path, runs: list, info: dict[str, dict], *, grid_pairs: int = 8, extra: str = "") -> str:
    """The page for `runs` (objects with label, dir, choices, results; bjexp.report.runs). `extra`: more HTML
    sections (e.g. the sweep's effects table)."""
    root = Path(root)
    single = len(runs) == 1
    title = f"bjexp {'run' if single else 'study'} report: {root.name or root}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class=note><code>{html.escape(str(root))}</code> · {len(runs)} run{'s' * (not single)} · "
             f"written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. <b>test</b> = generated follow-ups; "
             f"<b>ceiling</b> = the real current images (what a perfect generator scores); <b>latent ceiling</b> = "
             f"the real current images after the generator's autoencoder round trip (what a perfect generator in "
             f"its latent space scores); <b>floor</b> = the priors (what copying the prior scores).</p>"]
    parts += [section("Metrics", metrics_table(runs, info) + legend(info)), extra,
              section("Per finding and sub-metric", sub_tables(runs, info)),
              section("Plots", _img(metrics_plot(runs, info), "metrics with ceiling and floor")
                      + loss_section(runs) + (axis_plots(runs, info) if not single else "")
                      + _img(guidance_plot(runs), "guidance curves")),
              section("Images", image_section(runs, grid_pairs)),
              section("Memorization audit", memorization_section(runs)),
              section("Runs and config", runs_table(runs) + config_diff(runs)),
              section("Notes", notes(runs))]
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><body>{''.join(p for p in parts if p)}</body></html>")


def section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>{body}" if body else ""


# -- tables --------------------------------------------------------------------------------------------------------
def _cols(runs, info, prefix="test") -> list[str]:
    return [c for c in headline(info) if any(f"{prefix}/{c}" in r.metrics for r in runs)]


def reference_rows(runs) -> list[tuple[str, dict]]:
    """(label, metrics as test/…) of the reference sides (ceiling, latent ceiling, floor): one row each when every
    arm that has the side scored the same pairs the same way (the latent's: the same autoencoder), else one per arm."""
    out = []
    for side in ("ceiling", "latent", "floor"):
        per = [(r, {k.replace(side, "test", 1): v for k, v in r.metrics.items() if k.startswith(side + "/")})
               for r in runs]
        per = [(r, p) for r, p in per if p]
        if not per:
            continue
        same = all(json.dumps(p, sort_keys=True) == json.dumps(per[0][1], sort_keys=True) for _, p in per)
        out += [(SIDE_LABEL[side], per[0][1])] if same else [(f"{SIDE_LABEL[side]} · {r.label}", p) for r, p in per]
    return out


def metrics_table(runs, info) -> str:
    cols = _cols(runs, info)
    if not cols:
        return "<p>No headline metrics in these results.</p>"
    best = {}
    for c in cols:
        vals = [r.metrics.get(f"test/{c}", {}).get("value", math.nan) for r in runs]
        d = info.get(c, {}).get("direction")
        if len(runs) > 1 and d in ("higher", "lower") and not all(math.isnan(v) for v in vals):
            best[c] = (np.nanargmax if d == "higher" else np.nanargmin)(vals)
    head = "".join(f"<th>{html.escape(column(c, info))}</th>" for c in cols)
    rows = []
    for i, r in enumerate(runs):
        cells = "".join(f"<td{' class=best' if best.get(c) == i else ''}>{fmt(r.metrics.get(f'test/{c}'))}</td>"
                        for c in cols)
        rows.append(f"<tr><td>{html.escape(r.label)}</td>{cells}</tr>")
    for label, m in reference_rows(runs):
        rows.append(f"<tr class=ref><td>{html.escape(label)}</td>"
                    + "".join(f"<td>{fmt(m.get(f'test/{c}'))}</td>" for c in cols) + "</tr>")
    return (f"<table id=metrics><tr><th>run</th>{head}</tr>{''.join(rows)}</table>"
            "<p class=note>Values [95% CI]; bold: the best arm by the metric's direction (↑ higher, ↓ lower is "
            "better).</p>")


def legend(info) -> str:
    items = []
    for n in headline(info):
        m = info[n]
        ci = {True: "patient-bootstrap 95% CI", False: "set-level, no CI"}.get(m.get("bootstrap"), "")
        how = ", ".join(x for x in (f"{m['direction']} is better" if m.get("direction") else "", ci) if x)
        items.append(f"<li><b>{html.escape(n)}</b>: {html.escape(m.get('description', ''))}"
                     + (f" ({html.escape(how)})" if how else "") + "</li>")
    return f"<ul>{''.join(items)}</ul>" if items else ""


def sub_tables(runs, info) -> str:
    """Per headline metric with sub-keys (`test/<name>/<sub>`, e.g. per finding): subs x (arms, ceiling, floor)."""
    out = []
    for name in headline(info):
        subs = list(dict.fromkeys(k.split("/", 2)[2] for r in runs for k in r.metrics
                                  if k.count("/") == 2 and k.split("/")[1] == name))
        if not subs:
            continue
        cols = [(r.label, {k: v for k, v in r.metrics.items() if k.startswith("test/")}) for r in runs]
        cols += reference_rows(runs)
        counts = runs[0].results.get("counts", {})
        n_col = [s for s in subs if f"test/n_changed/{s}" in counts] if "changed" in name else []
        head = "".join(f"<th>{html.escape(lbl)}</th>" for lbl, _ in cols) + ("<th>n changed</th>" if n_col else "")
        body = "".join(f"<tr><td>{html.escape(s)}</td>" + "".join(f"<td>{fmt(m.get(f'test/{name}/{s}'))}</td>"
                                                                   for _, m in cols)
                       + (f"<td>{counts.get(f'test/n_changed/{s}', '')}</td>" if n_col else "") + "</tr>"
                       for s in subs)
        out.append(f"<h3>{html.escape(name)}</h3><p class=note>{html.escape(info[name].get('description', ''))}</p>"
                   f"<table class=sub data-metric='{html.escape(name)}'><tr><th></th>{head}</tr>{body}</table>")
    return "".join(out)


def runs_table(runs) -> str:
    rows = []
    for r in runs:
        info = _json(r.dir / "run.json")
        git = info.get("git", {})
        sha = (git.get("sha") or "?")[:10] + (" (dirty)" if git.get("dirty") else "")
        rows.append(f"<tr><td>{html.escape(r.label)}</td><td><code>{html.escape(sha)}</code></td>"
                    f"<td>{info.get('seed', '')}</td><td><code>{html.escape(str(info.get('manifest_hash', '')))}</code>"
                    f"</td><td>{html.escape(str(info.get('started', '')))}</td>"
                    f"<td><code>{html.escape(str(r.dir))}</code></td></tr>")
    return ("<table id=runs><tr><th>run</th><th>git SHA</th><th>seed</th><th>manifest hash</th><th>started</th>"
            f"<th>folder</th></tr>{''.join(rows)}</table>")


def config_diff(runs) -> str:
    """The resolved-config keys whose values differ between the arms (paths and run folders left out)."""
    import yaml

    flat = []
    for r in runs:
        p = r.dir / "config.yaml"
        flat.append(_flatten(yaml.safe_load(p.read_text())) if p.is_file() else {})
    if len(runs) < 2:
        ch = runs[0].choices if runs else {}
        return ("<p>Group choices: " + ", ".join(f"<code>{html.escape(f'{g}={v}')}</code>" for g, v in ch.items()
                                               if v is not None) + "</p>") if ch else ""
    keys = sorted({k for f in flat for k in f if not k.startswith(("paths.", "run", "hydra."))})
    diff = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]
    if not diff:
        return "<p>The arms' resolved configs are identical (apart from paths).</p>"
    head = "".join(f"<th>{html.escape(r.label)}</th>" for r in runs)
    body = "".join(f"<tr><td><code>{html.escape(k)}</code></td>"
                   + "".join(f"<td>{html.escape(_short(f.get(k, '–')))}</td>" for f in flat) + "</tr>" for k in diff)
    return f"<h3>Config differences</h3><table id=config-diff><tr><th>key</th>{head}</tr>{body}</table>"


def notes(runs) -> str:
    items = [f"<li>{html.escape(r.label)}: {html.escape(n)}</li>" for r in runs for n in r.results.get("notes", [])]
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _flatten(d, prefix="") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= 80 else s[:77] + "…"


def _json(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}


# -- plots ---------------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _plt().close(fig)
    return buf.getvalue()


def _img(png: bytes | None, alt: str, cls: str = "plot") -> str:
    if not png:
        return ""
    return f"<p><img class={cls} alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>"


def metrics_plot(runs, info) -> bytes | None:
    """One panel per headline metric: a bar per arm with its CI; the ceiling (green dashed), the first arm's latent
    ceiling (orange dash-dot) and the floor (grey dotted) as reference lines."""
    cols = _cols(runs, info)
    if not cols:
        return None
    plt = _plt()
    ncol = min(4, len(cols))
    nrow = math.ceil(len(cols) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.7 * nrow + 0.7), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    refs = {side: next((r.metrics for r in runs if any(k.startswith(side + "/") for k in r.metrics)), {})
            for side in REF_STYLE}
    for ax, c in zip(axes.flat, cols):
        vals, err = _values(runs, f"test/{c}")
        ax.bar(np.arange(len(runs)), vals, yerr=err, capsize=3, color=[colors[i % len(colors)] for i in range(len(runs))])
        for side, style in REF_STYLE.items():
            v = refs[side].get(f"{side}/{c}", {}).get("value")
            if v is not None and not math.isnan(v):
                ax.axhline(v, lw=1.3, label=side, **style)
        ax.set_title(column(c, info), fontsize=9)
        ax.set_xticks([])
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i % len(colors)]) for i in range(len(runs))]
    shown = [side for side in REF_STYLE if refs[side]]
    handles += [plt.Line2D([], [], **REF_STYLE[side]) for side in shown]
    fig.legend(handles, [r.label for r in runs] + [SIDE_LABEL[side] for side in shown], loc="lower center",
               fontsize=7, ncol=min(3, len(handles)), frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * math.ceil(len(handles) / 3), 1, 1))
    return _png(fig)


def guidance_curves(metrics: dict) -> dict[float, list[tuple[float, float, float]]]:
    """results' `test/guidance_curve/t<text>_i<image>/{follow,retain}` -> {image guidance: [(text guidance,
    retain, follow)]} sorted by text guidance (empty without the probe)."""
    import re

    out: dict[float, list] = {}
    for k, v in metrics.items():
        m = re.fullmatch(r"test/guidance_curve/t([\d.]+)_i([\d.]+)/follow", k)
        if m and (r := metrics.get(k[: -len("follow")] + "retain")):
            out.setdefault(float(m.group(2)), []).append((float(m.group(1)), r["value"], v["value"]))
    return {ig: sorted(pts) for ig, pts in sorted(out.items())}


def guidance_plot(runs) -> bytes | None:
    """Instruction-following against retention over the guidance grid (probe `guidance_curve`): a panel per arm
    that has it, a line per image guidance through the text guidance scales (labelled)."""
    have = [(r, c) for r in runs if (c := guidance_curves(r.metrics))]
    if not have:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(have), figsize=(3.6 * len(have), 3.2), squeeze=False)
    for ax, (r, curves) in zip(axes.flat, have):
        for ig, pts in curves.items():
            t, retain, follow = zip(*pts)
            ax.plot(retain, follow, "o-", ms=4, label=f"image guidance {ig:g}")
            for x, y, tg in zip(retain, follow, t):
                ax.annotate(f"{tg:g}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("retention (SSIM to the prior)", fontsize=8)
        ax.set_ylabel("instruction-following ('new X' shown)", fontsize=8)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(r.label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    fig.suptitle("guidance curves (points labelled by text guidance)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _values(runs, key) -> tuple[np.ndarray, np.ndarray]:
    vals = np.array([r.metrics.get(key, {}).get("value", math.nan) for r in runs], float)
    lo = np.array([r.metrics.get(key, {}).get("lo", math.nan) for r in runs], float)
    hi = np.array([r.metrics.get(key, {}).get("hi", math.nan) for r in runs], float)
    return vals, np.nan_to_num(np.abs(np.stack([vals - lo, hi - vals])))


def loss_curves(run_dir: Path) -> pd.DataFrame | None:
    """The run's logged losses (Lightning's CSV log, `<run>/csv/metrics.csv`): columns step, train/loss, val/loss."""
    p = Path(run_dir) / "csv" / "metrics.csv"
    if not p.is_file():
        return None
    df = pd.read_csv(p)
    keep = [c for c in ("train/loss", "val/loss") if c in df]
    return df[["step", *keep]] if keep and "step" in df else None


def loss_section(runs) -> str:
    curves = {r.label: loss_curves(r.dir) for r in runs}
    have = {k: v for k, v in curves.items() if v is not None}
    missing = [k for k, v in curves.items() if v is None]
    note = (f"<p class=note>No loss log (<code>csv/metrics.csv</code>) for: {html.escape(', '.join(missing))} "
            "(methods that do not train, or runs from before every run logged CSV).</p>") if missing else ""
    if not have:
        return note
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), squeeze=False)
    for ax, key in zip(axes[0], ("train/loss", "val/loss")):
        for label, df in have.items():
            if key in df:
                d = df[["step", key]].dropna()
                ax.plot(d["step"], d[key], marker="o" if key == "val/loss" else None, ms=3, lw=1, label=label)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return "<h3>Loss curves</h3>" + _img(_png(fig), "training and validation loss") + note


def axes_of(runs) -> dict[str, list]:
    """The ablation axes of a sweep: the choices that vary across its runs (seed included), with their options."""
    groups = sorted({g for r in runs for g in r.choices})
    return {g: opts for g in groups if len(opts := list(dict.fromkeys(str(r.choices.get(g)) for r in runs))) > 1}


def axis_plots(runs, info) -> str:
    """Per ablation axis: each headline metric against the axis's options (a point per run with its CI; runs
    sharing an option differ in the other axes, named in the legend)."""
    cols = _cols(runs, info)
    axes = axes_of(runs)
    if not cols or not axes:
        return ""
    plt = _plt()
    out = []
    for g, opts in axes.items():
        others = [h for h in axes if h != g]
        ncol = min(4, len(cols))
        nrow = math.ceil(len(cols) / ncol)
        fig, axs = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.6 * nrow + 0.6), squeeze=False)
        groups = list(dict.fromkeys(", ".join(f"{h}={r.choices.get(h)}" for h in others) for r in runs))
        for ax, c in zip(axs.flat, cols):
            for j, grp in enumerate(groups):
                sel = [r for r in runs if ", ".join(f"{h}={r.choices.get(h)}" for h in others) == grp]
                x = np.array([opts.index(str(r.choices.get(g))) for r in sel]) + (j - (len(groups) - 1) / 2) * 0.08
                vals, err = _values(sel, f"test/{c}")
                ax.errorbar(x, vals, yerr=err, fmt="o", capsize=3, ms=4, label=grp or None)
            ax.set_xticks(range(len(opts)), opts, fontsize=7, rotation=15)
            ax.set_title(column(c, info), fontsize=9)
            ax.tick_params(labelsize=7)
        for ax in list(axs.flat)[len(cols):]:
            ax.axis("off")
        if others:
            handles, labels = axs.flat[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="lower center", fontsize=7, ncol=min(3, len(labels)), frameon=False)
            fig.tight_layout(rect=(0, 0.06 + 0.035 * math.ceil(len(labels) / 3), 1, 1))
        else:
            fig.tight_layout()
        out.append(f"<h3>Axis: {html.escape(g)}</h3>" + _img(_png(fig), f"metrics against {g}", "axis"))
    return "".join(out)


# -- images --------------------------------------------------------------------------------------------------------
def image_section(runs, n: int) -> str:
    """The same test pairs for every arm: prior | each arm's output | (the first arm's VAE round trip of the
    current) | real current, one pair per patient, changed pairs first."""
    from bjexp.data import manifest as mf
    from bjexp.imaging import read_grey
    from bjexp.runstate import sample_dir, vae_dir
    from bjexp.tracking.report import grid_rows, write_grid

    import tempfile
    import yaml

    first = runs[0]
    man = _json(first.dir / "run.json").get("manifest")
    if not man or not Path(man).is_file():
        grids = "".join(f"<h3>{html.escape(r.label)}</h3>" + _img((r.dir / "grid.png").read_bytes(), "grid", "grid")
                        for r in runs if (r.dir / "grid.png").is_file())
        return (f"<p class=note>The manifest of {html.escape(first.label)} ({html.escape(str(man))}) is gone, so the "
                f"arms cannot be lined up pair by pair; each run's own grid.png instead.</p>" + grids)
    cfg = yaml.safe_load((first.dir / "config.yaml").read_text()) if (first.dir / "config.yaml").is_file() else {}
    size = int(cfg.get("model", {}).get("image_size", 64))
    findings = cfg.get("eval", {}).get("findings")
    df = mf.read(man)
    test = df[df["split"] == "test"]
    common = [p for p in test["pair_id"] if all((sample_dir(r.dir) / f"{p}.png").is_file() for r in runs)]
    if not common:
        return "<p class=note>No test pair has a generated image in every arm.</p>"
    sub = test[test["pair_id"].isin(set(common))].reset_index(drop=True)
    rows = grid_rows(sub, n, findings)
    pick = sub.iloc[rows]
    root = Path(df.attrs.get("root", Path(man).parent))

    def read(paths):
        return np.stack([read_grey(p, size) for p in paths])

    cols = {"prior": read([root / p for p in pick["prior_path"]])}
    for r in runs:
        cols[r.label] = read([sample_dir(r.dir) / f"{p}.png" for p in pick["pair_id"]])
    vae = next((r for r in runs if all((vae_dir(r.dir) / f"{p}.png").is_file() for p in pick["pair_id"])), None)
    if vae is not None:
        cols["current, VAE round trip" + (f" ({vae.label})" if len(runs) > 1 else "")] = read(
            [vae_dir(vae.dir) / f"{p}.png" for p in pick["pair_id"]])
    cols["real current"] = read([root / p for p in pick["current_path"]])
    with tempfile.TemporaryDirectory() as tmp:
        png = write_grid(Path(tmp) / "strip.png", cols, pick["text"].tolist(), pick["patient_id"].tolist()).read_bytes()
    n_pat = pick["patient_id"].nunique()
    return (f"<p class=note>{len(pick)} test pairs from {n_pat} patients (pairs whose findings changed first), the "
            f"same pairs for every arm; {len(common)} pairs are common to all arms.</p>" + _img(png, "image strips", "grid"))


def memorization_section(runs) -> str:
    """Each arm's closest pairs of the memorization audit (bjexp.evaluate's memorization.png), when it ran."""
    return "".join(f"<h3>{html.escape(r.label)}</h3>" + _img((r.dir / "memorization.png").read_bytes(),
                                                          "memorization closest pairs", "grid")
                   for r in runs if (r.dir / "memorization.png").is_file())


def write_html(root: Path, runs: list, info: dict, **kw) -> Path:
    from bjexp.io import atomic_write

    path = Path(root) / "report.html"
    with atomic_write(path, "w") as f:
        f.write(page(root, runs, info, **kw))
    return path


