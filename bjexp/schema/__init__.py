"""Typed config schemas (dataclasses in Hydra's ConfigStore).

Each module of this package registers the schemas of one or more config groups; every option's YAML names its
schema first in its defaults list (e.g. `defaults: [/schema/data/synthetic@_here_, _self_]`... see conf/), so a mistyped key fails at
compose time with the key and the schema named. `register()` imports every module here, so a new group needs
no edit of this file.
"""
from __future__ import annotations

import importlib
import pkgutil

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    from bjexp import help  # the resolvers `--help` reads

    help.register()
    _registered = True
