"""`python -m bjexp.register registration=affine_ecc [registration.shard=i/n | --shard i/n]`

Registers the manifest of `data=` (or `registration.manifest=PATH`) and prints the registered manifest's path.
Sharded runs (SLURM arrays: `registration.shard=auto`) only fill the per-pair cache; one unsharded run afterwards
assembles the manifest from the cache in seconds. Training calls the same code (bjexp.registration.register_manifest).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.utils import get_method
from omegaconf import DictConfig

from bjexp import cli, schema

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Path | None:
    from bjexp.registration import register_manifest
    from bjexp.registration.stage import parse_shard
    from bjexp.registration.stage import run as register_shard

    src = cfg.registration.get("manifest")
    manifest = Path(src) if src else Path(get_method(cfg.data.builder)(cfg))
    shard = parse_shard(cfg.registration.get("shard"))
    if shard != (0, 1):
        if cfg.registration.get("method", "none") != "none":
            register_shard(manifest, cfg, shard)
        log.info("shard %d/%d done; run once without a shard to assemble the manifest", *shard)
        return None
    out = register_manifest(manifest, cfg)
    print(out)
    return out


@cli.main()
def main(cfg: DictConfig) -> None:
    run(cfg)


def _shard_flag(argv: list[str]) -> list[str]:
    """Accept `--shard i/n` (SLURM-array habit) as the override registration.shard=i/n."""
    out, it = [], iter(argv)
    for a in it:
        if a == "--shard":
            out.append(f"registration.shard={next(it, '')}")
        elif a.startswith("--shard="):
            out.append(f"registration.shard={a.split('=', 1)[1]}")
        else:
            out.append(a)
    return out


if __name__ == "__main__":
    schema.register()
    sys.argv = [sys.argv[0], *_shard_flag(sys.argv[1:])]
    main()
