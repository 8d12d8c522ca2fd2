"""Training checkpoints: written atomically, read with an error that names the file, saved on SIGTERM.

- `AtomicCheckpointIO` (a Lightning CheckpointIO plugin) writes `last.ckpt` to a temp file in the same folder,
  fsyncs it and renames it into place: a full disk or a kill mid-save leaves the previous good checkpoint. (Lightning's
  own TorchCheckpointIO stages the file in $TMPDIR and *copies* it over the old one when $TMPDIR is another
  filesystem, so a full disk truncated `last.ckpt`.)
- `load` / the plugin's loader raise `CorruptCheckpointError` naming the file and what to do.
- `SaveOnSigterm` (outside submitit, which owns SIGTERM on SLURM) saves the checkpoint when Lightning stops on SIGTERM;
  `workflow.fit` then exits with `Interrupted` (code 143), so a terminated run is never reported as a success.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from bjexp.errors import MissingRunFile, RunDirError

SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def last_checkpoint(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir) / "last.ckpt"


class CorruptCheckpointError(RunDirError):
    def __init__(self, path: Path, why: str):
        super().__init__(f"checkpoint {path} is unreadable ({why}). Move it away (or delete it) to start this run "
                         f"from step 0, or put back a good copy to resume; the run's other files are kept")


class Interrupted(SystemExit):
    """Training stopped by SIGTERM; the checkpoint holds the last finished step. Exit code 143."""

    def __init__(self, message: str):
        super().__init__(SIGTERM_EXIT)
        self.message = message

    def __str__(self) -> str:
        return self.message


def check_readable(path: Path) -> None:
    """Cheap start-up check (the zip's central directory, read from the end of the file): a truncated or garbage
    checkpoint fails here, before data and models are built."""
    try:
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith("data.pkl") for n in z.namelist()):
                raise zipfile.BadZipFile("no data.pkl: not a torch.save archive")
    except (zipfile.BadZipFile, OSError) as e:
        raise CorruptCheckpointError(Path(path), str(e)) from e


def require_last(run_dir: Path) -> Path:
    """The run's last.ckpt, checked readable: a stage that needs it fails before loading data or building models."""
    path = last_checkpoint(run_dir)
    if not path.is_file():
        raise MissingRunFile(f"no checkpoint at {path}: train first (`python -m bjexp.train hydra.run.dir={run_dir}`)")
    check_readable(path)
    return path


def load(path: Path, map_location: Any = "cpu") -> dict:
    """torch.load(weights_only=True) with an error that names the file."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingRunFile(f"no checkpoint at {path}: train first (`python -m bjexp.train hydra.run.dir={path.parents[1]}`)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise CorruptCheckpointError(path, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e


def _checkpoint_io_class() -> type:
    from lightning.fabric.plugins import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
            import torch

            from bjexp.io import atomic_write

            if storage_options is not None:
                raise TypeError("AtomicCheckpointIO takes no storage_options")
            try:
                with atomic_write(path, "wb", fsync=True) as f:  # a temp file in the same folder, then a rename
                    torch.save(checkpoint, f)
            except RuntimeError as e:  # torch's zip writer turns a failed write (e.g. ENOSPC) into a RuntimeError
                if isinstance(e.__context__, OSError):
                    raise OSError(e.__context__.errno, f"cannot write checkpoint {path}: {e.__context__.strerror} "
                                  "(the previous checkpoint is kept)") from e
                raise

        def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
            check_readable(Path(path))
            try:  # a checkpoint holds only tensors and plain types: never unpickle arbitrary objects
                return super().load_checkpoint(path, map_location=map_location,
                                               weights_only=True if weights_only is None else weights_only)
            except (RuntimeError, EOFError, ValueError) as e:
                raise CorruptCheckpointError(Path(path), f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e

    return AtomicCheckpointIO


def checkpoint_io():
    """The CheckpointIO plugin every bjexp Trainer uses."""
    return _checkpoint_io_class()()


def save_on_sigterm(last: Path):
    """A callback that saves `last` when Lightning stops on SIGTERM (none under submitit: it requeues instead)."""
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    class SaveOnSigterm(Callback):
        def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
            if isinstance(exception, SIGTERMException) and trainer.global_step > 0:
                trainer.save_checkpoint(last, weights_only=False)  # every rank calls it (it synchronises)

    return SaveOnSigterm()
