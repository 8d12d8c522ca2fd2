"""Registration of prior/current pairs as the `registration=` ablation axis (docs/registration.md).

`register_manifest` is the hook the training stage calls; `register_pair` registers one pair with QC; the
registrars (ecc.py, sitk.py) implement the small `Registrar` protocol of base.py.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from bjexp.registration.base import Flag, Registrar, RegistrationFailed, RegistrationResult
from bjexp.registration.methods import build_policy, build_registrar
from bjexp.registration.pair import QcPolicy, register_pair
from bjexp.registration.subset import common_pair_ids, restrict, write_common_subset

__all__ = ["Flag", "QcPolicy", "Registrar", "RegistrationFailed", "RegistrationResult", "build_policy",
           "build_registrar", "common_pair_ids", "register_manifest", "register_pair", "restrict",
           "write_common_subset"]


def register_manifest(manifest_path: Path, cfg: DictConfig) -> Path:
    """Return the manifest the model trains on after registration per `cfg.registration` (cached).

    `none` returns the input unchanged. Otherwise a registered manifest under `cfg.paths.cache_dir/registration/`
    keyed by the manifest's content hash and the registration config: the moving column points to warped images,
    QC columns are added, and dropped pairs (failed, or score below `registration.min_score`) are listed with
    their reason in `dropped.csv` beside it. Sharding is for `python -m bjexp.register`; here every pair is done.
    With `registration.same_pairs_as` (the intersection rule) the result is further restricted to the pairs every
    listed option keeps (those are registered too, from the cache when already done).
    """
    from bjexp.registration.stage import run
    from bjexp.registration.subset import same_pairs

    out = Path(manifest_path)
    if cfg.registration.get("method", "none") != "none":
        out = run(out, cfg, shard=(0, 1))
    others = [o for o in (cfg.registration.get("same_pairs_as") or []) if o != cfg.registration.name]
    return same_pairs(out, Path(manifest_path), cfg, others) if others else out
