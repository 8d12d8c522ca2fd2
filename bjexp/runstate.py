"""A run directory's state: its status in run.json, and whether this command may reuse the directory.

- Status: `running` (with host and pid), then `finished`, `failed` (with the error) or `interrupted` (a signal; the
  checkpoint is saved and the same command resumes). A `running` run whose process is gone is reported as `died`.
- Reuse: a run dir that already holds a `config.yaml` is resumed only by the same training config. Settings that
  change no trained weight (paths, logging, evaluation, dataloader workers, progress bars) may differ; the sampler may
  differ with `resample=true` (old samples and results are discarded, then sampled again); anything else is refused
  with the differing keys, before any work.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from bjexp.errors import ConfigError, RunDirError

# Keys that change no trained weight: everything under these prefixes is free to differ on reuse.
NOT_TRAINING = ("paths", "logger", "eval", "run", "study", "resample", "sampler",
                "trainer.enable_progress_bar", "trainer.num_workers", "trainer.log_every_n_steps",
                "trainer.checkpoint_every_n_steps", "trainer.val_check_interval", "trainer.limit_val_batches",
                "registration.workers", "registration.shard", "registration.progress", "registration.manifest",
                "registration.stall_timeout_s", "data.images.workers", "data.workers",
                "describer.concurrency", "describer.max_retries", "describer.backoff_s", "describer.backoff_max_s",
                "describer.timeout_s", "describer.request_budget", "describer.cache_dir", "describer.trust_env",
                "describer.circuit_breaker")
RESAMPLE = ("sampler",)  # may differ with resample=true: the samples are made again


def method_trains(cfg: DictConfig) -> bool:
    """Whether the configured method trains weights here (identity and the zero-shot baselines do not)."""
    from bjexp.methods import build_method

    return build_method(cfg).trains


def check_steps(cfg: DictConfig) -> None:
    """A trained method with no training steps would sample from random weights: refused."""
    if method_trains(cfg) and cfg.trainer.max_steps < 1:
        raise ConfigError(f"trainer.max_steps={cfg.trainer.max_steps}: method={cfg.method.name} trains, so it needs at "
                          "least one step (only a method that does not train, e.g. method=identity, runs with 0)")


# ---- status -------------------------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def set_status(run_dir: Path, status: str, **extra: Any) -> None:
    """Record the run's status in <run_dir>/run.json (rank 0 only; run.json is created if need be)."""
    from bjexp.io import write_json
    from bjexp.slurm import is_rank_zero

    if not is_rank_zero():
        return
    path = Path(run_dir) / "run.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.pop("error", None)
    info.update(status=status, status_time=_now(), host=socket.gethostname(), pid=os.getpid(), **extra)
    write_json(path, info)


def status(run_dir: Path) -> str | None:
    """The recorded status; `died` for a `running` run whose process on this host no longer exists."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    s = info.get("status")
    if s == "running" and info.get("host") == socket.gethostname() and not _alive(info.get("pid")):
        return "died"
    return s


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tracked(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run the training command `task(cfg)` in its run dir: first `claim` it (a refused dir is left untouched), then
    keep its status in run.json: running, then finished, or failed / interrupted with why."""
    from bjexp.checkpoints import Interrupted

    run_dir = Path(cfg.paths.run_dir)
    claim(cfg, run_dir)
    set_status(run_dir, "running")
    try:
        out = task(cfg)
    except Interrupted as e:
        set_status(run_dir, "interrupted", error=str(e))
        raise
    except BaseException as e:
        requeue = isinstance(e, SystemExit) and "SUBMITIT_EXECUTOR" in os.environ  # submitit requeued the job
        set_status(run_dir, "interrupted" if requeue else "failed",
                   error="requeued by submitit" if requeue else f"{type(e).__name__}: {e}")
        raise
    set_status(run_dir, "finished")
    return out


# ---- reuse --------------------------------------------------------------------------------------------------------

def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_diff(recorded: dict, now: dict) -> dict[str, tuple[Any, Any]]:
    """key -> (recorded value, current value) for every leaf that differs ('<absent>' where a side lacks it)."""
    a, b = _flat(recorded), _flat(now)
    return {k: (a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(set(a) | set(b))
            if a.get(k, "<absent>") != b.get(k, "<absent>")}


def _show(diff: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())


def claim(cfg: DictConfig, run_dir: Path) -> None:
    """Before any work: may this training command use `run_dir`? Refuses a dir in use by a live process and a dir
    trained with another config; with `resample=true` and only sampler changes, discards the old samples."""
    from bjexp.checkpoints import check_readable, last_checkpoint

    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if (info.get("status") == "running" and info.get("host") == socket.gethostname()
            and info.get("pid") != os.getpid() and _alive(info.get("pid"))):
        raise RunDirError(f"{run_dir} is in use by a running process (pid {info['pid']}, since {info.get('started')}); "
                          "wait for it, or pick another hydra.run.dir")
    recorded = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
    now = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    diff = {k: v for k, v in config_diff(recorded, now).items() if not _under(k, NOT_TRAINING)}
    if diff:
        raise RunDirError(f"{run_dir} holds a run trained with another config ({saved}): {_show(diff)}. Resuming it "
                          "would mix two runs: use a new run dir (hydra.run.dir=...), or the recorded values to resume")
    resample = {k: v for k, v in config_diff(recorded, now).items() if _under(k, RESAMPLE)}
    if resample and not cfg.get("resample"):
        raise RunDirError(f"{run_dir}: its samples were made with other sampler settings: {_show(resample)}. Add "
                          "resample=true to discard them and sample (and evaluate) again with the new settings, or drop "
                          "these overrides to resume the run as it was")
    if resample:
        discard_samples(run_dir)
    if (ckpt := last_checkpoint(run_dir)).is_file():
        check_readable(ckpt)


def sample_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "samples"


def vae_dir(run_dir: Path) -> Path:
    """The real currents after a round trip through the generator's autoencoder (what its latent space keeps)."""
    return Path(run_dir) / "samples_vae"


def discard_samples(run_dir: Path) -> None:
    """Remove what sampling and evaluation wrote (samples, results, report, grid); the training is kept, and so are
    the VAE round trips (samples_vae/: they do not depend on the sampler settings)."""
    shutil.rmtree(sample_dir(run_dir), ignore_errors=True)
    for name in ("results.json", "report.md", "grid.png"):
        (Path(run_dir) / name).unlink(missing_ok=True)


def sample_settings(cfg: DictConfig) -> dict:
    """What the pixels of a sample depend on besides the weights (recorded in samples/settings.json)."""
    from bjexp.methods import build_method

    if not build_method(cfg).samples:  # identity: the prior itself, whatever the sampler says
        return {"method": cfg.method.name}
    return {"sampler": OmegaConf.to_container(cfg.sampler, resolve=True), "seed": cfg.seed, "method": cfg.method.name}


def claim_samples(cfg: DictConfig, folder: Path) -> None:
    """Samples in `folder` are only added to when they were made with the same settings; with `resample=true` the old
    ones are discarded. Records the settings."""
    from bjexp.io import write_json

    folder = Path(folder)
    path = folder / "settings.json"
    now = json.loads(json.dumps(sample_settings(cfg), default=str))
    if path.is_file():
        diff = config_diff(json.loads(path.read_text()), now)
        if diff and not cfg.get("resample"):
            raise RunDirError(f"{folder} holds samples made with other settings: {_show(diff)}. Add resample=true to "
                              "discard them and sample again, or drop these overrides")
        if diff:
            shutil.rmtree(folder)
    if not path.is_file():
        write_json(path, now)
