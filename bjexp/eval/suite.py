"""One evaluation of a set of generated follow-ups, for either world: the pieces `bjexp.evaluate` composes.

`score_all()` = predictions on generated (`test`), real current (`ceiling`) and prior (`floor`) images, the
metrics with patient-bootstrap CIs, FID when configured, and the provenance of every number. The reference sides
(current, prior) go through `cache.cached_predict` and torch-fidelity's statistics cache, so the runs of a sweep
pay for them once.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from bjexp.eval import metrics
from bjexp.eval.cache import cached_predict
from bjexp.imaging import read_grey


def load_images(paths: Sequence[str | Path], size: int | None = None) -> np.ndarray:
    """uint8 grey (N,H,W) from image files (one conversion: file -> uint8); all must share one size."""
    from bjexp.progress import progress

    out = []
    with progress() as bar:
        task = bar.add_task("read images", total=len(paths))
        for p in paths:
            out.append(read_grey(p, size))
            bar.advance(task)
    shapes = {im.shape for im in out}
    if len(shapes) > 1:
        raise ValueError(f"images differ in size {sorted(shapes)}; pass size= to resize them on reading")
    return np.stack(out) if out else np.zeros((0, size or 0, size or 0), np.uint8)


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return cfg.get(key, default) if isinstance(cfg, Mapping) or hasattr(cfg, "get") else getattr(cfg, key, default)


def versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("torchxrayvision", "torch_fidelity", "torchmetrics"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover
            out[mod] = None
    return out


def provenance(predictor: metrics.Predictor, cfg_eval: Any = None) -> dict:
    """Versions, predictor identity and weight hashes (predictor.provenance() when it has one)."""
    out = {"versions": versions(), "predictor": {"name": predictor.name, "version": predictor.version}}
    if hasattr(predictor, "provenance"):
        out["predictor"].update(predictor.provenance())
    if cfg_eval is not None:
        out["eval"] = {k: _get(cfg_eval, k) for k in ("name", "uncertain", "n_bootstrap")}
        out["eval"]["findings"] = list(_get(cfg_eval, "findings", []))
    return out


def fid_from_config(cfg_eval: Any, generated: np.ndarray, reference: np.ndarray, prefix: str = "test") -> dict:
    """FID per `cfg_eval.fid_settings` (schema: bjexp.schema.eval_real.FIDSettings)."""
    from bjexp.eval.fid import compute_fid

    s = _get(cfg_eval, "fid_settings")
    return compute_fid(generated, reference, cache_root=Path(str(_get(cfg_eval, "cache_dir"))) / "fid",
                       extractors=list(s.extractors), xrv_weights=str(s.xrv_weights),
                       xrv_dir=str(_get(cfg_eval, "weights_dir")), inception_weights=str(s.inception_weights),
                       n=s.n, batch_size=int(s.batch_size), verify_checksums=bool(_get(cfg_eval, "verify_checksums", True)),
                       prefix=prefix)


def preflight(cfg_eval: Any) -> None:
    """Start-up checks of an evaluation config, before any data or model work: the predictor class's own `preflight`
    (e.g. xrv weight files present) and the FID feature extractors' weight files."""
    from omegaconf import OmegaConf

    from bjexp.instantiate import get_method

    p = OmegaConf.to_container(cfg_eval.predictor, resolve=True) if hasattr(cfg_eval.predictor, "keys") else {}
    if p.get("_target_"):
        check = getattr(get_method(p["_target_"]), "preflight", None)
        if check is not None:
            check(**{k: v for k, v in p.items() if k != "_target_"})
    if _get(cfg_eval, "fid", False) and (s := _get(cfg_eval, "fid_settings")) is not None:
        from bjexp.eval.fid import weights_file

        for ex in s.extractors:
            weights_file(ex, xrv_weights=str(s.xrv_weights), xrv_dir=str(_get(cfg_eval, "weights_dir")),
                         inception_weights=str(s.inception_weights),
                         verify=bool(_get(cfg_eval, "verify_checksums", True)))


def score_all(cfg_eval: Any, predictor: metrics.Predictor, df: pd.DataFrame, *, generated: np.ndarray,
              current: np.ndarray, prior: np.ndarray, seed: int = 0) -> dict:
    """All metrics of one run; rows of the three image arrays align with `df` rows. Returns results.json's body."""
    from bjexp.eval.xrv import code_attributes

    df = code_attributes(df)  # MIMIC's text sex/race -> the classifiers' codes (numeric codes pass unchanged)
    cache_dir = str(_get(cfg_eval, "cache_dir")) if _get(cfg_eval, "cache_reference", False) else None
    findings = list(_get(cfg_eval, "findings"))
    kw = dict(findings=findings, uncertain=str(_get(cfg_eval, "uncertain", "exclude")),
              n_bootstrap=int(_get(cfg_eval, "n_bootstrap", 1000)), seed=seed)
    pred_prior = cached_predict(predictor, prior, cache_dir)
    pred_current = cached_predict(predictor, current, cache_dir)
    pred_gen = predictor.predict(generated)
    results = {"test": metrics.score(pred_gen, df, prior=pred_prior, prefix="test", **kw),
               "ceiling": metrics.score(pred_current, df, prior=pred_prior, prefix="ceiling", **kw),
               "floor": metrics.score(pred_prior, df, prior=pred_prior, prefix="floor", **kw)}
    out: dict = {"metrics": {}, "counts": {}, "notes": []}
    for r in results.values():
        out["metrics"].update(r["metrics"])
        out["counts"].update(r["counts"])
        out["notes"] += r["notes"]
    if _get(cfg_eval, "fid", False) and _get(cfg_eval, "fid_settings") is not None:
        fid = fid_from_config(cfg_eval, generated, current)
        out["metrics"].update({k: {"value": v, "lo": float("nan"), "hi": float("nan"), "n_valid": 0}
                               for k, v in fid["metrics"].items()})
        out["fid_policy"] = fid["policy"]
        out["notes"].append("FID has no bootstrap CI (set-level statistic, biased in N): compare equal fid_policy.n only")
    out["provenance"] = provenance(predictor, cfg_eval)
    return out
