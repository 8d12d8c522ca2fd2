"""`@cli.main()`: the Hydra entry point of every stage, with bjexp's two rules added.

- Every key must be known to a schema (`bjexp.schema.strict`), also keys added with `+`.
- Expected errors (bjexp.errors.UserError, missing weights) print one message, no traceback; HYDRA_FULL_ERROR=1 gives
  the full one.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import hydra
from omegaconf import DictConfig

from bjexp import schema
from bjexp.errors import UserError
from bjexp.schema.strict import check as check_keys

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: bjexp's own and the weights registry's (ChecksumError is a
    MissingWeightsError)."""
    from bjexp.assets import FetchError, MissingWeightsError, UnknownAssetError

    return UserError, MissingWeightsError, UnknownAssetError, FetchError


def main(config_name: str = "config") -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    schema.register()

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @functools.wraps(task)
        def job(cfg: DictConfig) -> Any:
            try:
                check_keys(cfg)
                return task(cfg)
            except expected_errors() as e:
                if isinstance(e, UserError):
                    raise
                raise UserError(str(e)) from e  # Hydra prints a CompactHydraException as its message alone

        return hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")(job)

    return decorate
