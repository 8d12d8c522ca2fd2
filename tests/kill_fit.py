"""A tiny fit in its own process, for tests that kill it (SIGKILL, SIGTERM) mid-run and resume it.

    python tests/kill_fit.py RUN_DIR [--hold-at STEP]

Trains tiny_fit's model through `bjexp.workflow.fit` (checkpoints every 2 steps, 8 steps in all) in RUN_DIR, resuming
from RUN_DIR/checkpoints/last.ckpt like a rerun. With --hold-at, it writes RUN_DIR/held after that step's hooks and
waits there (until a signal) so the test can kill it between checkpoints. At the end it saves the UNet, the EMA and
the optimizer state to RUN_DIR/final.pt for a bit-for-bit comparison.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

torch.set_num_threads(1)  # the same kernels and reduction order in every process

from conftest import compose  # noqa: E402
from tiny_fit import OVERRIDES, tiny_data, tiny_module  # noqa: E402

STEPS, EVERY = 8, 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--hold-at", type=int, default=0)
    a = ap.parse_args()

    from lightning.pytorch.callbacks import Callback

    import bjexp.workflow as wf

    class HoldAt(Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == a.hold_at:
                (a.run_dir / "held").write_text(str(trainer.global_step))
                t0 = time.monotonic()
                while not trainer.received_sigterm and time.monotonic() - t0 < 120:
                    time.sleep(0.05)

    make = wf.make_trainer

    def make_trainer(*args, **kw):
        trainer = make(*args, **kw)
        if a.hold_at:
            trainer.callbacks.append(HoldAt())  # after ModelCheckpoint and SaveOnSigterm, as a late hook would be
        return trainer

    wf.make_trainer = make_trainer
    cfg = compose(OVERRIDES + [f"trainer.max_steps={STEPS}", f"trainer.checkpoint_every_n_steps={EVERY}",
                               "trainer.val_check_interval=4", "paths.run_dir=/unused"])
    data = tiny_data()
    module = tiny_module(cfg, data)
    trainer = wf.fit(cfg, module, data, a.run_dir, loggers=[])
    torch.save({"global_step": trainer.global_step, "unet": module.unet.state_dict(),
                "ema": [p.clone() for p in module.ema.shadow_params], "ema_steps": module.ema.optimization_step,
                "optimizer": trainer.optimizers[0].state_dict()}, a.run_dir / "final.pt")


if __name__ == "__main__":
    main()
