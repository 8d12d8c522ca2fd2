"""`python -m bjexp.sample run=<run dir>`: generate the follow-ups of the scored split (`eval.split`, the test split
unless told) with the run's method.

Writes `<run_dir>/samples/<pair_id>.png`; existing PNGs are kept (a requeued job continues where it stopped).
Every method samples through `generate`, which calls the method's generator (a JourneyPipeline, or the identity
copy) with deterministic per-pair noise, so every method sees the same noise for a pair.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from bjexp import cli, runstate, schema
from bjexp.errors import ConfigError
from bjexp.imaging import write_png
from bjexp.models.encoders import EncodedText
from bjexp.models.guidance import pair_generator
from bjexp.progress import progress
from bjexp.runstate import sample_dir, vae_dir

schema.register()

# Which text-table index each prompt column reads (bjexp.data.datamodule.load_tables).
PROMPT_INDEX = {"text": "text", "current_report": "report"}


def scored_rows(df: pd.DataFrame, split: str = "test", max_pairs: int | None = None) -> np.ndarray:
    """The manifest rows a run samples and scores: `eval.split`'s pairs (the first `max_pairs` of them)."""
    rows = np.flatnonzero((df["split"] == split).to_numpy())
    if not len(rows):
        have = ", ".join(f"{k} {n}" for k, n in df["split"].value_counts().items())
        raise ConfigError(f"eval.split={split}: the manifest has no {split} pairs (it has {have or 'none'}); "
                          "give the data a val fraction, or score the test split")
    return rows[:max_pairs] if max_pairs else rows


def conditions(data, rows, prompt: str = "text", cached: bool = True) -> dict:
    """The generator's inputs for manifest rows: prior images and texts, plus the feature cache's prior latents and
    text states when `data.tables` holds them (they belong to the module built for this run)."""
    t, pi, ti = data.tables, data.index["prior"][rows], data.index[PROMPT_INDEX[prompt]][rows]
    out = {"images": t.images[pi], "texts": [t.texts[i] for i in ti]}
    if cached and t.moments is not None:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        out["prior_latents"] = DiagonalGaussianDistribution(t.moments[pi]).mode()
        out["text_states"] = EncodedText(t.states[ti], t.mask[ti])
    return out


@torch.no_grad()
def generate(cfg: DictConfig, data, generator, run_dir: Path, prompt: str = "text", cached: bool = True) -> Path:
    """Fill the samples folder for the scored rows (`eval.split`) that have no PNG yet; returns it. PNGs are written
    by a thread while the next batch samples. A generator with an autoencoder (`round_trip`) also writes the real
    currents' round trips to `samples_vae/` (the latent's own ceiling, read beside the generated images)."""
    s = cfg.sampler
    out = sample_dir(run_dir)
    runstate.claim_samples(cfg, out)  # never mix samples made with other settings (resample=true starts afresh)
    out.mkdir(parents=True, exist_ok=True)
    scored = scored_rows(data.df, cfg.eval.split, cfg.eval.max_pairs)
    rows = [r for r in scored if not (out / f"{data.df['pair_id'].iat[r]}.png").is_file()]
    if hasattr(generator, "round_trip"):
        write_round_trips(data, scored, generator, vae_dir(run_dir), s.batch_size)
    device = getattr(generator, "device", "cpu")
    with progress() as bar, ThreadPoolExecutor(max_workers=1) as writer:
        task = bar.add_task(f"sample ({s.name}, {s.steps} steps)", total=len(rows), unit="pairs")
        pending = None
        for i in range(0, len(rows), s.batch_size):
            chunk = rows[i:i + s.batch_size]
            pids = [data.df["pair_id"].iat[r] for r in chunk]
            imgs = generator(**conditions(data, chunk, prompt, cached), steps=s.steps,
                             image_guidance=s.image_guidance, text_guidance=s.text_guidance,
                             generators=[pair_generator(p, cfg.seed, device) for p in pids])
            if pending is not None:
                pending.result()
            pending = writer.submit(_write_all, out, pids, imgs.cpu().numpy())
            bar.advance(task, len(chunk))
        if pending is not None:
            pending.result()
    return out


@torch.no_grad()
def write_round_trips(data, rows, generator, out: Path, batch_size: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in rows if not (out / f"{data.df['pair_id'].iat[r]}.png").is_file()]
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        imgs = generator.round_trip(data.tables.images[data.index["current"][chunk]])
        _write_all(out, [data.df["pair_id"].iat[r] for r in chunk], imgs.cpu().numpy())


def _write_all(out: Path, pids: list[str], imgs: np.ndarray) -> None:
    for pid, img in zip(pids, imgs):
        write_png(out / f"{pid}.png", img)


def run(cfg: DictConfig) -> Path:
    """Standalone: rebuild a finished run's method (and its trained module from the last checkpoint), then sample."""
    from bjexp.methods import build_method
    from bjexp.tracking.runinfo import run_config
    from bjexp.workflow import load_data, require_trained

    cfg = run_config(cfg)  # run=<dir>: that run's own config
    run_dir = Path(cfg.run or cfg.paths.run_dir)
    method = build_method(cfg)
    if method.trains:
        require_trained(cfg, run_dir)  # before data and models
    data = load_data(cfg)  # its preflight checks the method (weights, options) before any data work
    module = method.restore(cfg, data, run_dir)
    return generate(cfg, data, method.generator(cfg, data, module), run_dir, getattr(method, "prompt", "text"))


@cli.main()
def main(cfg: DictConfig) -> None:
    print(f"samples: {run(cfg)}")


if __name__ == "__main__":
    main()
