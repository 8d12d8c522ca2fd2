"""The one object-building helper: Hydra's instantiate (configs with `_target_`), re-exported so every room
builds objects the same way."""
from __future__ import annotations

from hydra.utils import get_method, instantiate

__all__ = ["instantiate", "get_method"]
