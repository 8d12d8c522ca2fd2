"""One evaluation of a set of generated follow-ups, for either world: the pieces `bjexp.evaluate` composes.

`score_all()` = the metrics of `eval.metrics` (`bjexp.eval.registry`) on generated (`test`), real current
(`ceiling`) and prior (`floor`) images, with patient-bootstrap CIs, and the provenance of every number. The
reference sides (current, prior) go through `cache.cached_predict` and torch-fidelity's statistics cache, so the
runs of a sweep pay for them once.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from bjexp.errors import ConfigError
from bjexp.eval import metrics, registry
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


SCORED_SPLITS = ("val", "test")  # train pairs would score the memorization audit against themselves


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


def preflight(cfg_eval: Any) -> None:
    """Start-up checks of an evaluation config, before any data or model work: the predictor class's own `preflight`
    (e.g. xrv weight files present) and the FID feature extractors' weight files."""
    from omegaconf import OmegaConf

    from bjexp.instantiate import get_method

    if (split := _get(cfg_eval, "split")) is not None and split not in SCORED_SPLITS:
        raise ConfigError(f"eval.split={split!r}: a run scores one of {', '.join(SCORED_SPLITS)} (val to "
                          "choose settings, test to report)")

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


def score_all(cfg_eval: Any, predictor: metrics.Predictor | Callable[[], metrics.Predictor] | None, df: pd.DataFrame, *,
              generated: np.ndarray, current: np.ndarray, prior: np.ndarray, latent: np.ndarray | None = None,
              seed: int = 0, run_cfg: Any = None, providers: Mapping[str, Callable[[], Any]] | None = None) -> dict:
    """Every metric of `cfg_eval.metrics` on one run (rows of the image arrays align with `df` rows); returns
    results.json's body. `latent`: the real currents' autoencoder round trips (the `latent` side), if any.
    `predictor` may be a zero-argument builder: it is built only if a metric needs it."""
    from bjexp.eval.xrv import code_attributes

    df = code_attributes(df)  # MIMIC's text sex/race -> the classifiers' codes (numeric codes pass unchanged)
    build = predictor if predictor is None or callable(predictor) and not hasattr(predictor, "predict") else (
        lambda: predictor)
    ctx = registry.EvalContext(
        df, images={"test": generated, "ceiling": current, "floor": prior,
                    **({"latent": latent} if latent is not None else {})}, findings=list(_get(cfg_eval, "findings")),
        uncertain=str(_get(cfg_eval, "uncertain", "exclude")), n_bootstrap=int(_get(cfg_eval, "n_bootstrap", 1000)),
        seed=seed, cache_dir=_get(cfg_eval, "cache_dir"), cache_reference=bool(_get(cfg_eval, "cache_reference", False)),
        cfg=cfg_eval, run_cfg=run_cfg, providers={**({"predictor": build} if build else {}), **(providers or {})})
    specs = _get(cfg_eval, "metrics")
    if specs is None:  # a run configured before the registry (no eval.metrics in its config.yaml): what it had then
        specs = {m.name: m for m in registry.config_metrics("paper")}
        if _get(cfg_eval, "fid", False):
            from bjexp.eval.fid import FID

            specs["fid"] = FID()
    from bjexp.eval.probes import check_probes

    metric_list = registry.build_metrics(specs)
    probes = check_probes(_get(cfg_eval, "probes"), metric_list)  # the consistency probes that run (eval.probes)
    metric_list = [m for m in metric_list if "pipeline" not in m.consumes or m.name in probes]
    if not metric_list:
        raise ValueError("eval.metrics is empty: nothing to evaluate (conf/eval/metrics/paper.yaml lists the paper's)")
    out = registry.evaluate(metric_list, ctx)
    if ctx.built("predictor"):
        out["provenance"] = provenance(ctx.get("predictor"), cfg_eval)
    else:
        out["provenance"] = {"versions": versions()}
    return out
