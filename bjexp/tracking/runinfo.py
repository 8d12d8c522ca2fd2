"""What every run records: resolved config, group choices, git SHA (+dirty), manifest hash, seed, SLURM job id."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from bjexp.errors import MissingRunFile, RunDirError
from bjexp.io import write_json

REPO = Path(__file__).resolve().parents[2]


def git_state(repo: Path = REPO) -> dict:
    if "BJEXP_GIT_SHA" in os.environ:  # a frozen snapshot (slurm/submit) has no .git; the submitter recorded it
        return {"sha": os.environ["BJEXP_GIT_SHA"], "dirty": os.environ.get("BJEXP_GIT_DIRTY") == "1",
                "snapshot": os.environ.get("BJEXP_SNAPSHOT")}

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    try:
        sha = git("rev-parse", "HEAD")
        if sha.returncode != 0:
            return {"sha": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"sha": sha.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.TimeoutExpired):
        return {"sha": None, "dirty": None}


def hydra_choices() -> dict:
    try:
        from hydra.core.hydra_config import HydraConfig

        return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra/") or "launcher" in k}
    except ValueError:  # not inside a Hydra app (e.g. called from a test)
        return {}


def record(cfg: DictConfig, run_dir: Path, **extra) -> dict:
    """Write run.json + config.yaml into the run dir (rank 0 only) and return the metadata."""
    import torch

    from bjexp.slurm import job_info as slurm_job_info
    from bjexp.slurm import is_rank_zero

    info = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "choices": hydra_choices(),
        "git": git_state(),
        "seed": cfg.seed,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm": slurm_job_info(),
        "status": "running",  # bjexp.runstate: then finished / failed / interrupted
        "host": platform.node(),
        "cpu_threads": torch.get_num_threads(),  # set per job by bjexp/threads.py
        "pid": os.getpid(),
        "argv": sys.argv,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        **extra,
    }
    if is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "run.json", info)
        from bjexp.io import atomic_write

        with atomic_write(run_dir / "config.yaml", "w") as f:
            f.write(OmegaConf.to_yaml(cfg, resolve=True))
    return info


# Keys whose meaning changed under the same weights: a run saved with one would get today's replacement at its
# default (with_new_keys) and silently run another network over its checkpoint.
RETIRED = {
    "model.unet.attention_head_dim": "diffusers read it as a head count (32 heads of 2 channels); since 3cbfc85 "
                                     "model.unet.head_width gives heads of that many channels",
}


def refuse_retired(saved: DictConfig, where: Path) -> None:
    found = [k for k in RETIRED if OmegaConf.select(saved, k, default=None) is not None]
    if found:
        raise RunDirError(f"{where} was written with {found[0]} ({RETIRED[found[0]]}): today's code would read its "
                          "weights with another attention layout. Re-train it in a new run dir, or use the commit "
                          "that trained it (run.json's git SHA)")


def with_new_keys(saved: DictConfig, chosen: dict) -> DictConfig:
    """A run's saved config plus the keys added since it was written (e.g. `eval.probes`), at today's defaults for
    the run's own group choices; every saved value wins. Inside a Hydra app only (elsewhere: `saved` as is). A
    metric the run deleted with `~eval.metrics.<name>` comes back; one switched off with `=null` stays off."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return saved
    # The run's choices that still exist (an option renamed or removed since: today's default for that group).
    overrides = [f"{g}={c}" for g, c in chosen.items()
                 if c is not None and not g.startswith("hydra") and (REPO / "conf" / g / f"{c}.yaml").is_file()]
    try:
        now = compose("config", overrides=overrides)
    except Exception:  # the run's choices no longer compose together: its saved config alone
        return saved
    plain = OmegaConf.create(OmegaConf.to_container(now, resolve=False))
    return OmegaConf.merge(plain, saved)


def _command_overrides() -> tuple[list[str], set[str]]:
    """(this command's overrides, the config group names), or nothing outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        h = HydraConfig.get()
        return list(h.overrides.task), set(h.runtime.choices)
    except ValueError:
        return [], set()


def run_config(cfg: DictConfig, overrides: list[str] | None = None, groups: set[str] | None = None,
               own: tuple[str, ...] = ()) -> DictConfig:
    """The config a stage acts on when given `run=<dir>`: that run's own resolved `config.yaml`, with this command's
    key=value overrides on top (e.g. `eval.n_bootstrap=200`). Without `run=`, `cfg` itself. Group choices are the
    run's: switching one (e.g. `registration=affine_ecc`) would describe a different run, so it is refused.
    `own`: this stage's sections (e.g. `demo`), taken from this command's config, not from the run's."""
    if not cfg.get("run"):
        return cfg
    run_dir = Path(cfg.run)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise MissingRunFile(f"{saved} not found: run= must name a run directory written by `python -m bjexp.train`")
    if overrides is None:
        overrides, groups = _command_overrides()
    overrides = [o for o in overrides if o.split("=", 1)[0] != "run" and o.split(".", 1)[0].lstrip("+~") not in own]
    info = run_dir / "run.json"
    chosen = json.loads(info.read_text()).get("choices", {}) if info.is_file() else {}
    switched = [o for o in overrides if (k := o.split("=", 1)[0].lstrip("+~")) in (groups or set())
                and chosen.get(k) != o.split("=", 1)[-1]]
    if switched:
        raise RunDirError(f"{switched}: with run={run_dir} the group choices are the run's own ({saved}); "
                         "only key=value overrides apply (e.g. eval.n_bootstrap=200)")
    values = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in (groups or set())]  # groups: the run's
    recorded = OmegaConf.load(saved)
    refuse_retired(recorded, saved)
    base = with_new_keys(recorded, chosen)
    OmegaConf.set_struct(base, True)  # a mistyped key fails here, naming it
    out = OmegaConf.merge(base, OmegaConf.from_dotlist(values))
    for k in own:
        if k in cfg:
            with open_dict(out):
                out[k] = cfg[k]
    out.run = str(run_dir)
    out.paths.run_dir = str(run_dir)
    return out
