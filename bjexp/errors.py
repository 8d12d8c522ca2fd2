"""Errors meant for people: a mistake in the input, the config or the environment that the person can fix.

Stage entry points (`bjexp.cli.main`) print such an error as one message, without a traceback (set HYDRA_FULL_ERROR=1
for the full one). Raise a subclass where the message says what is wrong, where, and what to do.
"""
from __future__ import annotations

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """Base of bjexp's expected errors (Hydra prints a CompactHydraException as its message alone)."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work (named with its key)."""


class DataError(UserError, ValueError):
    """Prepared data that cannot be trained or evaluated on (e.g. an empty split, an incomplete manifest)."""


class RunDirError(UserError, ValueError):
    """A run directory that does not fit this command (another config, no checkpoint, a corrupt checkpoint)."""


class MissingRunFile(RunDirError, FileNotFoundError):
    """A file the command needs from a run directory is not there (config.yaml, last.ckpt, samples)."""
