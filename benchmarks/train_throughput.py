"""Training-step throughput (images/s) of the default config, with the latent/text-state cache vs without.

With the cache a step reads VAE moments and text states; without it the step runs the frozen VAE encoder and
text encoder on every batch (what diffusers' train_instruct_pix2pix.py does).
Usage: python benchmarks/train_throughput.py [hydra overrides...]   (e.g. model=... encoder=clip)
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, timed, write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(overrides: list[str], steps: int = 20) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from bjexp import schema
    from bjexp.data.datamodule import PairDataset
    from bjexp.workflow import build_module, load_data

    schema.register()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.run_dir = "/tmp/bjexp-bench"
    data = load_data(cfg)
    module = build_module(cfg, data)
    opt = torch.optim.AdamW(module.unet.parameters(), lr=1e-4)
    rows = (data.df["split"] == "train").to_numpy().nonzero()[0]
    b = cfg.model.optim.batch_size
    res = {}
    for cached in (True, False):
        ds = PairDataset(data.tables, data.index, rows, cached=cached)
        if not cached:  # as a run with model.cache_latents=false: null text at the encoder's full length
            with torch.no_grad():
                null = module.encoder.encode([""])
            module.null_states, module.null_mask = null.states, null.mask
        batches = [torch.utils.data.default_collate([ds[i] for i in range(k * b, (k + 1) * b)]) for k in range(4)]
        it = iter(range(10**9))

        def step():
            batch = batches[next(it) % len(batches)]
            loss = module._loss(batch, dropout=True, g=torch.Generator().manual_seed(0))
            opt.zero_grad()
            loss.backward()
            opt.step()

        module.train()
        times = timed(step, steps, warmup=2)
        res["cached" if cached else "uncached"] = {"median_s_per_step": median(times), "images_per_s": b / median(times)}
    ratio = res["uncached"]["median_s_per_step"] / res["cached"]["median_s_per_step"]
    table = ("| mode | s/step (median of %d) | images/s |\n|---|---|---|\n" % steps
             + "\n".join(f"| {k} | {v['median_s_per_step']:.4f} | {v['images_per_s']:.1f} |" for k, v in res.items())
             + f"\n\nSpeed-up from caching: {ratio:.2f}x (batch {b}, {cfg.model.image_size} px, encoder={cfg.encoder.name})")
    write("train_throughput", {"overrides": overrides, "batch_size": b, "results": res, "speedup": ratio}, table)


if __name__ == "__main__":
    main(sys.argv[1:])
