"""Main effects and two-way interactions of a factorial sweep (the paper's Table 2), with 95% CIs.

Factors are the config groups that take exactly two options across the sweep's runs and are fully crossed (every
combination has a run); the seed is the replicate. For a headline metric `m` with per-cell mean `m(cell)` (over
the cell's seeds):
- main effect of F = mean over the cells at F's other level - mean over the cells at F's reference level;
- interaction F x G = (effect of G at F's other level) - (effect of G at F's reference level),
  each mean over the remaining factors;
- simple effect "G at F=level" = G's effect within that level of F (mean over the remaining factors): the two
  simple effects of G differ by the F x G interaction.

CI: percentile bootstrap over test patients and seeds. Every run of the sweep is scored on the same pairs with the
same `eval.bootstrap_seed`, so resample i is the same patients in every run (`<run>/bootstrap.npz`); each effect
draw takes resample i of every run and, per cell, a resample of its seeds. Without aligned draws (older runs, or
runs evaluated with their own seeds) the effects come without CIs, and the report says how to get them.
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bjexp.errors import ConfigError
from bjexp.eval.draws import DRAWS, read_draws
from bjexp.tracking.report import fmt, headline

SEED_RESAMPLING_SEED = 0


def factors_of(runs: list[Any], baselines: dict[str, str]) -> dict[str, tuple[str, str]] | None:
    """{group: (reference level, other level)} when the runs form a full two-level factorial (seed = replicate)."""
    from bjexp.tracking.report import SPECIALIZING

    groups = sorted({g for r in runs for g in r.choices if g != "seed" and g not in SPECIALIZING})
    levels = {g: sorted({str(r.choices.get(g)) for r in runs}) for g in groups}
    varying = {g: lv for g, lv in levels.items() if len(lv) > 1}
    if not varying or any(len(lv) != 2 for lv in varying.values()):
        return None
    cells = {tuple(str(r.choices.get(g)) for g in varying) for r in runs}
    if len(cells) != 2 ** len(varying):
        return None
    out = {}
    for g, lv in varying.items():
        ref = baselines.get(g) if baselines.get(g) in lv else lv[0]
        out[g] = (ref, next(x for x in lv if x != ref))
    return out


def _aligned_draws(runs: list[Any]) -> tuple[list[dict] | None, str]:
    metas = [r.results.get("bootstrap") for r in runs]
    paths = [Path(r.dir) / DRAWS for r in runs]
    if any(m is None for m in metas) or not all(p.is_file() for p in paths):
        return None, "some runs have no bootstrap draws (evaluated before bootstrap.npz existed)"
    keys = {json.dumps(m, sort_keys=True) for m in metas}
    if len(keys) > 1:
        return None, ("the runs were not scored with the same bootstrap resamples (same pairs and one "
                      "eval.bootstrap_seed)")
    return [read_draws(p) for p in paths], ""


def sweep_effects(runs: list[Any], info: dict[str, dict], baselines: dict[str, str], prefix: str = "test",
                  n_resamples: int | None = None) -> pd.DataFrame | None:
    """One row per (effect, metric): value, lo, hi, n_valid; None when the sweep is not a two-level factorial.
    `runs`: objects with .choices, .results (results.json) and .dir (bjexp.report.Run)."""
    factors = factors_of(runs, baselines)
    if factors is None:
        return None
    names = [n for n in headline(info) if info[n].get("bootstrap") is not False]
    keys = [f"{prefix}/{n}" for n in names if all(f"{prefix}/{n}" in r.results["metrics"] for r in runs)]
    draws, why = _aligned_draws(runs)
    fs = list(factors)
    cell_of = [tuple(str(r.choices.get(g)) for g in fs) for r in runs]
    cells = sorted(set(cell_of))
    members = [[i for i, c in enumerate(cell_of) if c == cell] for cell in cells]
    contrasts = _contrasts(factors, cells)
    rng = np.random.default_rng(SEED_RESAMPLING_SEED)
    rows = []
    for key in keys:
        point = np.array([r.results["metrics"][key]["value"] for r in runs], float)
        cell_point = np.array([point[m].mean() for m in members])
        samples = None
        if draws is not None:
            d = np.stack([np.asarray(x.get(key, np.full(len(next(iter(x.values()))), np.nan)), float) for x in draws])
            n = d.shape[1] if n_resamples is None else min(n_resamples, d.shape[1])
            # per cell and resample: the mean of a resample (with replacement) of its seeds' draws
            picks = [rng.integers(0, len(m), size=(n, len(m))) for m in members]
            samples = np.stack([d[np.asarray(m)][p, np.arange(n)[:, None]].mean(1) for m, p in zip(members, picks)])
        for label, kind, w in contrasts:
            value = float(w @ cell_point)
            lo = hi = math.nan
            valid = 0
            if samples is not None:
                eff = w @ samples
                eff = eff[~np.isnan(eff)]
                valid = int(eff.size)
                if valid >= 0.5 * samples.shape[1]:
                    lo, hi = (float(x) for x in np.quantile(eff, [0.025, 0.975]))
            rows.append({"effect": label, "kind": kind, "metric": key.split("/", 1)[1], "value": value, "lo": lo,
                         "hi": hi, "n_valid": valid, "seeds_per_cell": min(len(m) for m in members)})
    out = pd.DataFrame(rows)
    out.attrs["note"] = why
    out.attrs["factors"] = factors
    return out


def _contrasts(factors: dict[str, tuple[str, str]], cells: list[tuple]) -> list[tuple[str, str, np.ndarray]]:
    """(label, kind, weights over cells) for every main effect and every two-way interaction."""
    fs = list(factors)
    sign = np.array([[1.0 if c[i] == factors[f][1] else -1.0 for i, f in enumerate(fs)] for c in cells])
    half = len(cells) / 2
    out = []
    for i, f in enumerate(fs):
        ref, other = factors[f]
        out.append((f"{f}: {other} - {ref}", "main", np.where(sign[:, i] > 0, 1 / half, -1 / half)))
    for i, j in itertools.combinations(range(len(fs)), 2):
        # (G effect at F=other) - (G effect at F=ref) = (++ - +-) - (-+ - --), averaged over the other factors
        w = sign[:, i] * sign[:, j] * 4 / len(cells)
        out.append((f"{fs[i]} x {fs[j]}", "interaction", w))
    # Simple effects, to read an interaction: G's effect within each level of F (the interaction is their difference).
    for i, j in itertools.permutations(range(len(fs)), 2):
        ref, other = factors[fs[j]]
        for level_sign, level in ((-1.0, factors[fs[i]][0]), (1.0, factors[fs[i]][1])):
            at = sign[:, i] == level_sign
            w = np.where(at, sign[:, j] / (at.sum() / 2), 0.0)
            out.append((f"{fs[j]}: {other} - {ref} at {fs[i]}={level}", "simple", w))
    return out


def explain(eff: pd.DataFrame) -> str:
    f = eff.attrs.get("factors", {})
    refs = ", ".join(f"{g}={ref}" for g, (ref, _) in f.items())
    seeds = int(eff["seeds_per_cell"].min()) if len(eff) else 0
    ci = ("95% CIs: percentile bootstrap over test patients (the same resamples in every run) and each cell's "
          f"seeds ({seeds} per cell)." if not eff.attrs.get("note") else
          f"No CIs: {eff.attrs['note']}; re-score every run with `python -m bjexp.evaluate run=<dir> "
          "eval.bootstrap_seed=0`.")
    return (f"Main effect = mean over the cells at the other level minus the reference level ({refs}), averaged over "
            "the other factors and the seeds; A x B = (effect of B at A's other level) - (effect of B at A's "
            f"reference level); the second table: the effect of one factor within each level of another, whose "
            f"difference is their interaction. {ci}")


VERDICTS = {1: "recovered", 0: "not shown (CI holds 0)", -1: "contradicted"}


def planted(eff: pd.DataFrame, expected) -> pd.DataFrame:
    """A study's planted effects (`report.planted`: [{effect, metric, sign: '+' or '-', why}]) beside the
    measured ones. Verdict: recovered = the 95% CI excludes 0 on the planted side; not shown = it holds 0;
    contradicted = it excludes 0 on the other side; without CIs, the point estimate's sign only."""
    by = {(r["effect"], r["metric"]): r for _, r in eff.iterrows()}
    rows = []
    for e in expected:
        key = (e["effect"], e["metric"])
        if key not in by:
            known = sorted({f"{a} / {b}" for a, b in by})
            raise ConfigError(f"report.planted: no effect {key[0]!r} on metric {key[1]!r} in this sweep; it has: "
                             + "; ".join(known))
        if str(e["sign"]) not in ("+", "-"):
            raise ConfigError(f"report.planted: sign {e['sign']!r} for {key}: expected '+' or '-'")
        r, s = by[key], 1.0 if str(e["sign"]) == "+" else -1.0
        lo, hi = sorted((s * r["lo"], s * r["hi"]))  # the CI on the planted side's scale
        if math.isnan(r["lo"]):
            verdict = "sign only (no CI): " + ("as planted" if s * r["value"] > 0 else "against")
        else:
            verdict = VERDICTS[1 if lo > 0 else -1 if hi < 0 else 0]
        rows.append({"effect": key[0], "metric": key[1], "planted": str(e["sign"]), "why": e.get("why") or "",
                     "measured": _signed(r), "verdict": verdict})
    return pd.DataFrame(rows, columns=["effect", "metric", "planted", "why", "measured", "verdict"])


