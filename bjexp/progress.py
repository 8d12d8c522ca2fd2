"""Progress bars for long steps (rich); quiet when stdout is not a terminal and BJEXP_PROGRESS=0."""
from __future__ import annotations

import os

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=os.environ.get("BJEXP_PROGRESS", "1") == "0")
