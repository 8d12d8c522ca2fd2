from __future__ import annotations

import os


def is_rank_zero() -> bool:
    """Rank from the launcher's environment (Lightning/torchrun/SLURM); rank 0 alone writes run artefacts."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var]) == 0
    return True
