"""Progress of long loops (data generation, pretraining, training, sampling, evaluation).

On a terminal: a rich bar. When stdout is not a terminal (SLURM logs, CI, nohup), a log line every
`progress.interval_s` seconds instead (done/total, the loop's own fields such as the loss, rate, ETA) and one when
the loop ends; on a terminal those lines go to the run's log file only. `BJEXP_PROGRESS=0` turns both off (tests).
"""
from __future__ import annotations

import logging
import os
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

log = logging.getLogger(__name__)
INTERVAL_S = {"value": 30.0}  # set per job from the config (`progress.interval_s`, bjexp.logs.JobSetup)


def configure(interval_s: float) -> None:
    INTERVAL_S["value"] = float(interval_s)


def enabled() -> bool:
    return os.environ.get("BJEXP_PROGRESS", "1") != "0"


class LoopProgress(Progress):
    """rich's Progress (same calls: add_task / advance / update), plus progress lines at an interval."""

    def __init__(self, *columns, interval_s: float | None = None, **kw):
        self.terminal = Console().is_terminal
        super().__init__(*columns, disable=not (enabled() and self.terminal), **kw)
        self.interval_s = INTERVAL_S["value"] if interval_s is None else interval_s
        self._last: dict[TaskID, float] = {}

    def add_task(self, description: str, *args, **kw) -> TaskID:
        task = super().add_task(description, *args, **kw)
        self._last[task] = time.monotonic()
        return task

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_line(task_id)

    def update(self, task_id: TaskID, **kw) -> None:
        super().update(task_id, **kw)
        if "advance" in kw or "completed" in kw:
            self._maybe_line(task_id)

    def _maybe_line(self, task_id: TaskID) -> None:
        if not enabled():
            return
        task = self._tasks[task_id]
        now = time.monotonic()
        if task.finished or now - self._last[task_id] >= self.interval_s:
            self._last[task_id] = now
            log.info(line(task), extra={"console": not self.terminal})


def line(task) -> str:
    """'train: 120/1000 steps (12%) · loss 0.1234 · 3.2 steps/s · ETA 4:34' for a rich Task."""
    unit = task.fields.get("unit", "")
    done, total = int(task.completed), task.total
    parts = [f"{task.description}: {done}/{int(total) if total is not None else '?'}{' ' + unit if unit else ''}"
             + (f" ({100 * done / total:.0f}%)" if total else "")]
    parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in task.fields.items() if k != "unit"]
    speed = task.finished_speed or task.speed
    if speed:
        parts.append(f"{speed:.3g} {unit or 'it'}/s")
    if task.finished:
        parts.append(f"done in {_clock(task.finished_time or task.elapsed or 0)}")
    elif task.time_remaining is not None:
        parts.append(f"ETA {_clock(task.time_remaining)}")
    return " · ".join(parts)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress(interval_s: float | None = None) -> LoopProgress:
    return LoopProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), interval_s=interval_s)
