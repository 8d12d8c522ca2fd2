"""The training loop at scale, on CPU: curriculum stages (one run, resume-safe), bf16 autocast + gradient
checkpointing + accumulation, global batch split per device, DDP with 2 processes (gloo)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose
from tiny_fit import OVERRIDES, tiny_data, tiny_module, unet_digest

from bjexp.workflow import fit, per_device_batch, stage_ends

REPO = Path(__file__).resolve().parents[1]


def _record(module):
    """Wrap training_step to record (global_step, has_prior of the batch)."""
    seen, step = [], module.training_step

    def spy(batch, batch_idx):
        seen.append((module.trainer.global_step, batch["has_prior"].tolist()))
        return step(batch, batch_idx)
    module.training_step = spy
    return seen


def test_stage_ends_from_steps_and_fraction():
    cfg = compose(["curriculum=two_stage", "trainer.max_steps=10"])
    assert stage_ends(cfg) == [("single", "single", 5), ("triples", "triples", 10)]
    cfg = compose(["curriculum=two_stage", "trainer.max_steps=10", "curriculum.stages.0.fraction=null",
                   "curriculum.stages.0.steps=12"])
    with pytest.raises(ValueError, match="need 12 steps"):
        stage_ends(cfg)


def test_two_stage_curriculum_null_prior_then_triples_and_resume(tmp_path):
    data = tiny_data()
    # A run interrupted after stage 1: only the single-pair stage (3 steps) has happened.
    cfg1 = compose(OVERRIDES + ["curriculum=two_stage", "trainer.max_steps=3",
                                "curriculum.stages=[{name:single,kind:single,steps:3}]"])
    m1 = tiny_module(cfg1, data)
    seen1 = _record(m1)
    fit(cfg1, m1, data, tmp_path, None)
    assert [s for s, _ in seen1] == [0, 1, 2] and all(not any(hp) for _, hp in seen1)  # null prior in stage 1
    assert json.loads((tmp_path / "checkpoints" / "stages.json").read_text()) == ["single"]
    after1 = unet_digest(m1)

    # The requeued job (full two-stage config) continues: stage 1 skipped, stage 2 from stage-1 weights.
    cfg = compose(OVERRIDES + ["curriculum=two_stage", "trainer.max_steps=6", "curriculum.stages.0.fraction=null",
                               "curriculum.stages.0.steps=3"])
    m2 = tiny_module(cfg, data)
    assert unet_digest(m2) != after1
    seen2 = _record(m2)
    starts = []
    m2.on_train_start = lambda: starts.append(unet_digest(m2))
    trainer = fit(cfg, m2, data, tmp_path, None)
    assert [s for s, _ in seen2] == [3, 4, 5] and all(all(hp) for _, hp in seen2)  # triples in stage 2
    assert starts and starts[0] == pytest.approx(after1, rel=1e-12)
    assert trainer.global_step == 6
    assert json.loads((tmp_path / "checkpoints" / "stages.json").read_text()) == ["single", "triples"]

    # Rerunning a finished run trains nothing more.
    m3 = tiny_module(cfg, data)
    seen3 = _record(m3)
    fit(cfg, m3, data, tmp_path, None)
    assert seen3 == [] and unet_digest(m3) == pytest.approx(unet_digest(m2), rel=1e-12)


def _record_lr(module, stop_after: int | None = None):
    """The learning rate each optimizer step used; optionally stop the fit once `stop_after` steps are done (the
    step-1 checkpoint is written first), as a killed job would leave it."""
    lrs, step = {}, module.training_step

    def spy(batch, batch_idx):
        lrs[module.trainer.global_step] = module.trainer.optimizers[0].param_groups[0]["lr"]
        return step(batch, batch_idx)

    def stop(*_):
        if stop_after is not None and module.trainer.global_step >= stop_after:
            module.trainer.should_stop = True
    module.training_step, module.on_train_batch_end = spy, stop
    return lrs


def test_lr_schedule_spans_every_curriculum_stage_and_resumes_exactly(tmp_path):
    data = tiny_data()
    cfg = compose(OVERRIDES + ["curriculum=two_stage", "trainer.max_steps=8", "trainer.checkpoint_every_n_steps=1",
                               "model.optim.lr=0.01", "model.optim.lr_schedule=cosine", "model.optim.lr_warmup_steps=2"])
    # diffusers' cosine with warm-up, written out: linear to the peak over 2 steps, then half a cosine to 0 at step 8
    expected = [0.01 * (s / 2 if s < 2 else 0.5 * (1 + math.cos(math.pi * (s - 2) / 6))) for s in range(8)]
    full = tiny_module(cfg, data)
    lrs = _record_lr(full)
    fit(cfg, full, data, tmp_path / "full", None)
    assert [lrs[s] for s in range(8)] == pytest.approx(expected, rel=1e-9)  # one schedule over both stages

    first = tiny_module(cfg, data)
    lrs1 = _record_lr(first, stop_after=6)  # killed in stage 2, two steps before the end
    fit(cfg, first, data, tmp_path / "split", None)
    assert sorted(lrs1) == list(range(6))
    resumed = tiny_module(cfg, data)
    lrs2 = _record_lr(resumed)
    fit(cfg, resumed, data, tmp_path / "split", None)
    assert sorted(lrs2) == [6, 7] and [lrs2[6], lrs2[7]] == pytest.approx(expected[6:], rel=1e-9)
    assert unet_digest(resumed) == unet_digest(full)


def test_bf16_checkpointing_accumulation_step_the_optimizer_per_global_batch(tmp_path):
    cfg = compose(OVERRIDES + ["trainer.precision=bf16-mixed", "model.gradient_checkpointing=true",
                               "trainer.accumulate_grad_batches=2", "trainer.max_steps=2"])
    data = tiny_data()
    m = tiny_module(cfg, data)
    assert m.unet.is_gradient_checkpointing
    dtypes = []
    m.unet.register_forward_hook(lambda mod, inp, out: dtypes.append(out.sample.dtype))
    seen = _record(m)
    before = unet_digest(m)
    trainer = fit(cfg, m, data, tmp_path, None)
    assert per_device_batch(cfg) == 2 and trainer.global_step == 2
    assert len(seen) == 4  # 2 optimizer steps x 2 accumulated micro-batches of 2 = global batch 4
    assert set(dtypes) == {torch.bfloat16} and unet_digest(m) != before
    assert all(p.dtype == torch.float32 for p in m.unet.parameters())  # master weights stay fp32


def test_per_device_batch_splits_the_global_batch():
    cfg = compose(["model.optim.batch_size=64", "trainer.devices=2", "trainer.num_nodes=2",
                   "trainer.accumulate_grad_batches=2"])
    assert per_device_batch(cfg) == 8
    with pytest.raises(ValueError, match="not divisible"):
        per_device_batch(compose(["model.optim.batch_size=30", "trainer.devices=4"]))


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_identical_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    r = subprocess.run([sys.executable, str(REPO / "tests" / "ddp_fit.py"), str(tmp_path)], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert [x["world_size"] for x in ranks] == [2, 2] and [x["global_step"] for x in ranks] == [3, 3]
    assert ranks[0]["unet"] == ranks[1]["unet"] and ranks[0]["ema"] == ranks[1]["ema"]
    assert ranks[0]["batch"] == ranks[1]["batch"] == 2  # global 4 over 2 devices
    assert not set(ranks[0]["rows"]) & set(ranks[1]["rows"])  # each rank its own shard of the first epoch
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.ckpt", "stages.json"]
