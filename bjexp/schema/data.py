"""Data source schemas (`data=` group). Each option names a `builder`: fn(cfg) -> manifest path."""
from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


@dataclass
class PoseConfig:
    """Per-study pose jitter of the miniature world (so registration matters): uniform ± ranges."""
    rotation_deg: float = 4.0
    shift_frac: float = 0.04
    scale_frac: float = 0.04


@dataclass
class SyntheticDataConfig:
    name: str = "synthetic"
    # Images derived from this data may go to an online tracker (W&B) by default (logger.log_images overrides).
    images_shareable: bool = True
    builder: str = "bjexp.data.synthetic.build_manifest"
    image_size: int = 64
    n_patients: int = 900
    min_studies: int = 3
    max_studies: int = 6
    val_fraction: float = 0.1
    test_fraction: float = 0.15
    seed: int = 1234
    # Probability that a finding changes between consecutive studies (new/worse/better/resolved).
    change_prob: float = 0.35
    pose: PoseConfig = field(default_factory=PoseConfig)
    # Images held out for the synthetic classifier's own train/test (not part of the journeys).
    classifier_images: int = 5000


cs = ConfigStore.instance()
cs.store(group="data", name="base_synthetic", node=SyntheticDataConfig)
