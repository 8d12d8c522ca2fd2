"""bjexp's training step vs diffusers' unmodified `examples/instruct_pix2pix/train_instruct_pix2pix.py`, side by side
on the same tiny SD-shaped model (one diffusers folder: SD's 4-level UNet and 8x VAE layout at width 32, CLIP text
encoder), batch 8, the same synthetic training pairs, at 64 and 256 px, 1 and 2 threads, in alternating runs.

    python benchmarks/vs_diffusers.py PATH/TO/train_instruct_pix2pix.py [--sizes 64 256] [--threads 1 2] [--pairs 3]

The script is not in the diffusers wheel: take it from the diffusers repository at the installed version (never
vendored here). It reads its data with `datasets` (pip install -e '.[bench]').

Each side runs in its own process; a global optimizer-step hook (`torch.optim.optimizer.
register_optimizer_step_post_hook`) timestamps every optimizer step, so a step's time is the whole loop iteration
(data, forward, backward, clipping, AdamW, EMA, logging) with start-up, data preparation and the final save left
out; we quote the median interval after the first `--warmup` steps. Sides:
- bjexp: `bjexp.workflow.fit` (the Lightning loop of `python -m bjexp.train`) with `model=sd15` pointed at the
  folder, `encoder=clip` (the folder's CLIP text encoder), cached latents and text states, EMA, W&B offline;
- minimal: the same module, data loader and optimizer in a bare Python loop (what the Lightning loop costs);
- diffusers: the script as published with `--use_ema --conditioning_dropout_prob 0.05 --report_to wandb`
  (offline), the VAE and text encoder running every step as the script does.
Threads: bjexp via `trainer.threads`, the others via torch.set_num_threads; the same OMP_WAIT_POLICY
(PASSIVE: this benchmark ran on a shared machine) for all. Writes benchmarks/results/vs_diffusers.{md,json}: per pair of runs the ratio of the
diffusers step to the bjexp step, and the medians of those ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import step_clock, write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BATCH = 8
STEPS = {64: 40, 256: 16}


def overrides(work: Path, size: int, steps: int, threads: int) -> list[str]:
    return ["model=sd15", "encoder=clip", f"paths.assets_dir={work / 'assets'}", f"paths.cache_dir={work / 'cache'}",
            f"paths.run_dir={work / 'runs' / f'bjexp-{size}'}", f"data.image_size={size}", f"model.image_size={size}",
            "data.n_patients=60", "data.classifier_images=10", f"model.optim.batch_size={BATCH}",
            "model.gradient_checkpointing=false", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
            "trainer.limit_val_batches=1", "trainer.checkpoint_every_n_steps=1000000", f"trainer.threads={threads}",
            "logger=wandb"]


def compose(ov: list[str]):
    from hydra import compose as hcompose, initialize_config_dir

    from bjexp import schema

    schema.register()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return hcompose("config", overrides=ov)


# --------------------------------------------------------------------------------------------------- children
def child_bjexp(work: Path, size: int, steps: int, threads: int, minimal: bool) -> list[float]:
    import shutil

    import torch

    from bjexp.threads import apply
    from bjexp.tracking.wandb_log import make_loggers
    from bjexp.workflow import build_module, datamodule, fit, load_data

    cfg = compose(overrides(work, size, steps, threads))
    apply(cfg.trainer.threads)  # what the Hydra callback does for `python -m bjexp.train`
    run_dir = Path(cfg.paths.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run (a reused run dir would resume)
    data = load_data(cfg)
    module = build_module(cfg, data)
    stamps = step_clock()
    if not minimal:
        fit(cfg, module, data, run_dir, make_loggers(cfg, run_dir, {}))
        return stamps
    loader = datamodule(cfg, data, "triples").train_dataloader()
    opt = module.configure_optimizers()
    module.train()
    module.on_fit_start()
    for i, batch in zip(range(steps), loader):
        loss = module._loss(batch, dropout=True, g=module._step_generator(i, 0, 0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.unet.parameters(), cfg.trainer.gradient_clip_val)
        opt.step()
        module.ema.step(module.unet.parameters())
    return stamps


def child_diffusers(work: Path, size: int, steps: int, threads: int, script: Path) -> list[float]:
    import runpy

    import torch

    torch.set_num_threads(threads)
    out = work / "runs" / f"diffusers-{size}"
    sys.argv = [str(script), f"--pretrained_model_name_or_path={work / 'assets' / 'stable-diffusion-v1-5'}",
                f"--dataset_name={work / f'pairs{size}'}", f"--resolution={size}", f"--train_batch_size={BATCH}",
                f"--max_train_steps={steps}", "--learning_rate=1e-4", "--lr_scheduler=constant", "--lr_warmup_steps=0",
                "--conditioning_dropout_prob=0.05", "--use_ema", "--seed=0", "--mixed_precision=no",
                "--dataloader_num_workers=0", "--checkpointing_steps=1000000", "--report_to=wandb",
                f"--output_dir={out}", f"--cache_dir={work / 'hf-cache'}"]
    stamps = step_clock()
    runpy.run_path(str(script), run_name="__main__")
    return stamps


# --------------------------------------------------------------------------------------------------- parent
def prepare(work: Path, sizes: list[int]) -> None:
    """The tiny SD-shaped folder and, per size, the synthetic pairs as bjexp prepares them and as a parquet
    dataset for the script (the same training pairs: prior = input_image, follow-up = edited_image)."""
    import datasets

    from bjexp.data import manifest as mf
    from bjexp.models.fake_assets import write_tiny_sd
    from bjexp.workflow import load_data

    sd = work / "assets" / "stable-diffusion-v1-5"
    if not sd.is_dir():
        write_tiny_sd(sd, width=32, sample_size=32, levels=4, layers_per_block=2)
    for size in sizes:
        if (work / f"pairs{size}").is_dir():
            continue
        data = load_data(compose(overrides(work, size, 1, 1)))
        train = data.df[data.df["split"] == "train"]
        png = lambda paths: [{"bytes": Path(p).read_bytes(), "path": None} for p in paths]  # noqa: E731
        feats = datasets.Features({"input_image": datasets.Image(), "edit_prompt": datasets.Value("string"),
                                   "edited_image": datasets.Image()})
        ds = datasets.Dataset.from_dict({"input_image": png(mf.resolve(train, "prior_path")),
                                         "edit_prompt": train["text"].tolist(),
                                         "edited_image": png(mf.resolve(train, "current_path"))}, features=feats)
        (work / f"pairs{size}").mkdir(parents=True)
        ds.to_parquet(str(work / f"pairs{size}" / "train.parquet"))


def run_child(side: str, work: Path, size: int, threads: int, script: Path, warmup: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "WANDB_DIR": str(work / "wandb"), "BJEXP_PROGRESS": "0",
           "HF_DATASETS_CACHE": str(work / "hf-cache")}
    (work / "wandb").mkdir(exist_ok=True)
    cmd = [sys.executable, __file__, str(script), "--child", side, "--work", str(work), "--size", str(size),
           "--threads", str(threads)]
    load = os.getloadavg()[0]
    p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{side} run failed ({size} px, {threads} threads):\n{p.stderr[-5000:]}")
    stamps = json.loads(p.stdout.strip().splitlines()[-1])
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][warmup:]
    if len(gaps) < 5:
        sys.exit(f"{side}: only {len(stamps)} optimizer steps seen")
    return {"side": side, "size": size, "threads": threads, "median_step_s": statistics.median(gaps),
            "steps_timed": len(gaps), "load_1min": round(load, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("script", type=Path, help="diffusers' examples/instruct_pix2pix/train_instruct_pix2pix.py")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pairs", type=int, default=3, help="alternating runs of each side per setting")
    ap.add_argument("--warmup", type=int, default=4, help="optimizer steps left out at the start of each run")
    ap.add_argument("--work", type=Path, help="working folder (kept; default: a temporary one)")
    ap.add_argument("--child", choices=["bjexp", "minimal", "diffusers"], help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        steps = STEPS[a.size]
        if a.child == "diffusers":
            stamps = child_diffusers(a.work, a.size, steps, a.threads[0], a.script.resolve())
        else:
            stamps = child_bjexp(a.work, a.size, steps, a.threads[0], minimal=a.child == "minimal")
        print(json.dumps(stamps))
        return
    if not a.script.is_file():
        sys.exit(f"{a.script}: not found (diffusers' examples/instruct_pix2pix/train_instruct_pix2pix.py)")
    tmp = None if a.work else tempfile.TemporaryDirectory(prefix="bjexp-vs-diffusers-")
    work = (a.work or Path(tmp.name)).resolve()
    work.mkdir(parents=True, exist_ok=True)
    prepare(work, a.sizes)
    rows, ratios = [], {}
    for size in a.sizes:
        for threads in a.threads:
            for i in range(a.pairs):
                order = ["bjexp", "minimal", "diffusers"] if i % 2 == 0 else ["diffusers", "minimal", "bjexp"]
                got = {s: run_child(s, work, size, threads, a.script, a.warmup) for s in order}
                rows += got.values()
                r = got["diffusers"]["median_step_s"] / got["bjexp"]["median_step_s"]
                ratios.setdefault((size, threads), []).append(
                    {"diffusers_over_bjexp": r,
                     "bjexp_over_minimal": got["bjexp"]["median_step_s"] / got["minimal"]["median_step_s"]})
                print(json.dumps({"size": size, "threads": threads, "pair": i, **ratios[(size, threads)][-1],
                                  **{s: got[s]["median_step_s"] for s in got}}), flush=True)
    lines = ["| px | threads | bjexp step (s) | minimal loop (s) | diffusers step (s) | diffusers / bjexp | "
             "bjexp / minimal |", "|---|---|---|---|---|---|---|"]
    summary = {}
    for (size, threads), rs in ratios.items():
        med = lambda side: statistics.median(r["median_step_s"] for r in rows  # noqa: E731
                                             if r["side"] == side and r["size"] == size and r["threads"] == threads)
        x = statistics.median(r["diffusers_over_bjexp"] for r in rs)
        o = statistics.median(r["bjexp_over_minimal"] for r in rs)
        summary[f"{size}px_{threads}t"] = {"diffusers_over_bjexp": x, "bjexp_over_minimal": o}
        lines.append(f"| {size} | {threads} | {med('bjexp'):.4f} | {med('minimal'):.4f} | {med('diffusers'):.4f} | "
                     f"**{x:.2f}x** | {o:.3f} |")
    loads = [r["load_1min"] for r in rows]
    lines += ["", f"Ratios: medians over {a.pairs} alternating pairs of runs (per pair: the ratio of the two sides' "
              f"median step). Batch {BATCH}; steps per run {STEPS}; first {a.warmup} steps left out. Load average "
              f"(1 min) at the runs' starts: {min(loads)}–{max(loads)}. Script: `{a.script}`."]
    write("vs_diffusers", {"script": str(a.script), "batch": BATCH, "steps": STEPS, "rows": rows,
                           "summary": summary}, "\n".join(lines))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
