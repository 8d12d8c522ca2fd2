"""`describer=impression`: the current report's IMPRESSION (fallback FINDINGS), the paper's ablation."""
from __future__ import annotations

import pandas as pd

from bjexp.data.describe import FromOptions, result


class ImpressionDescriber(FromOptions):
    needs_reports = True

    def __init__(self, fallback_findings: bool = True, max_chars: int | None = None):
        self.fallback_findings, self.max_chars = fallback_findings, max_chars

    def __call__(self, pairs: pd.DataFrame) -> pd.DataFrame:
        for c in ("current_impression", "current_findings"):
            if c not in pairs:
                raise ValueError(f"describer=impression: pairs lack column {c!r} (reports were not loaded)")
        text, err = [], []
        for imp, fin, has in zip(pairs["current_impression"].fillna(""), pairs["current_findings"].fillna(""),
                                 pairs.get("current_report_found", pd.Series(True, index=pairs.index))):
            t = imp or (fin if self.fallback_findings else "")
            if t and self.max_chars:
                t = t[: self.max_chars].rsplit(" ", 1)[0] if len(t) > self.max_chars else t
            text.append(t or None)
            err.append(None if t else ("current report not found" if not has else
                                       "current report has no IMPRESSION" + ("/FINDINGS" if self.fallback_findings
                                                                            else "")))
        return result(pairs, text, err)
