"""`python -m bjexp.evaluate run=<run dir>`: score a run's generated follow-ups (`<run>/samples/*.png`).

Scores generated images (`test/…`), the real current images (`ceiling/…`, what a perfect generator reaches), the
priors (`floor/…`, the identity baseline) and, where the sample stage wrote them, the real currents' round trips
through the generator's autoencoder (`latent/…`, what a perfect generator in its latent space reaches) with the
same predictor, each with patient-bootstrap CIs.
Writes `<run>/results.json`, `<run>/bootstrap.npz` (each bootstrapped key's value per resample, for effects
across runs), the image grid and the Markdown report.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from bjexp import cli, schema
from bjexp.errors import MissingRunFile
from bjexp.eval import suite
from bjexp.eval.draws import DRAWS, write_draws
from bjexp.instantiate import instantiate
from bjexp.io import write_json
from bjexp.runstate import sample_dir, vae_dir
from bjexp.sample import scored_rows
from bjexp.tracking.report import grid_rows, write_grid, write_run_report

schema.register()


def build_predictor(cfg: DictConfig):
    """The evaluation classifier (`eval.predictor`: _target_ + kwargs -> a Predictor)."""
    return instantiate(OmegaConf.to_container(cfg.eval.predictor, resolve=True))


def train_images(data) -> np.ndarray:
    """Every distinct image of the training split's pairs (the memorization audit's bank)."""
    train = np.flatnonzero((data.df["split"] == "train").to_numpy())
    idx = np.unique(np.concatenate([data.index[k][train] for k in ("prior", "current")]))
    return data.tables.images[idx[idx >= 0]].numpy()


def run_generator(cfg: DictConfig, data, run_dir: Path):
    """A finished run's generator (its method, with the trained module from the last checkpoint when it trains)."""
    from bjexp.methods import build_method

    method = build_method(cfg)
    return method.generator(cfg, data, method.restore(cfg, data, run_dir) if method.trains else None)


def evaluate(cfg: DictConfig, data, run_dir: Path, generator=None) -> dict:
    """Score the run's samples against the manifest's rows of `eval.split` (priors and currents from the in-memory
    tables of `data`, a workflow.Data); writes results.json, grid.png, report.md. `generator`: the run's (for the
    consistency probes, eval.probes); None = rebuilt from the run's checkpoint if a probe needs it."""
    run_dir = Path(run_dir)
    df = data.df
    rows = scored_rows(df, cfg.eval.split, cfg.eval.max_pairs)
    sub = df.iloc[rows].reset_index(drop=True)
    sub.attrs = df.attrs
    size = cfg.model.image_size
    samples = sample_dir(run_dir)
    missing = [p for p in sub["pair_id"] if not (samples / f"{p}.png").is_file()]
    if missing:
        raise MissingRunFile(f"{len(missing)} generated images missing in {samples} (e.g. {missing[0]}.png); "
                                f"run `python -m bjexp.sample run={run_dir}` first")
    gen = suite.load_images([samples / f"{p}.png" for p in sub["pair_id"]], size)
    prior, cur = (data.tables.images[data.index[k][rows]].numpy() for k in ("prior", "current"))
    seed = cfg.seed if cfg.eval.get("bootstrap_seed") is None else cfg.eval.bootstrap_seed
    bank = functools.cache(lambda: train_images(data))  # the audit and its figure read the same bank
    latent = round_trips(run_dir, sub, size)
    results = suite.score_all(cfg.eval, lambda: build_predictor(cfg), sub, generated=gen, current=cur, prior=prior,
                              latent=latent, seed=seed, run_cfg=cfg, providers={"train_images": bank,
                                         "pipeline": lambda: generator or run_generator(cfg, data, run_dir)})
    results["n_bootstrap"] = cfg.eval.n_bootstrap
    results["split"] = cfg.eval.split
    write_draws(run_dir / DRAWS, results.pop("draws"))
    write_json(run_dir / "results.json", results)
    write_pair_grid(run_dir, sub, prior, gen, cur, cfg.eval.grid_pairs, list(cfg.eval.findings), latent)
    write_probe_figures(run_dir, results, sub, gen, cur, bank)
    write_run_report(run_dir, results)
    return results


def round_trips(run_dir: Path, sub, size: int) -> np.ndarray | None:
    """The real currents' autoencoder round trips of these rows (samples_vae/), or None unless every one is there."""
    paths = [vae_dir(run_dir) / f"{p}.png" for p in sub["pair_id"]]
    return suite.load_images(paths, size) if paths and all(p.is_file() for p in paths) else None


def write_probe_figures(run_dir: Path, results: dict, sub, gen, cur, bank) -> None:
    """memorization.png (the closest pairs of the memorization audit: generated | its nearest training image |
    real current) and guidance.png (the guidance-curve probe), when those metrics ran; stale ones are removed."""
    from types import SimpleNamespace

    from bjexp.io import atomic_write
    from bjexp.tracking.study import guidance_plot

    close = results.get("details", {}).get("memorization", {}).get("closest")
    path = run_dir / "memorization.png"
    if close:
        rows = [int(np.flatnonzero(sub["pair_id"].to_numpy() == c["pair_id"])[0]) for c in close]
        train = bank()[[c["train_index"] for c in close]]
        write_grid(path, {"generated": gen[rows], "nearest training image": train, "real current": cur[rows]},
                   [f"distance {c['distance']:.0f} (the real current's nearest: {c['real_current_distance']:.0f})"
                    for c in close], sub["patient_id"].iloc[rows].tolist())
    else:
        path.unlink(missing_ok=True)
    png = guidance_plot([SimpleNamespace(label=run_dir.name, metrics=results["metrics"])])
    path = run_dir / "guidance.png"
    if png:
        with atomic_write(path) as f:
            f.write(png)
    else:
        path.unlink(missing_ok=True)


def write_pair_grid(run_dir: Path, sub, prior, gen, cur, n: int, findings, latent=None) -> Path:
    """grid.png: prior | generated | the real current's autoencoder round trip (what the latent keeps, when the
    sample stage wrote it) | real current, for `n` pairs of distinct patients, changed pairs first."""
    rows = grid_rows(sub, n, findings)
    cols = {"prior": prior[rows], "generated": gen[rows]}
    if latent is not None:
        cols["current, VAE round trip"] = latent[rows]
    cols["real current"] = cur[rows]
    return write_grid(run_dir / "grid.png", cols, sub["text"].iloc[rows].tolist(), sub["patient_id"].iloc[rows].tolist())


def run(cfg: DictConfig) -> dict:
    from bjexp.workflow import load_data
    from bjexp.tracking.runinfo import run_config

    cfg = run_config(cfg)  # run=<dir>: that run's own config
    run_dir = Path(cfg.run or cfg.paths.run_dir)
    data = load_data(cfg)
    return evaluate(cfg, data, run_dir)


@cli.main()
def main(cfg: DictConfig) -> None:
    res = run(cfg)
    print(json.dumps({k: round(v["value"], 4) for k, v in res["metrics"].items() if k.count("/") == 1}, indent=1))


if __name__ == "__main__":
    main()
