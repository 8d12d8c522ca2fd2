"""Offline-first weights: a missing weight is one clear error naming the path to fill and the fetch command."""
from __future__ import annotations


class MissingWeightsError(FileNotFoundError):
    def __init__(self, what: str, detail: str = "", fetch: str = "python -m bjexp.assets fetch <name>"):
        msg = f"missing weights: {what}" + (f" ({detail})" if detail else "")
        msg += f". Fill that path, or fetch it when online: `{fetch}` (see `python -m bjexp.assets list`)."
        super().__init__(msg)