def planted_markdown(check: pd.DataFrame) -> str:
    out = ["| effect | metric | planted | measured [95% CI] | verdict | why planted |", "|---|---|---|---|---|---|"]
    out += [f"| {r.effect} | {r.metric} | {r.planted} | {r.measured} | {r.verdict} | {r.why} |"
            for r in check.itertuples()]
    return "\n".join(out)


def planted_html(check: pd.DataFrame) -> str:
    return check[["effect", "metric", "planted", "measured", "verdict", "why"]].to_html(index=False, border=1)


def _cell(row: pd.Series) -> dict:
    return {"value": row["value"], "lo": row["lo"], "hi": row["hi"]}


def markdown(eff: pd.DataFrame) -> str:
    """The main effects and interactions, then the simple effects (one factor within each level of another)."""
    return "\n\n".join(_markdown(part) for part in _parts(eff))


def _parts(eff: pd.DataFrame) -> list[pd.DataFrame]:
    simple = eff["kind"] == "simple"
    return [p for p in (eff[~simple], eff[simple]) if len(p)]


def _markdown(eff: pd.DataFrame) -> str:
    metrics = list(dict.fromkeys(eff["metric"]))
    out = ["| effect | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for label, g in eff.groupby("effect", sort=False):
        by = {r["metric"]: r for _, r in g.iterrows()}
        out.append(f"| {label} | " + " | ".join(_signed(by[m]) for m in metrics) + " |")
    return "\n".join(out)


def html_table(eff: pd.DataFrame) -> str:
    return "<p></p>".join(_html_table(part) for part in _parts(eff))


def _html_table(eff: pd.DataFrame) -> str:
    import html

    metrics = list(dict.fromkeys(eff["metric"]))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["effect", *metrics])
    body = ""
    for label, g in eff.groupby("effect", sort=False):
        by = {r["metric"]: r for _, r in g.iterrows()}
        body += f"<tr><td>{html.escape(label)}</td>" + "".join(f"<td>{_signed(by[m])}</td>" for m in metrics) + "</tr>"
    return f"<table border=1 cellpadding=4><tr>{head}</tr>{body}</table>"


def _signed(row: pd.Series) -> str:
    s = fmt(_cell(row))
    return s if s.startswith("-") or s == "–" else "+" + s
