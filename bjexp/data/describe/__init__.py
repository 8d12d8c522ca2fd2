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


def options(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """A describer config's constructor arguments (everything but `name` and `_target_`), resolved."""
    kw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return {k: v for k, v in kw.items() if k not in ("name", "_target_")}


class FromOptions:
    """The default `from_config`: the describer's options are its constructor's keyword arguments."""

    @classmethod
    def from_config(cls, cfg: DictConfig | dict[str, Any], cache_dir: str | Path | None = None,
                    perms: Mode | None = None):
        return cls(**options(cfg))


def build(cfg: DictConfig | dict[str, Any], cache_dir: str | Path | None = None, perms: Mode | None = None) -> Describer:
    """cfg.describer -> a describer: `from_config(cfg, cache_dir, perms)` of its `_target_` class. `cache_dir` (the
    run's paths.cache_dir) holds the LLM request cache, written with `perms` (default owner-only: it holds report
    text)."""
    from hydra.utils import get_class

    target = cfg.get("_target_")
    if not target:
        raise ConfigError(f"describer {cfg.get('name')!r} has no _target_ (a describer class with from_config, e.g. "
                          "bjexp.data.describe.labels.LabelsDescriber; conf/describer/*.yaml)")
    try:
        cls = get_class(str(target))
    except ImportError as e:
        raise ConfigError(f"describer._target_={target!r}: {e}") from None
    return cls.from_config(cfg, cache_dir, perms)
