"""Schemas of the model-side groups: model, encoder, conditioning, method, curriculum, sampler, eval."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TinyVAEConfig:
    # 3 blocks = 4x downsampling: 64 px images -> 16x16x4 latents. SD's 8x (8x8x4 here) cannot hold what the
    # miniature world's metrics read: its round trip took Pneumothorax AUROC to 0.66 and age r to 0.49; this one
    # keeps every finding >= 0.95 of as-rendered, age r 0.86, sex 0.93 (benchmarks/vae_ceiling.py, README).
    block_out_channels: list[int] = field(default_factory=lambda: [8, 16, 32])
    norm_num_groups: int = 8
    latent_channels: int = 4
    train_steps: int = 400  # 300 left age r at 0.85 of 0.86 needed
    batch_size: int = 32
    lr: float = 2e-3
    kl_weight: float = 1e-6
    # Self-attention in the VAE's mid block (SD's has it); at 64 px it bought nothing measurable and costs time.
    mid_block_attention: bool = False


@dataclass
class TinyUNetConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    # Per level, whether it has (self + cross) attention. On 16x16 latents (levels 16, 8, 4 px): the 8 and 4 px
    # levels. Cross-attention at 8 px too took the default's changed-findings AUROC from 0.31 to 0.54 for 1.24x the
    # fit's time (README "Measured"); at 16 px it would double the step.
    attention: list[bool] = field(default_factory=lambda: [False, True, True])
    layers_per_block: int = 1
    # Channels per attention head (a level of width w has w // head_width heads, at least one).
    head_width: int = 32
    norm_num_groups: int = 16


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    batch_size: int = 32  # global batch; split across devices
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # diffusers EMAModel's decay warm-up (matters for short runs)
    # The learning rate over the run: a diffusers.optimization schedule name (constant, cosine, linear, ...), with
    # its warm-up, over trainer.max_steps (every curriculum stage together).
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    # AdamW's implementation: None = torch's choice (foreach on GPU); fused=true runs one kernel per step.
    fused: Optional[bool] = None
    foreach: Optional[bool] = None
    # EMA update every k optimizer steps (decay^k per update: the same horizon), and with foreach kernels.
    ema_every: int = 1
    ema_foreach: bool = False


@dataclass
class ModelConfig:
    name: str = "tiny"
    image_size: int = 64
    # A diffusers-format folder (model_index.json + vae/ + unet/); None = the tiny models built here.
    pretrained_path: Optional[str] = None
    # The registry asset that folder is (its required files and checksums); None: model.name.
    asset: Optional[str] = None
    vae: TinyVAEConfig = field(default_factory=TinyVAEConfig)
    unet: TinyUNetConfig = field(default_factory=TinyUNetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    prediction_type: str = "epsilon"
    num_train_timesteps: int = 1000
    # Min-SNR-γ loss weighting (Hang et al. 2023; diffusers' --snr_gamma); None = the plain MSE of the paper.
    min_snr_gamma: Optional[float] = None
    # The miniature world's general domain: tiny SD / InstructPix2Pix stand-ins (methods sd, instructpix2pix[_ft]).
    general: GeneralDomainConfig = field(default_factory=lambda: GeneralDomainConfig())
    gradient_checkpointing: bool = False
    # Speed levers (benchmarks/results/levers_cpu.md and gpu_perf.md say what each gains): torch.compile the UNet
    # (in place, so checkpoints and EMA see the same parameters), channels-last memory format, and the attention
    # kernels scaled_dot_product_attention may choose from (flash | efficient | cudnn | math; null = all, torch's
    # priority). The kernel choice is process-wide (torch.backends.cuda.enable_*_sdp).
    compile: bool = False
    channels_last: bool = False
    sdpa_backends: Optional[list[str]] = None
    # Cache VAE latents and frozen text states once per (data, model, encoder): the training step never runs them.
    cache_latents: bool = True


@dataclass
class TinyEncoderConfig:
    width: int = 64
    layers: int = 2
    heads: int = 2
    embed_dim: int = 64
    pretrain_steps: int = 150
    pretrain_batch: int = 64
    pretrain_lr: float = 1e-3


@dataclass
class EncoderConfig:
    name: str = MISSING
    # open_clip_text (causal CLIP transformer) | hf_bert (HF BERT tower via open_clip), both open_clip folders;
    # hf_clip: transformers CLIPTextModel + CLIPTokenizer from a diffusers SD folder (encoder=clip with model=sd15).
    family: str = MISSING
    max_length: int = 77
    # An open_clip `local-dir:` folder with real weights; None = build and pretrain the tiny encoder.
    path: Optional[str] = None
    trainable: bool = False
    tiny: TinyEncoderConfig = field(default_factory=TinyEncoderConfig)


@dataclass
class ConditioningConfig:
    name: str = MISSING
    _target_: str = MISSING  # a bjexp.models.conditioning scheme
    kwargs: dict[str, Any] = field(default_factory=dict)  # its constructor arguments (e.g. sdedit strength)


@dataclass
class CFGDropoutConfig:
    """One draw per sample (the paper, after InstructPix2Pix): drop text / both / image with these rates."""
    text: float = 0.05
    both: float = 0.05
    image: float = 0.05


@dataclass
class GeneralDomainConfig:
    """Synthetic non-CXR scenes (bjexp/data/scenes.py) and the tiny text-to-image / InstructPix2Pix models pretrained
    on them once and cached (bjexp/models/general_domain.py): the miniature world's Stable Diffusion and
    InstructPix2Pix. Their VAE and UNet have the architecture of model.vae / model.unet (trained on scenes); the
    text encoder is a transformers CLIP text model pretrained contrastively on the captions, as CLIP was."""
    seed: int = 0  # its own seed, not the run's: one pretrained model serves every run and seed of a sweep
    n_scenes: int = 3000  # captioned scenes (VAE, CLIP and text-to-image training)
    n_edits: int = 3000  # (before, instruction, after) triples (InstructPix2Pix training)
    text: TinyEncoderConfig = field(default_factory=lambda: TinyEncoderConfig(pretrain_steps=200))
    sd_steps: int = 800  # text-to-image UNet steps
    ip2p_steps: int = 600  # InstructPix2Pix steps, starting from the text-to-image UNet (conv_in widened)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, ema_decay=0.999))
    # 5/5/5 %: InstructPix2Pix's rates; text-only training drops the text 10 % of the time (text + both), SD's rate.
    cfg_dropout: CFGDropoutConfig = field(default_factory=CFGDropoutConfig)


@dataclass
class MethodConfig:
    name: str = MISSING
    _target_: str = MISSING  # a bjexp.methods class (protocol: bjexp.methods.base.Method)
    kwargs: dict[str, Any] = field(default_factory=dict)  # its constructor arguments
    cfg_dropout: CFGDropoutConfig = field(default_factory=CFGDropoutConfig)


@dataclass
class CurriculumStage:
    name: str = "triples"
    kind: str = "triples"  # triples | single (image–report pairs with the null prior)
    steps: int = -1  # -1 = trainer.max_steps minus the other stages
    fraction: Optional[float] = None  # alternatively a fraction of trainer.max_steps


@dataclass
class CurriculumConfig:
    name: str = MISSING
    stages: list[CurriculumStage] = field(default_factory=lambda: [CurriculumStage()])


@dataclass
class SamplerConfig:
    name: str = MISSING
    scheduler: str = MISSING  # a diffusers scheduler class name
    steps: int = 100
    image_guidance: float = 1.5
    text_guidance: float = 7.5
    batch_size: int = 64
    scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    # The sampling UNet's dtype (float32 | bfloat16 | float16; latents and scheduler arithmetic stay float32) and
    # whether to torch.compile it: GPU levers (benchmarks/gpu.sh), off on the CPU default.
    dtype: str = "float32"
    compile: bool = False


@dataclass
class ProbeSettings:
    n_priors: int = 16  # test priors probed (one per patient, manifest order)
    steps: Optional[int] = None  # sampler steps / guidance of the probes; None = the run's sampler
    text_guidance: Optional[float] = None
    image_guidance: Optional[float] = None
    grid_text_guidance: list[float] = field(default_factory=lambda: [1.0, 3.0, 7.5])  # guidance_curve's grid
    grid_image_guidance: list[float] = field(default_factory=lambda: [1.0, 1.5, 2.5])
    batch_size: int = 64


@dataclass
class EvalConfig:
    name: str = MISSING
    predictor: dict[str, Any] = field(default_factory=dict)  # _target_ + kwargs -> a bjexp.eval.metrics.Predictor
    # name -> {_target_: a bjexp.eval.registry.Metric, options} (null = off); conf/eval/metrics/paper.yaml
    metrics: dict[str, Optional[dict[str, Any]]] = field(default_factory=dict)
    # _target_ + options -> a factory (run_cfg, **options) -> bjexp.eval.segmenter.Segmenter (anatomy metrics)
    segmenter: dict[str, Any] = field(default_factory=dict)
    # _target_ -> a factory (ctx, **options) -> bool (N, H, W) edit regions (bjexp.eval.locality; unset: none)
    edit_regions: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    uncertain: str = "exclude"  # exclude | positive | negative (CheXpert -1 labels)
    n_bootstrap: int = 1000
    # Seed of the patient bootstrap; None = the run's seed. One value across a sweep's runs (scored on the same
    # pairs) gives them the same resamples, so effects between runs get paired CIs (bjexp.tracking.effects).
    bootstrap_seed: Optional[int] = None
    # The pairs sampled and scored: test, or val to choose sampler settings without reading the test split
    # (`python -m bjexp.train hydra.run.dir=<a copy of the run> eval.split=val resample=true sampler...`).
    split: str = "test"
    max_pairs: Optional[int] = None  # evaluate a fixed subset (the first N pairs of the split) for quick runs
    grid_pairs: int = 8
    # Consistency probes that run (metrics of eval.metrics that consume the generator; bjexp/eval/probes.py); [] = none.
    # The main job's 10 minutes hold these two (3 generations per probed prior); severity_monotonic, contradiction and
    # guidance_curve (2, 1 and 9 more) run in the consistency study (conf/experiment/consistency.yaml) or on request.
    probes: list[str] = field(default_factory=lambda: ["null_instruction", "reversal"])
    probe_settings: ProbeSettings = field(default_factory=ProbeSettings)


@dataclass
class SyntheticClassifierConfig:
    steps: int = 800
    batch_size: int = 64
    lr: float = 3e-3
    width: int = 16


@dataclass
class SyntheticEvalConfig(EvalConfig):
    classifier: SyntheticClassifierConfig = field(default_factory=SyntheticClassifierConfig)


cs = ConfigStore.instance()
cs.store(group="model", name="base_model", node=ModelConfig)
cs.store(group="encoder", name="base_encoder", node=EncoderConfig)
cs.store(group="conditioning", name="base_conditioning", node=ConditioningConfig)
cs.store(group="method", name="base_method", node=MethodConfig)
cs.store(group="curriculum", name="base_curriculum", node=CurriculumConfig)
cs.store(group="sampler", name="base_sampler", node=SamplerConfig)
cs.store(group="eval", name="base_eval", node=EvalConfig)
cs.store(group="eval", name="base_eval_synthetic", node=SyntheticEvalConfig)
