"""Run by test_training_scale: `fit` on 2 CPU processes (Lightning DDP re-launches this script per rank);
each rank writes what it trained to <out>/rank<i>.json."""
import json
import sys
from pathlib import Path

from conftest import compose
from tiny_fit import OVERRIDES, tiny_data, tiny_module, unet_digest

from bjexp.workflow import fit, per_device_batch

if __name__ == "__main__":
    out = Path(sys.argv[1])
    cfg = compose(OVERRIDES + ["trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=3"])
    data = tiny_data()
    module = tiny_module(cfg, data)
    rows = []
    step = module.training_step
    module.training_step = lambda batch, batch_idx: (rows.extend(batch["row"].tolist()), step(batch, batch_idx))[1]
    trainer = fit(cfg, module, data, out / "run", None)
    ema = sum(float(p.double().abs().sum()) for p in module.ema.shadow_params)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(
        {"world_size": trainer.world_size, "global_step": trainer.global_step, "unet": unet_digest(module), "ema": ema,
         "batch": per_device_batch(cfg), "rows": rows[:6]}))
