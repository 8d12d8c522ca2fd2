"""Template describer: a progression text from the change of findings between two studies.

The miniature world renders its texts with it (with severity and side), and on real data it is the offline
`describer=labels` (presence only, from CheXpert labels). Output is deterministic: findings in a fixed order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from bjexp.data.findings import LATERAL, PHRASE, SEVERITY_WORDS


@dataclass(frozen=True)
class FindingState:
    """One finding in one study. severity 0 = absent; None = present, severity unknown; side L/R/B or None."""

    severity: int | None = 0
    side: str | None = None
    uncertain: bool = False

    @property
    def present(self) -> bool:
        return self.severity is None or self.severity > 0


SIDE_WORDS = {"L": "left", "R": "right", "B": "bilateral"}


def state_from_label(value: float | None, uncertain: str = "uncertain") -> FindingState | None:
    """CheXpert label (1 / 0 / -1 / blank) -> state; uncertain policy: 'uncertain' (keep, worded 'possible'),
    'positive', 'negative'. Blank -> None (not mentioned: excluded from the description)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if value == -1:
        if uncertain == "positive":
            return FindingState(severity=None)
        if uncertain == "negative":
            return FindingState(severity=0)
        return FindingState(severity=None, uncertain=True)
    return FindingState(severity=None if value == 1 else 0)


def _noun(name: str, s: FindingState) -> str:
    words = []
    if s.uncertain:
        words.append("possible")
    if s.severity:
        words.append(SEVERITY_WORDS.get(s.severity, ""))
    if name in LATERAL and s.side:
        words.append(SIDE_WORDS[s.side])
    words.append(PHRASE.get(name, name.lower()))
    return " ".join(w for w in words if w)


def describe_finding(name: str, prior: FindingState | None, current: FindingState | None) -> str | None:
    if current is None and prior is None:
        return None
    prior = prior or FindingState()
    current = current or FindingState()
    if not prior.present and not current.present:
        return None
    if not prior.present:
        return f"new {_noun(name, current)}"
    if not current.present:
        return f"resolved {_noun(name, prior)}"
    if prior.uncertain != current.uncertain:
        return f"{_noun(name, current)}, previously {'possible' if prior.uncertain else 'definite'}"
    if prior.severity and current.severity and prior.severity != current.severity:
        verb = "worsening" if current.severity > prior.severity else "improving"
        side = f" {SIDE_WORDS[current.side]}" if name in LATERAL and current.side else ""
        return f"{verb}{side} {PHRASE.get(name, name.lower())}, now {SEVERITY_WORDS[current.severity]}"
    if name in LATERAL and prior.side and current.side and prior.side != current.side:
        return f"{_noun(name, current)}, previously {SIDE_WORDS[prior.side]}"
    return f"{_noun(name, current)} unchanged"


def describe(prior: dict[str, FindingState | None], current: dict[str, FindingState | None],
             order: tuple[str, ...] | None = None) -> str:
    """'new small left pleural effusion; cardiomegaly unchanged' — or 'no acute change' if nothing is present."""
    names = order or tuple(dict.fromkeys([*prior, *current]))
    parts = [p for n in names if (p := describe_finding(n, prior.get(n), current.get(n)))]
    return "; ".join(parts) if parts else "no acute cardiopulmonary process, unchanged"
