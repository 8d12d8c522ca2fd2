"""Compose the repo's conf/ with Hydra's compose API (as `python -m bjexp.<stage>` would), for builder tests.

While conf/config.yaml names group options that do not exist yet on this branch (another issue's work), the
composition runs on a temporary copy of conf/ whose config.yaml leaves those groups out; once every option exists
it composes conf/ itself.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def _conf_dir(overrides: list[str]) -> Path:
    config = yaml.safe_load((CONF / "config.yaml").read_text())
    chosen = {o.split("=")[0]: o.split("=", 1)[1] for o in overrides if "=" in o and "." not in o.split("=")[0]}
    keep, absent = [], False
    for d in config["defaults"]:
        if isinstance(d, dict):
            (group, option), = d.items()
            option = chosen.get(group, option)
            if option is not None and not (CONF / group / f"{option}.yaml").is_file():
                absent = True
                continue
        keep.append(d)
    if not absent:
        return CONF
    tmp = Path(tempfile.mkdtemp(prefix="bjexp-conf-"))
    shutil.copytree(CONF, tmp, dirs_exist_ok=True)
    (tmp / "config.yaml").write_text(yaml.safe_dump({**config, "defaults": keep}, sort_keys=False))
    return tmp


def compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hcompose, initialize_config_dir

    import bjexp.schema

    bjexp.schema.register()
    with initialize_config_dir(str(_conf_dir(overrides)), version_base="1.3"):
        return hcompose("config", overrides=overrides)
