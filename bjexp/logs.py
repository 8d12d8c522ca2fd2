"""What a stage prints and what its log file keeps (`conf/hydra/job_logging/bjexp.yaml`).

The console shows bjexp's own lines (and anyone's errors), each once; everything else that libraries log or warn
(open_clip's "Model initialized randomly", Lightning's device and model-summary lines, third-party warnings) goes
to `<run dir>/<stage>.log` only. `JobSetup` (a Hydra callback) applies the parts a logging config cannot say.
"""
from __future__ import annotations

import logging

from hydra.experimental.callback import Callback


class ConsoleFilter(logging.Filter):
    """Pass records of the `own` loggers (and `others_level` or worse from any logger); drop lines marked for the
    log file only (`extra={"console": False}`, e.g. progress lines while a bar shows on the terminal)."""

    def __init__(self, own: list[str] | tuple = ("bjexp", "__main__"), others_level: str = "ERROR"):
        super().__init__()
        self.own = tuple(own)
        self.others_level = logging.getLevelName(others_level)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:
            return False
        name = record.name
        return record.levelno >= self.others_level or any(name == o or name.startswith(o + ".") for o in self.own)


class JobSetup(Callback):
    """At job start (after Hydra configured logging): warnings become log records (so third-party ones reach the
    log file, not the console); Lightning's own console handlers are removed (its lines go through the root
    handlers like everyone's: once, and into the log file); the progress interval comes from the config."""

    def on_job_start(self, config, **kwargs) -> None:
        from bjexp import progress

        logging.captureWarnings(True)
        route_library_loggers()
        if config.get("progress") is not None:
            progress.configure(config.progress.interval_s)


def route_library_loggers() -> None:
    """Lightning, diffusers and transformers give their loggers a stderr handler of their own when first imported
    (diffusers' "pip install accelerate" advice, Lightning's "GPU available"): remove it and let their records
    reach the root handlers (console filter, log file). Idempotent; for the libraries imported so far, so it runs
    at job start and again where bjexp imports them (bjexp/workflow.py)."""
    import sys

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        lg = logging.getLogger(name)
        for h in [h for h in lg.handlers if type(h) is logging.StreamHandler]:
            lg.removeHandler(h)
        lg.propagate = True
    for lib in ("diffusers", "transformers"):
        if (mod := sys.modules.get(f"{lib}.utils.logging")) is not None:
            mod.disable_default_handler()
            mod.enable_propagation()
