"""The miniature world's small trained evaluation nets (classifier, segmenter) on disk: one cache folder each,
model.safetensors + config.json (what rebuilds the net) + report.json (its held-out scores), written all at once."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from bjexp.io import write_json

WEIGHTS = "model.safetensors"


def is_saved(folder: str | Path) -> bool:
    return (Path(folder) / WEIGHTS).is_file()


def save_net(folder: str | Path, net: nn.Module, config: dict, report: dict) -> None:
    """Into `folder` (the temporary folder of an io.build_once: the entry appears whole or not at all)."""
    folder = Path(folder)
    save_file(net.state_dict(), str(folder / WEIGHTS))
    (folder / "config.json").write_text(json.dumps(config))
    write_json(folder / "report.json", report)


def load_net(folder: str | Path, build) -> tuple[nn.Module, dict, dict]:
    """(net, config, report): `build(config) -> nn.Module`, then the saved weights loaded into it."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    net = build(config)
    net.load_state_dict(load_file(str(folder / WEIGHTS)))
    return net, config, json.loads((folder / "report.json").read_text())
