"""`python -m bjexp.prepare`: build (or reuse) the journey manifest for `data=` (cached by content/config hash)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from bjexp import cli, schema
from bjexp.instantiate import get_method

schema.register()


def run(cfg: DictConfig) -> Path:
    path = Path(get_method(cfg.data.builder)(cfg))
    print(f"manifest: {path}")
    return path


@cli.main()
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
