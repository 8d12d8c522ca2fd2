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


def check_lr_schedule(cfg: DictConfig) -> None:
    """`model.optim.lr_schedule` must name a diffusers schedule this run can build (piecewise_constant needs step
    rules, which bjexp does not pass), and diffusers' `constant` would drop a warm-up without a word."""
    from diffusers.optimization import SchedulerType

    o = cfg.model.optim
    names = [t.value for t in SchedulerType if t is not SchedulerType.PIECEWISE_CONSTANT]
    if o.lr_schedule not in names:
        raise ConfigError(f"model.optim.lr_schedule={o.lr_schedule!r} is not a diffusers schedule; one of "
                          f"{', '.join(names)}")
    if o.lr_schedule == SchedulerType.CONSTANT.value and o.lr_warmup_steps > 0:
        raise ConfigError(f"model.optim.lr_warmup_steps={o.lr_warmup_steps} with lr_schedule=constant: diffusers' "
                          "constant schedule has no warm-up; use lr_schedule=constant_with_warmup")


def check(cfg: DictConfig) -> None:
    from bjexp.eval.suite import preflight as check_eval
    from bjexp.methods import build_method
    from bjexp.runstate import check_steps

    method = build_method(cfg)  # an unknown method class fails here
    method.check(cfg)  # its weights and options
    check_steps(cfg)
    if method.trains:
        check_lr_schedule(cfg)
    if method.samples:
        check_sampler(cfg)
    check_eval(cfg.eval)
