"""Progression describers (`describer=labels|impression|llm`): a table of study pairs -> the conditioning text.

A describer is called once on all pairs (so the LLM one can batch and run concurrently) and returns a frame with
`text` (None where it failed), `text_error` (why, None where it worked) and `text_retry` (the failure is transient:
a rerun asks again), aligned with the input rows. The builder drops failed rows from the manifest and lists them,
with the reason, beside it; transient failures mark the manifest incomplete.
Inputs: label columns prior_<finding> / current_<finding> (canonical names) and, for the report-based describers,
prior_impression / prior_findings / current_impression / current_findings / prior_report / current_report.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from bjexp.errors import ConfigError
from bjexp.io import Mode


class Describer(Protocol):
    needs_reports: bool

    def __call__(self, pairs: pd.DataFrame) -> pd.DataFrame: ...


def result(pairs: pd.DataFrame, text: list[str | None], error: list[str | None],
           retry: list[bool] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"text": pd.Series(text, dtype=object), "text_error": pd.Series(error, dtype=object),
                         "text_retry": pd.Series(retry or [False] * len(text), dtype=bool)}).set_axis(pairs.index)


def build(cfg: DictConfig | dict[str, Any], cache_dir: str | Path | None = None, perms: Mode | None = None) -> Describer:
    """cfg.describer -> a describer. `cache_dir` (the run's paths.cache_dir) holds the LLM request cache, written with
    `perms` (default owner-only: it holds report text)."""
    name = cfg["name"]
    if name == "llm":  # check before resolving: a missing endpoint must be a clear message, not MissingMandatoryValue
        from bjexp.data.describe.llm import LLMDescriber

        return LLMDescriber.from_config(cfg, cache_dir, perms=perms)
    kw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    kw.pop("name")
    if name == "labels":
        from bjexp.data.describe.labels import LabelsDescriber

        return LabelsDescriber(**kw)
    if name == "impression":
        from bjexp.data.describe.impression import ImpressionDescriber

        return ImpressionDescriber(**kw)
    raise ConfigError(f"describer.name={name!r}: expected labels, impression or llm")
