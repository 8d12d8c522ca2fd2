"""Registration schemas (`registration=` group): shared QC/caching fields plus one schema per method family.

Each conf/registration/<option>.yaml names its family's schema (`base_registration`, `base_ecc`, `base_sitk`);
the method fields mirror the registrar dataclasses in bjexp/registration/ (ecc.py, sitk.py) one to one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class QcConfig:
    """When an estimate is accepted (bjexp.registration.pair.QcPolicy); bounds catch divergence, not pose."""
    already_aligned_px: float = 0.5
    max_angle_deg: float = 20.0
    max_shift_frac: float = 0.25
    max_scale_change: float = 0.3
    max_anisotropy: float = 1.3
    min_gain: float = -0.01
    min_correlation: float = 0.15
    border: str = "replicate"  # replicate | constant | reflect
    qc_size: Optional[int] = 256  # QC similarities on copies downsized to at most this side; null = native


@dataclass
class RegistrationConfig:
    name: str = "none"
    method: str = "none"  # registrar family: none | ecc | sitk
    # current_to_prior (default): the current image is warped into the prior's frame, the prior is untouched —
    # the model maps prior -> current and at test time only the prior's frame exists. prior_to_current: the reverse.
    direction: str = "current_to_prior"
    # Working resolution of the estimate (square side, px); null = as stored. Warping is done at stored size.
    size: Optional[int] = None
    # Pairs whose QC score (NCC of fixed and warped, in field) is below this are dropped (and listed with why).
    min_score: float = 0.3
    qc: QcConfig = field(default_factory=QcConfig)
    # If the estimate fails QC, retry with this motion model (e.g. euclidean: rigid, no scale/shear); null = no retry.
    fallback_motion: Optional[str] = None
    # The intersection rule: keep only the pairs that every listed option keeps as well (e.g. [none, affine_ecc] in
    # every arm of a registration sweep), so all arms train and evaluate on the same pairs. [] = no restriction.
    same_pairs_as: list[str] = field(default_factory=list)
    # Input manifest for `python -m bjexp.register`; null = the one `data.builder` makes (not part of any key).
    manifest: Optional[str] = None
    # Parallelism and SLURM-array sharding (not part of any cache key).
    workers: int = 0            # 0 = all usable cores (SLURM_CPUS_PER_TASK or the CPU affinity set)
    shard: Optional[str] = None  # "i/n", or "auto" = SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT
    progress: bool = True
    # A worker busy with one pair for longer than this is an error naming the pair (0 = wait forever).
    stall_timeout_s: float = 600.0


@dataclass
class EccConfig(RegistrationConfig):
    name: str = "affine_ecc"
    method: str = "ecc"
    motion: str = "affine"            # affine | euclidean | translation
    coarsest_size: int = 64           # pyramid depth: halve until the image is at most this (ignored if levels set)
    levels: Optional[int] = None
    iterations: list[int] = field(default_factory=lambda: [50, 30, 15, 5])  # per level, coarsest first
    eps: float = 1e-3
    gauss_filt_size: int = 3          # smoothing at the coarser levels (capture range)
    finest_gauss_filt_size: int = 1   # no smoothing at the finest refined level (precision)
    init: str = "phase_correlation"   # phase_correlation | identity
    finest_level: int = 1             # 0 = refine at full resolution (affine_ecc_full), 1 = stop at half


@dataclass
class SitkConfig(RegistrationConfig):
    name: str = "affine_sitk"
    method: str = "sitk"
    motion: str = "affine"
    metric: str = "mattes"            # mattes | mean_squares
    histogram_bins: int = 32
    optimizer: str = "regular_step"   # regular_step | gradient_descent
    learning_rate: float = 1.0
    min_step: float = 1e-4
    iterations: int = 200
    shrink_factors: list[int] = field(default_factory=lambda: [4, 2, 1])
    smoothing_sigmas: list[float] = field(default_factory=lambda: [2.0, 1.0, 0.0])
    sampling_fraction: float = 0.25
    seed: int = 1                     # the metric's sampling seed (ITK reads 0 as "the wall clock": refused)


cs = ConfigStore.instance()
cs.store(group="registration", name="base_registration", node=RegistrationConfig)
cs.store(group="registration", name="base_ecc", node=EccConfig)
cs.store(group="registration", name="base_sitk", node=SitkConfig)
