"""Run the benchmarks (`make bench`), each writing benchmarks/results/<name>.{md,json} with its command and machine.

The CPU-cheap ones run by default; name others to add them: `python benchmarks/run_all.py eval_cost unet_memory`
(both are GPU-scale jobs on a CPU: hours and ~8 GiB respectively). On a GPU node: `bash benchmarks/gpu.sh`.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "train_throughput": [],
    "vae_ceiling": [],
    "mimic_manifest": ["--repeats", "5"],
    "registration": ["--n", "200", "--n512", "100"],
    "eval_cost": ["--measure", "4", "--batch", "4"],
    "unet_memory": ["--batches", "1", "2", "--steps", "2"],
}
DEFAULT = ["train_throughput", "vae_ceiling", "mimic_manifest", "registration"]


def main(names: list[str]) -> int:
    rc = 0
    for name in names or DEFAULT:
        cmd = [sys.executable, str(HERE / f"{name}.py"), *BENCHMARKS[name]]
        print("$", " ".join(cmd), flush=True)
        rc |= subprocess.run(cmd).returncode
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
