"""The `method=` axis: BiomedJourney and every baseline behind one small protocol (`bjexp.methods.base`).

`conf/method/<name>.yaml` names a class by `_target_` (+ `kwargs`); `build_method(cfg)` instantiates it at start-up,
so an unknown class fails before any data is prepared. `train.run` asks the method whether it trains, lets it
build its trainable module, and samples through the generator it returns; it never branches on a method's name.
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from bjexp.methods.base import Generator, Method


def build_method(cfg: DictConfig) -> Method:
    from bjexp.instantiate import instantiate

    from omegaconf.errors import MissingMandatoryValue

    m = cfg.method
    try:
        kwargs = OmegaConf.to_container(m.kwargs, resolve=False, throw_on_missing=True) if m.get("kwargs") else {}
    except MissingMandatoryValue as e:  # `???`: set per world by conf/method_model/<method>_<model>.yaml
        raise ValueError(f"method={m.name} has no {e.full_key} for model={cfg.model.name}: add "
                         f"conf/method_model/{m.name}_{cfg.model.name}.yaml (see the other worlds' files)") from None
    try:
        method = instantiate({"_target_": m._target_, **kwargs}, _recursive_=False)
    except Exception as e:  # hydra wraps import errors and bad kwargs; say which config option it was
        raise ValueError(f"method={m.name}: cannot build {m._target_} ({type(e).__name__}: {e})") from e
    method.name = m.name
    return method


__all__ = ["Generator", "Method", "build_method"]
