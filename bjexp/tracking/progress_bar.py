"""Lightning's progress bar, in optimizer steps (training runs by `trainer.max_steps`, so "Epoch 0/-2" says
nothing): a rich bar on a terminal, progress lines otherwise (bjexp.progress), each validation loss as a line."""
from __future__ import annotations

import logging

from lightning.pytorch.callbacks import ProgressBar

from bjexp.progress import progress

log = logging.getLogger("bjexp.progress")


class StepProgressBar(ProgressBar):
    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._bar = self._task = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        if not self._enabled:
            return
        self._bar = progress()
        self._bar.start()
        self._task = self._bar.add_task("train", total=trainer.max_steps, completed=trainer.global_step,
                                        unit="steps")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._bar is None:
            return
        fields = {k: float(v) for k, v in trainer.progress_bar_metrics.items() if k.startswith("train/")}
        self._bar.update(self._task, completed=trainer.global_step, **{k.split("/", 1)[1]: v for k, v in fields.items()})

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._enabled and not trainer.sanity_checking:
            vals = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            if vals:
                log.info(f"step {trainer.global_step}: " + " · ".join(f"{k} {v:.4g}" for k, v in vals.items()))

    def on_train_end(self, trainer, pl_module) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)
