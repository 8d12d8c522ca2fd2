"""SLURM glue: job-size resolvers for the launcher profiles, shard selection for job arrays, run metadata,
and the Lightning settings that leave requeueing to submitit.

Requeue model (one mechanism): the submitit launcher runs every Hydra job under submitit; SLURM sends SIGUSR2
`signal_delay_s` before the time limit (or on preemption), submitit calls the launcher's `checkpoint()`, which
resubmits the same Hydra job, and requeues it. The job comes back with the same SLURM job id, the same run
directory, and resumes from `<run_dir>/checkpoints/last.ckpt`. Lightning's own auto-requeue must stay off, or two
handlers would requeue the same job.
"""
from __future__ import annotations

import functools
import os
import re
import signal
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

from omegaconf import OmegaConf

T = TypeVar("T")

_GPU_ACCELERATORS = {"gpu", "cuda"}


# ---- launcher profile resolvers: job shape follows the trainer config ----------------------------------------------

def _int_devices(devices: Any) -> int:
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(
            f"trainer.devices={devices!r}: a SLURM launcher profile sizes the job from trainer.devices, so it must be "
            "a positive integer (not 'auto', -1 or a list)"
        )
    return devices


def tasks_per_node(devices: Any) -> int:
    """One SLURM task per device: Lightning's SLURMEnvironment reads its ranks from the tasks."""
    return _int_devices(devices)


def gpus_per_node(accelerator: str, devices: Any, require: bool = False) -> int | None:
    """GPUs to request per node: trainer.devices on a GPU accelerator, none otherwise (an error if `require`)."""
    n = _int_devices(devices)
    if str(accelerator).lower() in _GPU_ACCELERATORS:
        return n
    if require:
        raise ValueError(
            f"this launcher profile requests GPUs but trainer.accelerator={accelerator!r}: "
            "add trainer.accelerator=gpu (or pick hydra/launcher=slurm for CPU jobs)"
        )
    return None


def cpus_per_task(num_workers: Any, minimum: Any = 1) -> int:
    """Dataloader workers + the training process itself (at least `minimum`)."""
    return max(int(minimum), int(num_workers) + 1)


