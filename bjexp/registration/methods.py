"""Build a Registrar from a `registration=` config (the method family picks the class; fields map 1:1)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from bjexp.registration.base import IDENTITY, Registrar
from bjexp.registration.pair import QcPolicy


@dataclasses.dataclass
class NoRegistration:
    """Identity: every pair is reported as already aligned (the `none` row of the benchmark)."""
    name: str = "none"

    def estimate(self, fixed: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, float]:
        return IDENTITY.copy(), float("nan")


def _families() -> dict[str, type]:
    from bjexp.registration.ecc import EccRegistrar
    from bjexp.registration.sitk import SitkRegistrar
    return {"none": NoRegistration, "ecc": EccRegistrar, "sitk": SitkRegistrar}


def build_registrar(reg_cfg: DictConfig | dict, fallback: bool = False) -> Registrar | None:
    """The configured registrar; with `fallback=True` the same one with `fallback_motion` (None if unset)."""
    cfg = OmegaConf.to_container(reg_cfg, resolve=True) if isinstance(reg_cfg, DictConfig) else dict(reg_cfg)
    if fallback:
        if not cfg.get("fallback_motion"):
            return None
        motion = cfg["fallback_motion"]
        cfg = {**cfg, "motion": motion, "name": f"{cfg.get('name', cfg['method'])}/{motion}"}
    families = _families()
    cls = families.get(cfg.get("method", "none"))
    if cls is None:
        raise ValueError(f"registration.method={cfg.get('method')!r}: expected one of {sorted(families)}")
    kwargs = {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg}
    for k, v in kwargs.items():
        if isinstance(v, list):
            kwargs[k] = tuple(v)
    return cls(**kwargs)


def build_policy(reg_cfg: DictConfig | dict) -> QcPolicy:
    qc = reg_cfg.get("qc") or {}
    qc = OmegaConf.to_container(qc, resolve=True) if isinstance(qc, DictConfig) else dict(qc)
    return QcPolicy(**qc)


CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "registration"


def option_config(name: str, conf_dir: Path = CONF_DIR) -> dict:
    """conf/registration/<name>.yaml merged onto the schema it names: what `registration=<name>` composes to
    (without a Hydra app, e.g. for the intersection rule and the benchmark)."""
    from hydra.core.config_store import ConfigStore

    from bjexp import schema

    path = conf_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in conf_dir.glob("*.yaml"))
        raise ValueError(f"registration option {name!r} not found in {conf_dir} (options: {known})")
    schema.register()
    yaml = OmegaConf.load(path)
    base = next(d for d in yaml.pop("defaults") if d != "_self_")
    node = ConfigStore.instance().load(f"registration/{base}.yaml").node
    return OmegaConf.to_container(OmegaConf.merge(node, yaml), resolve=True)
