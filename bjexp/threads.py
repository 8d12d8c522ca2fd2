"""CPU threads, set by the product rather than by the user.

Intra-op threads = the CPUs this process may use: its affinity mask (`taskset`, cgroups, a confining SLURM node),
capped by the SLURM allocation (a node that does not confine CPUs still reports them all in the mask) and by
OMP_NUM_THREADS when the user sets it. The `trainer.threads` key overrides it. `SetThreads` applies it at the start
of every Hydra job of every stage entry point (registered once in conf/config.yaml's `hydra.callbacks`), in the
job's own process, so each job of a local or SLURM sweep is sized to its own share. DataLoader workers need
nothing: PyTorch gives each worker one thread. Registration pool workers set OpenCV and ITK to one thread each (one
pair per core).

OpenMP's wait policy is libgomp's default unless the user sets OMP_WAIT_POLICY (before torch's import: libgomp
reads it once). Running jobs side by side on few cores, give each its share (taskset, OMP_NUM_THREADS or
trainer.threads) or set OMP_WAIT_POLICY=PASSIVE: spinning threads of one job starve the other
(benchmarks/results/wait_policy.md).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)


def slurm_cpus(env: Mapping[str, str]) -> int | None:
    """CPUs SLURM allocated to this task (None outside a SLURM allocation): SLURM_CPUS_PER_TASK, else this node's
    SLURM_CPUS_ON_NODE shared by the tasks on the node (SLURM_NTASKS_PER_NODE, else SLURM_TASKS_PER_NODE's first
    count, e.g. '2(x3)' -> 2)."""
    if env.get("SLURM_CPUS_PER_TASK"):
        return int(env["SLURM_CPUS_PER_TASK"])
    if not env.get("SLURM_CPUS_ON_NODE"):
        return None
    tasks = re.match(r"\d+", env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or "1")
    return max(1, int(env["SLURM_CPUS_ON_NODE"]) // max(1, int(tasks.group()) if tasks else 1))


def omp_limit(env: Mapping[str, str]) -> int | None:
    """OMP_NUM_THREADS as a number (its first level, e.g. '4,2' -> 4), None when unset or not a positive integer."""
    m = re.match(r"\s*(\d+)", env.get("OMP_NUM_THREADS") or "")
    return int(m.group(1)) if m and int(m.group(1)) > 0 else None


def allowed_cpus(env: Mapping[str, str] | None = None, affinity: set[int] | None = None) -> int:
    """The CPUs this process may use: its affinity mask, capped by its SLURM allocation and by OMP_NUM_THREADS
    (a user's explicit limit, e.g. for jobs side by side)."""
    env = os.environ if env is None else env
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    caps = [c for c in (slurm_cpus(env), omp_limit(env)) if c]
    return max(1, min([len(affinity), *caps]))


def apply(threads: int | None = None) -> int:
    """Set torch's and OpenCV's intra-op threads to `threads` (None or 0: `allowed_cpus()`); returns the number."""
    import cv2
    import torch

    n = int(threads) if threads else allowed_cpus()
    if n < 1:
        raise ValueError(f"trainer.threads={threads!r}: expected a positive number of CPU threads (or null)")
    torch.set_num_threads(n)
    cv2.setNumThreads(n)
    return n


INSTRUMENT_THREADS = 2  # what the miniature world's instruments train with, on any machine (see pinned)


@contextlib.contextmanager
def pinned(n: int = INSTRUMENT_THREADS) -> Iterator[None]:
    """torch's intra-op threads = `n` inside. A model trained in here is the same on every machine, whatever its
    core count: float sums split across threads differ with their number (the miniature world's classifier
    trained with one thread and with two end with different weights). Two is what every run and study here trained
    the evaluation classifier and segmenter with, so their cached copies stay valid."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SetThreads(Callback):
    """Hydra callback: `apply(cfg.trainer.threads)` at the start of every job, in the job's process."""

    def on_job_start(self, config, **kwargs) -> None:
        trainer = config.get("trainer") or {}
        n = apply(trainer.get("threads"))
        log.info("CPU threads: %d (trainer.threads=%s, allowed CPUs %d)", n, trainer.get("threads"), allowed_cpus())
