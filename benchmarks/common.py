"""Shared benchmark plumbing: machine description, medians, writing results with the command that made them."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_avg_at_start": os.getloadavg()[0], "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def timed(fn, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def step_clock() -> list[float]:
    """Timestamps of every optimizer step in this process from now on (a global post-step hook): the interval
    between two is one whole training-loop iteration, whoever runs the loop."""
    from torch.optim.optimizer import register_optimizer_step_post_hook  # not an attribute of torch.optim in 2.14

    stamps: list[float] = []
    register_optimizer_step_post_hook(lambda *a, **k: stamps.append(time.perf_counter()))
    return stamps


def median(xs) -> float:
    return float(statistics.median(xs))


def write(name: str, payload: dict, table_md: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python " + " ".join(sys.argv), "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine()}
    (RESULTS / f"{name}.json").write_text(json.dumps({**meta, **payload}, indent=2))
    md = [f"# {name}", "", f"Command: `{meta['command']}`", f"When: {meta['when']}",
          f"Machine: {meta['machine']}", "", table_md, ""]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(md))
    print("\n".join(md))
    return path
