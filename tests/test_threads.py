"""CPU threads from the CPUs a process may use (affinity mask, SLURM allocation), and trainer.threads."""
import os
import subprocess
import sys

import pytest

from bjexp.threads import allowed_cpus, slurm_cpus
from conftest import REPO, compose


@pytest.mark.parametrize("env, affinity, expected", [
    ({}, {0, 1, 2, 3}, 4),
    ({"SLURM_CPUS_PER_TASK": "1"}, {0, 1}, 1),  # the unconfined node of the issue: mask 0-1, allocation 1
    ({"SLURM_CPUS_PER_TASK": "8"}, {0, 1}, 2),  # never more than the mask
    ({"SLURM_CPUS_ON_NODE": "8", "SLURM_TASKS_PER_NODE": "4(x2)"}, set(range(16)), 2),
    ({"SLURM_CPUS_ON_NODE": "6", "SLURM_NTASKS_PER_NODE": "3", "SLURM_TASKS_PER_NODE": "1"}, set(range(16)), 2),
    ({"SLURM_CPUS_ON_NODE": "3"}, set(range(16)), 3),
    ({"SLURM_CPUS_ON_NODE": "2", "SLURM_TASKS_PER_NODE": "4"}, {0, 1}, 1),  # fewer CPUs than tasks: still 1
    ({"OMP_NUM_THREADS": "1"}, {0, 1}, 1),  # the user's explicit limit (two jobs side by side on two cores)
    ({"OMP_NUM_THREADS": "8"}, {0, 1}, 2),  # never more than the mask
    ({"OMP_NUM_THREADS": "3,1", "SLURM_CPUS_PER_TASK": "4"}, set(range(8)), 3),  # nested form: its first level
    ({"OMP_NUM_THREADS": "auto"}, {0, 1}, 2),  # not a number: ignored
])
def test_allowed_cpus_from_mask_and_slurm(env, affinity, expected):
    assert allowed_cpus(env, affinity) == expected


def test_slurm_cpus_outside_slurm_is_none():
    assert slurm_cpus({"OMP_NUM_THREADS": "3"}) is None


CHILD = ("import torch, cv2; from bjexp.threads import allowed_cpus, apply; n = apply(); "
         "print(allowed_cpus(), n, torch.get_num_threads(), cv2.getNumThreads())")


def _child(env=None, cpus=None):
    p = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},
                            "PYTHONPATH": str(REPO), **(env or {})},
                       preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    assert p.returncode == 0, p.stderr[-2000:]
    return [int(x) for x in p.stdout.split()]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to tell a 1-CPU mask from the default")
def test_a_real_affinity_mask_and_slurm_allocation_set_the_threads():
    one = min(os.sched_getaffinity(0))
    assert _child(cpus={one}) == [1, 1, 1, 1]
    assert _child(env={"SLURM_CPUS_PER_TASK": "1"}) == [1, 1, 1, 1]
    assert _child(env={"OMP_NUM_THREADS": "1"}) == [1, 1, 1, 1]
    n = len(os.sched_getaffinity(0))
    assert _child()[:3] == [n, n, n]


def test_trainer_threads_is_typed_and_the_callback_is_registered():
    cfg = compose(["trainer.threads=3"])
    assert cfg.trainer.threads == 3
    assert cfg.hydra.callbacks.threads._target_ == "bjexp.threads.SetThreads"
    with pytest.raises(Exception, match="threads"):
        compose(["trainer.threads=many"])


def test_importing_bjexp_leaves_the_openmp_wait_policy_to_libgomp_or_the_user():
    """PASSIVE made the idle-machine training step 2.4x slower (benchmarks/results/wait_policy.md): not forced."""
    code = "import os, bjexp, torch; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = lambda e: subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**e, "PYTHONPATH": str(REPO)},
                                   capture_output=True, text=True, timeout=60).stdout.strip()
    assert run(env) == "unset"
    assert run({**env, "OMP_WAIT_POLICY": "PASSIVE"}) == "PASSIVE"


def test_pinned_sets_the_threads_inside_and_restores_them_after_an_error():
    import torch

    from bjexp.threads import INSTRUMENT_THREADS, pinned

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with pytest.raises(RuntimeError):
            with pinned():
                assert torch.get_num_threads() == INSTRUMENT_THREADS
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
