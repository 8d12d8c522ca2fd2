"""Top-level run config and the small groups every stage shares (paths, trainer, logger)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class PathsConfig:
    # Caches (synthetic data, tiny pretrained models, latents, registrations, reference features) are shared by
    # every run and every sweep job; override with BJEXP_CACHE (e.g. a cluster scratch folder).
    cache_dir: str = "${oc.env:BJEXP_CACHE,${oc.env:HOME}/.cache/bjexp}"
    # Real weights (SD1.5, CLIP, BiomedCLIP, xrv, Inception); `python -m bjexp.assets verify` lists them.
    assets_dir: str = "${oc.env:BJEXP_ASSETS,${oc.env:HOME}/.cache/bjexp/assets}"
    mimic_root: Optional[str] = "${oc.env:MIMIC_CXR_ROOT,null}"
    # Where this run writes (Hydra's output dir; a reused dir resumes from its last.ckpt). None outside a Hydra job
    # (e.g. `--cfg job --resolve`).
    run_dir: Optional[str] = "${hydra:runtime.output_dir}"
    # MIMIC-derived files (LLM cache, MIMIC manifests with report text, the image store, registered copies) are written
    # owner-only (0600 files, 0700 folders); true: also group-readable (0640/0750), for a project group whose members
    # are all on the data use agreement. Never world-readable.
    group_readable: bool = False


@dataclass
class TrainerConfig:
    """Lightning Trainer arguments (passed through) plus the loop settings bjexp owns."""
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_steps: int = 1000
    log_every_n_steps: int = 50
    val_check_interval: int = 500  # steps between validation-loss checks
    limit_val_batches: Any = 1.0
    gradient_clip_val: Optional[float] = 1.0
    accumulate_grad_batches: int = 1
    checkpoint_every_n_steps: int = 500
    num_workers: int = 0
    pin_memory: bool = False  # page-locked batches: host-to-GPU copies run asynchronously
    prefetch_factor: Optional[int] = None  # batches each worker prepares ahead (num_workers > 0 only)
    # Intra-op CPU threads of every stage; null = the CPUs the process may use (affinity mask, capped by the SLURM
    # allocation). Set per job at start (bjexp/threads.py).
    threads: Optional[int] = None
    deterministic: bool = False
    enable_progress_bar: bool = True


@dataclass
class LoggerConfig:
    name: str = "wandb"
    project: str = "bjexp"
    entity: Optional[str] = "${oc.env:WANDB_ENTITY,null}"
    # W&B runs offline unless WANDB_MODE says otherwise (the key comes from the environment, never from config).
    mode: str = "${oc.env:WANDB_MODE,offline}"
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    # Upload image grids to W&B: true / false; null = only when `data.images_shareable` (not for MIMIC: its data
    # use agreement forbids sharing derived images with third parties).
    log_images: Optional[bool] = None


@dataclass
class ProgressConfig:
    # When stdout is not a terminal (SLURM logs, CI, nohup): seconds between progress lines of a long loop
    # (training: step, loss, rate, ETA; sampling: pairs). On a terminal a bar shows instead.
    interval_s: float = 30.0


@dataclass
class DemoConfig:
    """`python -m bjexp.demo run=<dir>`: where the gradio app listens. Localhost and no share link by default
    (MIMIC's data use agreement: no third parties); `host: 0.0.0.0` exposes it on the network."""
    host: str = "127.0.0.1"
    port: Optional[int] = None  # None: gradio's first free port from 7860
    share: bool = False


@dataclass
class ReportConfig:
    """`python -m bjexp.report run=<run or sweep dir>`: what the study report holds and where it goes."""
    grid_pairs: int = 8  # test pairs (distinct patients, changed pairs first) in the image strips
    wandb: bool = False  # also build a W&B Report (wandb-workspaces): saved when W&B is online, else a spec file
    wandb_project: Optional[str] = None  # default: logger.project
    wandb_entity: Optional[str] = None  # default: logger.entity
    # The main table's metrics, in order (e.g. a study's own: conf/experiment/consistency.yaml); None = the headline
    # metrics of the runs' metric_info.
    columns: Optional[list[str]] = None
    # A factorial sweep's reference level per factor, where it is not the config default (e.g. registration: none,
    # so that the effect reads `registration: affine_ecc - none`).
    reference_levels: dict[str, str] = field(default_factory=dict)
    # Effects the study plants by construction, checked against the measured ones in an extra report table:
    # [{effect: "registration: affine_ecc - none", metric: cmig, sign: "+", why: "..."}].
    planted: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Config:
    paths: Any = MISSING
    data: Any = MISSING
    model: Any = MISSING
    encoder: Any = MISSING
    registration: Any = MISSING
    conditioning: Any = MISSING
    method: Any = MISSING
    curriculum: Any = MISSING
    describer: Any = MISSING
    sampler: Any = MISSING
    eval: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    seed: int = 0
    progress: ProgressConfig = field(default_factory=ProgressConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # Stage-specific inputs (e.g. `python -m bjexp.evaluate run=<dir>`): a previous run directory to read.
    run: Optional[str] = None
    # Extra tags recorded with the run (free-form, e.g. the study name set by experiment configs).
    study: Optional[str] = None
    # A reused run dir whose sampler settings differ from the recorded ones: discard its samples and results and
    # sample again (training must be identical; docs/reliability.md). Without it such a reuse is refused.
    resample: bool = False


cs = ConfigStore.instance()
cs.store(name="base_config", node=Config)
cs.store(group="paths", name="base_paths", node=PathsConfig)
cs.store(group="trainer", name="base_trainer", node=TrainerConfig)
cs.store(group="logger", name="base_logger", node=LoggerConfig)
