"""Classifier predictions, the input of most metrics, for both worlds through one code path.

A Predictor (synthetic CNN in the miniature world; torchxrayvision models in the real one) turns images into
`Predictions`; the metrics (`bjexp.eval.registry`, `pathology.py`, `retention.py`, ...) compare them with the
current study's labels and the patient's attributes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


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
