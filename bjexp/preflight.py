"""Start-up checks: every mistake that would otherwise surface only after data preparation, training or model
building fails here, in about a second. `workflow.load_data` runs them first, for every stage that loads data."""
from __future__ import annotations

from omegaconf import DictConfig

from bjexp.errors import ConfigError


def check_sampler(cfg: DictConfig) -> None:
    """`sampler.scheduler` must name a diffusers scheduler that can be built from the training noise schedule."""
    import diffusers
    from diffusers import SchedulerMixin

    from bjexp.models.diffusion import noise_scheduler
    from bjexp.models.pipeline import make_scheduler

    s = cfg.sampler
    cls = getattr(diffusers, str(s.scheduler), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        known = sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and not n.startswith("_"))
        raise ConfigError(f"sampler.scheduler={s.scheduler!r} is not a diffusers scheduler class; e.g. "
                          f"{', '.join(known[:8])}, ... (conf/sampler/*.yaml)")
    try:
        make_scheduler(s, noise_scheduler(cfg.model.num_train_timesteps, cfg.model.prediction_type).config)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"sampler={s.name}: {s.scheduler} cannot be built with scheduler_kwargs="
                          f"{dict(s.scheduler_kwargs)}: {e}") from e


def check(cfg: DictConfig) -> None:
    from bjexp.eval.suite import preflight as check_eval
    from bjexp.methods import build_method
    from bjexp.runstate import check_steps

    method = build_method(cfg)  # an unknown method class fails here
    method.check(cfg)  # its weights and options
    check_steps(cfg)
    if method.samples:
        check_sampler(cfg)
    check_eval(cfg.eval)
