"""The counts report: rows read, rows removed by each rule (with its reason), journeys per split."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bjexp.io import Mode, write_json

# BiomedJourney's triples (PA, p10-p18 train/val, p19 test), to compare a build against.
PAPER_JOURNEYS = {"train": 9354, "val": 1056, "test": 1214}


@dataclass
class Counts:
    """Ordered tallies. `read`: what came in; `removed`: (unit, reason) -> n; `journeys`: split -> n."""

    read: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)  # things fixed rather than removed (e.g. views recovered)
    journeys: dict[str, int] = field(default_factory=dict)
    # Work a rerun must still do, reason -> pairs (e.g. LLM requests that failed transiently); {} = complete.
    incomplete: dict[str, int] = field(default_factory=dict)

    def remove(self, unit: str, reason: str, n: int) -> None:
        key = f"{unit}: {reason}"
        self.removed[key] = self.removed.get(key, 0) + int(n)

    def to_dict(self) -> dict:
        return {"read": self.read, "removed": self.removed, "notes": self.notes, "journeys": self.journeys,
                "paper_journeys": PAPER_JOURNEYS, "incomplete": self.incomplete}

    def write(self, path: str | Path, perms: Mode | None = None) -> Path:
        return write_json(path, self.to_dict(), perms)

    @classmethod
    def load(cls, path: str | Path) -> "Counts":
        d = json.loads(Path(path).read_text())
        return cls(read=d["read"], removed=d["removed"], notes=d.get("notes", {}), journeys=d["journeys"],
                   incomplete=d.get("incomplete", {}))

    def table(self, title: str = "MIMIC-CXR journeys"):
        from rich.table import Table

        t = Table(title=title, show_lines=False)
        t.add_column("stage")
        t.add_column("what")
        t.add_column("n", justify="right")
        for k, v in self.read.items():
            t.add_row("read", k, f"{v:,}")
        for k, v in self.notes.items():
            t.add_row("note", k, f"{v:,}")
        for k, v in self.removed.items():
            t.add_row("removed", k, f"{v:,}")
        for k, v in self.journeys.items():
            paper = f" (paper {PAPER_JOURNEYS[k]:,})" if k in PAPER_JOURNEYS else ""
            t.add_row("journeys", k + paper, f"{v:,}")
        for k, v in self.incomplete.items():
            t.add_row("INCOMPLETE", f"{k} (a rerun retries them)", f"{v:,}")
        return t

    def print(self, title: str = "MIMIC-CXR journeys") -> None:
        from rich.console import Console

        Console(stderr=True).print(self.table(title))
