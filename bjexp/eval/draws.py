"""`<run>/bootstrap.npz`: every bootstrapped metric's value on each patient-bootstrap resample of the run.

Runs scored on the same pairs with the same `eval.bootstrap_seed` share their resamples (results.json `bootstrap`
says which), so a difference between runs can be bootstrapped resample by resample (`bjexp.tracking.effects`).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from bjexp.io import atomic_write

DRAWS = "bootstrap.npz"


def write_draws(path: str | Path, draws: dict[str, np.ndarray]) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v, np.float64) for k, v in draws.items()})
    with atomic_write(path) as f:
        f.write(buf.getvalue())
    return Path(path)


def read_draws(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
