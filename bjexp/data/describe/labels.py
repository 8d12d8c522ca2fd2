"""`describer=labels`: the CheXpert label change between the two studies, worded by the template engine."""
from __future__ import annotations

import math

import pandas as pd

from bjexp.data.describe import FromOptions, result
from bjexp.data.describers import FindingState, describe, state_from_label
from bjexp.data.findings import CHEXPERT_TO_CANONICAL
from bjexp.errors import ConfigError

POLICIES_UNCERTAIN = ("uncertain", "positive", "negative")
POLICIES_BLANK = ("absent", "unknown")


class LabelsDescriber(FromOptions):
    """Uncertain (-1): `uncertain` keeps it ('possible ...'), or counts it positive / negative.
    Blank (not mentioned): `absent` (CheXpert convention), or `unknown`: a finding blank in the current study is
    not described (an unmentioned finding may persist: no 'resolved X' claim); blank in the prior counts as absent.
    A study without any label is a per-row failure, not 'no change'."""

    needs_reports = False

    def __init__(self, uncertain: str = "uncertain", blank: str = "absent", findings: list[str] | tuple = ()):
        if uncertain not in POLICIES_UNCERTAIN:
            raise ConfigError(f"describer.uncertain={uncertain!r}: expected one of {POLICIES_UNCERTAIN}")
        if blank not in POLICIES_BLANK:
            raise ConfigError(f"describer.blank={blank!r}: expected one of {POLICIES_BLANK}")
        unknown = sorted(set(findings) - set(CHEXPERT_TO_CANONICAL.values()))
        if unknown:
            raise ConfigError(f"describer.findings: unknown finding(s) {unknown}; "
                             f"known: {sorted(CHEXPERT_TO_CANONICAL.values())}")
        self.uncertain, self.blank, self.findings = uncertain, blank, tuple(findings)

    def states(self, prior: float, current: float) -> tuple[FindingState | None, FindingState | None]:
        if self.blank == "unknown" and _blank(current):
            return None, None
        return state_from_label(prior, self.uncertain), state_from_label(current, self.uncertain)

    def describe_row(self, prior: dict[str, float], current: dict[str, float]) -> str:
        p, c = {}, {}
        for n in prior:
            p[n], c[n] = self.states(prior[n], current[n])
        return describe(p, c, order=tuple(prior))

    def __call__(self, pairs: pd.DataFrame) -> pd.DataFrame:
        names = list(self.findings) or [n for n in CHEXPERT_TO_CANONICAL.values()
                                        if n != "No Finding" and f"prior_{n}" in pairs and f"current_{n}" in pairs]
        missing = [n for n in names if f"prior_{n}" not in pairs or f"current_{n}" not in pairs]
        if missing:
            raise ValueError(f"describer=labels: no label columns for {missing} (need prior_<f> and current_<f>)")
        prior = pairs[[f"prior_{n}" for n in names]].to_numpy(dtype=float)
        current = pairs[[f"current_{n}" for n in names]].to_numpy(dtype=float)
        # "has any label" looks at every label column present (No Finding included), not only the described ones.
        all_p = [c for c in pairs if c.startswith("prior_") and c[6:] in CHEXPERT_TO_CANONICAL.values()]
        all_c = [c for c in pairs if c.startswith("current_") and c[8:] in CHEXPERT_TO_CANONICAL.values()]
        # A study without a label row (MIMIC builder: <side>_has_labels) or with every label blank: no claim.
        p_none = (~pairs["prior_has_labels"] if "prior_has_labels" in pairs else pairs[all_p].isna().all(axis=1)
                  ).to_numpy(dtype=bool)
        c_none = (~pairs["current_has_labels"] if "current_has_labels" in pairs
                  else pairs[all_c].isna().all(axis=1)).to_numpy(dtype=bool)
        text, err = [], []
        for i in range(len(pairs)):
            if p_none[i] or c_none[i]:
                which = "prior and current" if p_none[i] and c_none[i] else ("prior" if p_none[i] else "current")
                text.append(None)
                err.append(f"no labels for the {which} study")
                continue
            text.append(self.describe_row(dict(zip(names, prior[i])), dict(zip(names, current[i]))))
            err.append(None)
        return result(pairs, text, err)


def _blank(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
