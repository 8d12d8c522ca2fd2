"""Every key of a composed config must be declared by its schema, `+key=value` overrides included.

Hydra's `+` adds a key even to a typed (struct) node, so `+trainer.max_stps=5` (a typo of max_steps) would compose
and be ignored; `check` finds such keys anywhere in the tree and names the closest known one.
"""
from __future__ import annotations

import dataclasses
import difflib

from omegaconf import DictConfig, ListConfig, OmegaConf

from bjexp.errors import ConfigError


def unknown_keys(cfg: DictConfig) -> list[tuple[str, str, list[str]]]:
    """(dotted key, schema name, the schema's keys) for each key a dataclass-typed node does not declare."""
    out: list[tuple[str, str, list[str]]] = []

    def walk(node, prefix: str) -> None:
        if isinstance(node, (DictConfig, ListConfig)) and node._is_none():  # e.g. model.sdpa_backends: null
            return
        if isinstance(node, DictConfig):
            t = OmegaConf.get_type(node)
            known = {f.name for f in dataclasses.fields(t)} if dataclasses.is_dataclass(t) else None
            for k, child in node.items_ex(resolve=False):
                if prefix == "" and k == "hydra":
                    continue
                if known is not None and k not in known:
                    out.append((f"{prefix}{k}", t.__name__, sorted(known)))
                walk(child, f"{prefix}{k}.")
        elif isinstance(node, ListConfig):
            for i, child in enumerate(node._iter_ex(resolve=False)):
                walk(child, f"{prefix}{i}.")

    walk(cfg, "")
    return out


def check(cfg: DictConfig) -> None:
    bad = unknown_keys(cfg)
    if not bad:
        return
    lines = []
    for key, schema, known in bad:
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
        hint = f"; did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}?" if close else ""
        lines.append(f"{key} (not a field of {schema}{hint})")
    raise ConfigError("unknown config key" + ("s" if len(lines) > 1 else "") + ": " + "; ".join(lines)
                      + ". A `+key=value` override may only add keys that a schema declares (bjexp/schema/).")
