"""W&B (offline unless WANDB_MODE says otherwise). The key comes only from the environment (wandb reads
WANDB_API_KEY itself); nothing secret enters the logged config."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

SECRET_HINTS = ("key", "token", "secret", "password")


def loggable_config(cfg: DictConfig) -> dict:
    def scrub(x):
        if isinstance(x, dict):
            return {k: ("<redacted>" if any(h in k.lower() for h in SECRET_HINTS) and isinstance(v, str) else scrub(v))
                    for k, v in x.items()}
        if isinstance(x, list):
            return [scrub(v) for v in x]
        return x
    return scrub(OmegaConf.to_container(cfg, resolve=True))


def make_loggers(cfg: DictConfig, run_dir: Path, run_info: dict) -> list:
    """Lightning loggers for this run: CSV (csv/metrics.csv, the loss curves the study report plots), plus W&B
    (offline by default) for logger=wandb; none for logger=none. Rank 0 writes."""
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    lg = cfg.logger
    if lg.name == "none":
        return []
    csv = CSVLogger(save_dir=str(run_dir), name="csv", version="")  # the loss curves the study report plots
    if lg.name == "csv":
        return [csv]
    os.environ.setdefault("WANDB_MODE", lg.mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    choices = run_info.get("choices", {})
    name = "-".join(f"{choices[g]}" for g in ("method", "encoder", "conditioning", "registration") if g in choices) or None
    run_id = wandb_run_id(run_dir)
    wb = WandbLogger(project=lg.project, entity=lg.entity, group=lg.group or cfg.get("study"), tags=list(lg.tags),
                     name=name, save_dir=str(run_dir), id=run_id, resume="allow", mode=lg.mode,
                     config={**loggable_config(cfg), "run_info": run_info})
    # Lightning always passes anonymous=None, and wandb (0.31) warns on any value of that deprecated setting
    wb._wandb_init.pop("anonymous", None)
    return [csv, wb]


def wandb_run_id(run_dir: Path) -> str:
    """Stable per run dir, so a requeued/resumed job continues the same W&B run (and a report can find it)."""
    import hashlib

    return "bj-" + hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


def may_upload_images(cfg: DictConfig) -> bool:
    """Whether image grids may go to W&B: `logger.log_images` when set, else `data.images_shareable` (the miniature
    world: yes; MIMIC: no, its data use agreement forbids giving derived images to third parties)."""
    explicit = cfg.logger.get("log_images")
    return bool(explicit) if explicit is not None else bool(cfg.data.get("images_shareable", False))


def log_results(loggers: list, results: dict, grid: Path | None) -> None:
    """Metrics with their CI bounds; on W&B also each metric's metadata (results.json `metric_info`: description,
    direction, headline, bootstrap) and the headline list in the run's config."""
    from bjexp.tracking.report import headline, metric_info

    info = metric_info(results)
    flat = {}
    for k, v in results["metrics"].items():
        flat[k] = v["value"]
        flat[f"{k}/ci_lo"], flat[f"{k}/ci_hi"] = v["lo"], v["hi"]
    for lg in loggers:
        run = lg.experiment if hasattr(lg, "experiment") and hasattr(lg.experiment, "summary") else None  # W&B
        if run is not None:  # what each key means (direction, headline, CI or not), for panels and reports built later
            run.config.update({"metric_info": info, "headline_metrics": headline(info)}, allow_val_change=True)
        lg.log_metrics(flat)
        if grid is not None and hasattr(lg, "log_image"):
            lg.log_image(key="test/grid", images=[str(grid)])
        if run is not None:
            run.summary.update(flat)
            run.finish()  # a multirun job in the same process starts a fresh W&B run
        lg.finalize("success")
