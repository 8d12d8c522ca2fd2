"""`python -m bjexp.sample run=<run dir>`: generate the test split's follow-ups with the EMA weights.

Writes `<run_dir>/samples/<pair_id>.png`; existing PNGs are kept (a requeued job continues where it stopped).
Baselines sample through the same function: `identity` copies the prior.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from omegaconf import DictConfig

from bjexp import checkpoints, cli, runstate, schema
from bjexp.imaging import model_to_uint8, write_png
from bjexp.models.encoders import EncodedText
from bjexp.models.guidance import pair_generator, sample
from bjexp.progress import progress

schema.register()


def make_scheduler(scfg: DictConfig, train_scheduler):
    import diffusers

    cls = getattr(diffusers, scfg.scheduler)
    return cls.from_config(train_scheduler.config, **dict(scfg.scheduler_kwargs))


@contextlib.contextmanager
def ema_weights(module):
    """Swap the EMA weights into the UNet for the duration (restored afterwards)."""
    params = list(module.unet.parameters())
    module.ema.store(params)
    module.ema.copy_to(params)
    try:
        yield
    finally:
        module.ema.restore(params)


def test_rows(df: pd.DataFrame, max_pairs: int | None) -> np.ndarray:
    rows = np.flatnonzero((df["split"] == "test").to_numpy())
    return rows[:max_pairs] if max_pairs else rows


def sample_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "samples"


@torch.no_grad()
def generate(cfg: DictConfig, data, module, run_dir: Path) -> Path:
    """Fill the samples folder for the test rows; returns it."""
    out = sample_dir(run_dir)
    runstate.claim_samples(cfg, out)  # never mix samples made with other settings (resample=true starts afresh)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in test_rows(data.df, cfg.eval.max_pairs)
            if not (out / f"{data.df['pair_id'].iat[r]}.png").is_file()]
    if cfg.method.kind == "identity":
        for r in rows:
            write_png(out / f"{data.df['pair_id'].iat[r]}.png", data.tables.images[data.index["prior"][r]].numpy())
        return out
    s = cfg.sampler
    module.eval()
    device = module.device
    scheduler = make_scheduler(s, module.scheduler)
    vae = module.vae
    t = data.tables
    with ema_weights(module), progress() as bar:
        task = bar.add_task(f"sample {len(rows)} test pairs ({s.name}, {s.steps} steps)", total=len(rows))
        for i in range(0, len(rows), s.batch_size):
            chunk = rows[i:i + s.batch_size]
            pids = [data.df["pair_id"].iat[r] for r in chunk]
            pi, ti = data.index["prior"][chunk], data.index["text"][chunk]
            if t.moments is not None:  # the feature cache (model.cache_latents with a frozen encoder)
                prior = DiagonalGaussianDistribution(t.moments[pi].to(device)).mode()
                text = EncodedText(t.states[ti].to(device), t.mask[ti].to(device))
            else:
                prior, text = module.encode_conditions(t.images[pi], [t.texts[i] for i in ti])
            gens = [pair_generator(p, cfg.seed, device) for p in pids]
            lat = sample(module.unet, scheduler, module.scheme, prior, text, module.null, steps=s.steps,
                         image_guidance=s.image_guidance, text_guidance=s.text_guidance, generators=gens,
                         latent_channels=vae.config.latent_channels, init=prior * module.scaling,
                         strength=module.scheme.strength or 1.0)
            imgs = vae.decode(lat / module.scaling).sample
            if imgs.shape[1] == 3:
                imgs = imgs.mean(1, keepdim=True)
            for pid, img in zip(pids, model_to_uint8(imgs[:, 0]).cpu().numpy()):
                write_png(out / f"{pid}.png", img)
            bar.advance(task, len(chunk))
    return out


def run(cfg: DictConfig) -> Path:
    """Standalone: rebuild the model of a finished run from its config and last checkpoint, then sample."""
    from bjexp.workflow import build_module, load_data
    from bjexp.tracking.runinfo import run_config

    cfg = run_config(cfg)  # run=<dir>: that run's own config
    run_dir = Path(cfg.run or cfg.paths.run_dir)
    ckpt = checkpoints.require_last(run_dir) if runstate.method_trains(cfg) else None  # before data and models
    data = load_data(cfg)
    if cfg.method.kind == "identity":
        return generate(cfg, data, None, run_dir)
    module = build_module(cfg, data)
    state = checkpoints.load(ckpt)
    module.load_state_dict(state["state_dict"])
    module.on_load_checkpoint(state)
    return generate(cfg, data, module, run_dir)


@cli.main()
def main(cfg: DictConfig) -> None:
    print(f"samples: {run(cfg)}")


if __name__ == "__main__":
    main()