def register_resolvers() -> None:
    """`${bjexp.tasks_per_node:...}` etc. for conf/hydra/launcher/*.yaml (idempotent)."""
    for name, fn in {
        "bjexp.tasks_per_node": tasks_per_node,
        "bjexp.gpus_per_node": gpus_per_node,
        "bjexp.cpus_per_task": cpus_per_task,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


# ---- shards: CPU stages as job arrays -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (written "i/n", 0-based). Items are dealt round-robin over a stable order, so shards
    are disjoint, their union is every item, and sizes differ by at most one."""
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= i < n (written 'i/n', e.g. '0/4')")

    @classmethod
    def parse(cls, spec: "str | Shard | None") -> "Shard":
        if spec is None:
            return cls()
        if isinstance(spec, Shard):
            return spec
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
        if not m:
            raise ValueError(f"shard={spec!r}: expected 'i/n' with 0 <= i < n (e.g. shard=2/8)")
        return cls(int(m.group(1)), int(m.group(2)))

    def select(self, items: Sequence[T]) -> list[T]:
        """This shard's items; `items` must be in the same order in every shard (e.g. sorted manifest rows)."""
        return list(items[self.index::self.count])

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_sweep(count: int) -> str:
    """The Hydra sweep value for all shards: `shard=$(python -m bjexp.slurm shards 8)` -> 0/8,1/8,...,7/8."""
    return ",".join(str(Shard(i, count)) for i in range(count))


# ---- run metadata -----------------------------------------------------------------------------------------------------

def job_info() -> dict[str, Any]:
    """The SLURM facts a run records (empty outside SLURM). `restarts` counts requeues of this job."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return {}
    info: dict[str, Any] = {
        "job_id": env["SLURM_JOB_ID"],
        "array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "restarts": int(env.get("SLURM_RESTART_COUNT", 0)),
        "nodes": env.get("SLURM_JOB_NODELIST"),
        "ntasks": int(env.get("SLURM_NTASKS", 1)),
        "partition": env.get("SLURM_JOB_PARTITION"),
        "cluster": env.get("SLURM_CLUSTER_NAME"),
    }
    return {k: v for k, v in info.items() if v is not None}


def global_rank() -> int:
    """Rank of this process in a multi-task job (0 outside SLURM); only rank 0 writes run metadata."""
    for var in ("SLURM_PROCID", "RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def is_rank_zero() -> bool:
    return global_rank() == 0


# ---- Lightning: leave requeueing to submitit ----------------------------------------------------------------------------

def under_submitit() -> bool:
    """True inside a job started by submitit (its launcher installed the SIGUSR2 checkpoint-and-requeue handler)."""
    return "SUBMITIT_EXECUTOR" in os.environ


def lightning_plugins() -> list[Any]:
    """Trainer plugins for SLURM: Lightning's SLURM environment (ranks from SLURM tasks) with its auto-requeue OFF."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def lightning_callbacks() -> list[Any]:
    """Callbacks for SLURM runs (see KeepSubmititSigterm); empty outside submitit."""
    return [_keep_submitit_sigterm_callback()()] if under_submitit() else []


@functools.cache
def _keep_submitit_sigterm_callback() -> type:
    from lightning.pytorch.callbacks import Callback

    class KeepSubmititSigterm(Callback):
        """Give SIGTERM back to submitit once Lightning has installed its own handler.

        Lightning >= 2 ends `fit` (and the process) on SIGTERM. On preemption SLURM sends SIGTERM first, then the
        SIGUSR2 on which submitit checkpoints and requeues (submitit's own preemption helper does the same), so
        Lightning's handler turns a requeue into a failed job (tests/slurm: test_without_the_callback_...).
        Submitit's choice for SIGTERM is to ignore it ("bypass") and wait for SIGUSR2; this restores it.
        """

        def __init__(self) -> None:
            self._handler = signal.getsignal(signal.SIGTERM)

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if callable(self._handler):
                signal.signal(signal.SIGTERM, self._handler)

    return KeepSubmititSigterm


def __getattr__(name: str) -> Any:  # lazy: importing lightning is slow and only training needs it
    if name == "KeepSubmititSigterm":
        return _keep_submitit_sigterm_callback()
    raise AttributeError(name)


# ---- launcher: submission errors that say what was asked for ----------------------------------------------------------

class SlurmSubmissionError(RuntimeError):
    """sbatch refused the job (e.g. GPUs on a partition without GPUs, more CPUs or memory than a node has)."""


_SHAPE_KEYS = ("partition", "account", "qos", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "mem_gb",
               "timeout_min", "constraint")


def submission_error(params: dict[str, Any], sbatch_message: str) -> SlurmSubmissionError:
    """The error bjexp's SLURM launcher (hydra_plugins/bjexp_launcher) raises when sbatch refuses a job."""
    shape = ", ".join(f"{k}={params[k]}" for k in _SHAPE_KEYS if params.get(k) is not None)
    hint = ""
    if "gres" in sbatch_message.lower() and params.get("gpus_per_node"):
        hint = (" This cluster has no GPUs of that kind (see `sinfo -o '%P %G'`); for a CPU job use "
                "trainer.accelerator=cpu with hydra/launcher=slurm.")
    return SlurmSubmissionError(
        f"SLURM refused the job ({shape}; sized by hydra/launcher from the trainer config): "
        f"{sbatch_message.strip()}.{hint}"
    )


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bjexp.slurm", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("shards", help="print the Hydra sweep value over all shards: 0/n,1/n,...")
    s.add_argument("count", type=int)
    args = p.parse_args(argv)
    if args.cmd == "shards":
        print(shard_sweep(args.count))


if __name__ == "__main__":
    _main()
