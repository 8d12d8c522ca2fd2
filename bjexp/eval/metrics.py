"""The paper's metrics from classifier predictions, for every method and both worlds through one code path.

A Predictor (synthetic CNN in the miniature world; torchxrayvision models in the real one) turns images into
`Predictions`; `score()` compares predictions on generated images with the current study's labels and the
patient's attributes, with patient-level bootstrap CIs. Keys follow `stage/name[/sub]`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from bjexp.eval import stats


@dataclass
class Predictions:
    """Per-image outputs, rows aligned with the manifest rows scored."""
    findings: dict[str, np.ndarray] = field(default_factory=dict)  # finding -> probability (N,)
    race: np.ndarray | None = None  # (N, K) class probabilities
    age: np.ndarray | None = None  # (N,) years
    sex: np.ndarray | None = None  # (N,) probability of attr_sex == 1
    features: np.ndarray | None = None  # (N, D) embedding for identity similarity
    thresholds: dict[str, float] = field(default_factory=dict)  # operating points for accuracy (default 0.5)

    def take(self, idx: np.ndarray) -> "Predictions":
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Predictions({k: v[idx] for k, v in self.findings.items()}, pick(self.race), pick(self.age),
                           pick(self.sex), pick(self.features), self.thresholds)


class Predictor(Protocol):
    """Images (uint8 grey, (N, H, W)) -> Predictions. `name` and `version` are recorded in results.json."""
    name: str
    version: str
    findings: tuple[str, ...]

    def predict(self, images: np.ndarray) -> Predictions: ...


def _labels(df: pd.DataFrame, which: str, finding: str, uncertain: str) -> np.ndarray:
    """Binary labels with NaN where unknown: blank -> NaN; uncertain (-1) -> NaN | 1 | 0 per policy."""
    col = f"{which}_{finding}"
    if col not in df.columns:
        return np.full(len(df), np.nan)
    y = df[col].to_numpy(dtype=np.float64, na_value=np.nan).copy()
    unc = y == -1
    y[unc] = {"exclude": np.nan, "positive": 1.0, "negative": 0.0}[uncertain]
    return y


def score(pred: Predictions, df: pd.DataFrame, *, findings: tuple[str, ...] | list[str], prior: Predictions | None = None,
          prefix: str = "test", uncertain: str = "exclude", n_bootstrap: int = 1000, seed: int = 0,
          race_column: str = "attr_race", age_column: str = "attr_age", sex_column: str = "attr_sex") -> dict:
    """All scalars with 95% CIs: {key: {value, lo, hi, n_valid}} plus notes (e.g. CMIG clamping)."""
    findings = [f for f in findings if f in pred.findings]
    y_cur = {f: _labels(df, "current", f, uncertain) for f in findings}
    y_pri = {f: _labels(df, "prior", f, uncertain) for f in findings}
    changed = {f: (~np.isnan(y_cur[f])) & (~np.isnan(y_pri[f])) & (y_cur[f] != y_pri[f]) for f in findings}
    race = df[race_column].to_numpy() if race_column in df and pred.race is not None else None
    age = df[age_column].to_numpy(dtype=np.float64) if age_column in df and pred.age is not None else None
    sex = df[sex_column].to_numpy() if sex_column in df and pred.sex is not None else None
    sim = None
    if prior is not None and pred.features is not None and prior.features is not None:
        a, b = pred.features, prior.features
        sim = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)

    def statistic(rows: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        aurocs, changed_aurocs, accs = [], [], []
        for f in findings:
            p, y = pred.findings[f][rows], y_cur[f][rows]
            ok = ~np.isnan(y)
            out[f"{prefix}/pathology_auroc/{f}"] = v = stats.auroc(p[ok], y[ok])
            aurocs.append(v)
            thr = pred.thresholds.get(f, 0.5)
            out[f"{prefix}/pathology_accuracy/{f}"] = a = stats.accuracy(p[ok] >= thr, y[ok] == 1)
            accs.append(a)
            c = changed[f][rows]
            out[f"{prefix}/pathology_auroc_changed/{f}"] = v = stats.auroc(p[c], y[c])
            changed_aurocs.append(v)
        out[f"{prefix}/pathology_auroc"] = P = _nanmean(aurocs)
        out[f"{prefix}/pathology_auroc_changed"] = _nanmean(changed_aurocs)
        out[f"{prefix}/pathology_accuracy"] = _nanmean(accs)
        R = A = math.nan
        if race is not None:
            out[f"{prefix}/race_auroc"] = R = (stats.multiclass_auroc(pred.race[rows], race[rows])
                                               if pred.race.shape[1] > 2 else stats.auroc(pred.race[rows, 1], race[rows]))
        if age is not None:
            out[f"{prefix}/age_r"] = A = stats.pearson_r(pred.age[rows], age[rows])
        if sex is not None:
            out[f"{prefix}/sex_accuracy"] = stats.accuracy(pred.sex[rows] >= 0.5, sex[rows] == 1)
        if sim is not None:
            out[f"{prefix}/identity_similarity"] = float(np.mean(sim[rows]))
        if not any(math.isnan(x) for x in (P, R, A)):
            out[f"{prefix}/cmig"] = stats.cmig(P, R, A)[0]
        return out

    result = stats.bootstrap(statistic, df["patient_id"].to_numpy(), n_resamples=n_bootstrap, seed=seed)
    notes = []
    if f"{prefix}/age_r" in result and result[f"{prefix}/age_r"]["value"] < 0:
        notes.append(f"{prefix}/age_r is negative ({result[f'{prefix}/age_r']['value']:.3f}); CMIG clamps it to 0")
    return {"metrics": result, "notes": notes,
            "counts": {f"{prefix}/n_pairs": int(len(df)), f"{prefix}/n_patients": int(df["patient_id"].nunique()),
                       **{f"{prefix}/n_changed/{f}": int(changed[f].sum()) for f in findings}}}


def _nanmean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return float(np.mean(xs)) if xs else math.nan
