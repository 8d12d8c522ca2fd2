"""Training-step throughput (images/s) of the default config, with the latent/text-state cache vs without.

With the cache a step reads VAE moments and text states; without it the step runs the frozen VAE encoder and
text encoder on every batch (what diffusers' train_instruct_pix2pix.py does). A third row times the cached step
with UNet attention also at the 8x8 level (`model.unet.attention=[true,true,false]`, the tiny default before
2026-11-28), all in one process.
Usage: python benchmarks/train_throughput.py [--levers] [hydra overrides...]   (e.g. model=... encoder=clip)
--levers: instead, the cached step with each speed lever of the config alone (benchmarks/results/levers_cpu.md).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, timed, write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def time_steps(module, batches: list, steps: int, warmup: int = 2) -> dict:
    """Median seconds per training step (forward, backward, the module's AdamW, its EMA update) over `steps`,
    cycling through `batches`."""
    opt = module.configure_optimizers()
    it = iter(range(10**9))

    def step():
        i = next(it)
        loss = module._loss(batches[i % len(batches)], dropout=True, g=torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % module.ema_every == 0:
            module.ema.step(module.unet.parameters())

    module.train()
    t = median(timed(step, steps, warmup=warmup))
    return {"median_s_per_step": t, "images_per_s": len(batches[0]["row"]) / t}


# Each speed lever alone (`--levers`): its override and how many warm-up steps it needs (compiling).
LEVERS = {"baseline": ([], 2), "model.channels_last": (["model.channels_last=true"], 2),
          "model.optim.fused": (["model.optim.fused=true"], 2),
          "model.optim.foreach=false": (["model.optim.foreach=false"], 2),
          "model.sdpa_backends=[math]": (["model.sdpa_backends=[math]"], 2),
          "model.optim.ema_foreach": (["model.optim.ema_foreach=true"], 2),
          "model.optim.ema_every=4": (["model.optim.ema_every=4"], 2),
          "model.compile": (["model.compile=true"], 3)}


def levers(config, data, batches, steps: int) -> None:
    from bjexp.models.unet import tune
    from bjexp.workflow import build_module

    res = {}
    for name, (extra, warmup) in LEVERS.items():
        res[name] = time_steps(build_module(config(extra), data), batches, steps, warmup)
        tune(torch.nn.Module(), sdpa_backends=["flash", "efficient", "cudnn", "math"])  # undo a process-wide choice
        print(name, res[name], flush=True)
    base = res["baseline"]["median_s_per_step"]
    table = ("| lever | s/step (median of %d) | images/s | vs baseline |\n|---|---|---|---|\n" % steps
             + "\n".join(f"| {k} | {v['median_s_per_step']:.4f} | {v['images_per_s']:.1f} | "
                         f"{base / v['median_s_per_step']:.2f}x |" for k, v in res.items()))
    write("levers_cpu", {"results": res}, table)


def main(overrides: list[str], steps: int = 20) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from bjexp import schema
    from bjexp.data.datamodule import PairDataset
    from bjexp.workflow import build_module, load_data

    def config(extra: list[str]):
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[*overrides, *extra])
        with open_dict(cfg):
            cfg.paths.run_dir = "/tmp/bjexp-bench"
        return cfg

    schema.register()
    cfg = config([])
    data = load_data(cfg)
    module = build_module(cfg, data)
    rows = (data.df["split"] == "train").to_numpy().nonzero()[0]
    b = cfg.model.optim.batch_size

    def batches(cached: bool) -> list:
        ds = PairDataset(data.tables, data.index, rows, cached=cached)
        return [torch.utils.data.default_collate([ds[i] for i in range(k * b, (k + 1) * b)]) for k in range(4)]

    if "--levers" in sys.argv:
        return levers(config, data, batches(True), steps)
    res = {"cached": time_steps(module, batches(True), steps)}
    with torch.no_grad():  # as a run with model.cache_latents=false: null text at the encoder's full length
        null = module.encoder.encode([""])
    module.null_states, module.null_mask = null.states, null.mask
    res["uncached"] = time_steps(module, batches(False), steps)
    if cfg.model.name == "tiny":
        m8 = build_module(config(["model.unet.attention=[true,true,false]"]), data)
        res["cached, attention also at 8x8"] = time_steps(m8, batches(True), steps)
    ratio = res["uncached"]["median_s_per_step"] / res["cached"]["median_s_per_step"]
    table = ("| mode | s/step (median of %d) | images/s |\n|---|---|---|\n" % steps
             + "\n".join(f"| {k} | {v['median_s_per_step']:.4f} | {v['images_per_s']:.1f} |" for k, v in res.items())
             + f"\n\nSpeed-up from caching: {ratio:.2f}x (batch {b}, {cfg.model.image_size} px, encoder={cfg.encoder.name})")
    if "cached, attention also at 8x8" in res:
        r8 = res["cached, attention also at 8x8"]["median_s_per_step"] / res["cached"]["median_s_per_step"]
        table += f"\nAttention also at the 8x8 level costs {r8:.2f}x the default cached step."
    write("train_throughput", {"overrides": overrides, "batch_size": b, "results": res, "speedup": ratio}, table)


if __name__ == "__main__":
    main([a for a in sys.argv[1:] if a != "--levers"])
