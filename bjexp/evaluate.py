"""`python -m bjexp.evaluate run=<run dir>`: score a run's generated follow-ups (`<run>/samples/*.png`).

Scores generated images (`test/…`), the real current images (`ceiling/…`, what a perfect generator reaches) and
the priors (`floor/…`, the identity baseline) with the same predictor, each with patient-bootstrap CIs.
Writes `<run>/results.json`, the image grid and the Markdown report.
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from bjexp import schema
from bjexp.data import manifest as mf
from bjexp.eval.metrics import score
from bjexp.imaging import read_grey
from bjexp.instantiate import instantiate
from bjexp.io import write_json
from bjexp.sample import sample_dir, test_rows

schema.register()


def build_predictor(cfg: DictConfig, df):
    """The evaluation classifier. The miniature world's is trained (once, cached) on its own held-out studies."""
    p = OmegaConf.to_container(cfg.eval.predictor, resolve=True)
    if cfg.eval.name == "synthetic":
        from bjexp.eval.synthetic_classifier import train_classifier

        npz = Path(df.attrs["root"]) / "classifier.npz"
        p.setdefault("path", str(train_classifier(npz, cfg.eval.classifier, Path(cfg.paths.cache_dir), cfg.seed)))
    return instantiate(p)


def evaluate(cfg: DictConfig, df, run_dir: Path, images: dict[str, np.ndarray] | None = None) -> dict:
    """Score the run's samples; `images` (pair_id -> uint8) may pass in-memory priors/currents to skip re-reading."""
    run_dir = Path(run_dir)
    rows = test_rows(df, cfg.eval.max_pairs)
    sub = df.iloc[rows].reset_index(drop=True)
    sub.attrs = df.attrs
    size = cfg.model.image_size
    samples = sample_dir(run_dir)
    missing = [p for p in sub["pair_id"] if not (samples / f"{p}.png").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} generated images missing in {samples} (e.g. {missing[0]}.png); "
                                f"run `python -m bjexp.sample run={run_dir}` first")
    gen = np.stack([read_grey(samples / f"{p}.png", size) for p in sub["pair_id"]])
    prior = np.stack([read_grey(p, size) for p in mf.resolve(sub, "prior_path")])
    cur = np.stack([read_grey(p, size) for p in mf.resolve(sub, "current_path")])
    predictor = build_predictor(cfg, df)
    findings = tuple(cfg.eval.findings)
    kw = dict(findings=findings, uncertain=cfg.eval.uncertain, n_bootstrap=cfg.eval.n_bootstrap, seed=cfg.seed)
    p_gen, p_prior, p_cur = predictor.predict(gen), predictor.predict(prior), predictor.predict(cur)
    results = {"metrics": {}, "counts": {}, "notes": []}
    for prefix, pred in (("test", p_gen), ("ceiling", p_cur), ("floor", p_prior)):
        r = score(pred, sub, prior=p_prior, prefix=prefix, **kw)
        results["metrics"].update(r["metrics"])
        results["counts"].update(r["counts"])
        results["notes"] += r["notes"]
    results["predictor"] = {"name": predictor.name, "version": predictor.version}
    results["n_bootstrap"] = cfg.eval.n_bootstrap
    write_json(run_dir / "results.json", results)
    from bjexp.tracking.report import write_grid, write_run_report

    write_grid(run_dir / "grid.png", prior, gen, cur, sub["text"].tolist(), cfg.eval.grid_pairs)
    write_run_report(run_dir, results)
    return results


def run(cfg: DictConfig) -> dict:
    from bjexp.workflow import load_data

    run_dir = Path(cfg.run or cfg.paths.run_dir)
    data = load_data(cfg)
    return evaluate(cfg, data.df, run_dir)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    res = run(cfg)
    print(json.dumps({k: round(v["value"], 4) for k, v in res["metrics"].items() if k.count("/") == 1}, indent=1))


if __name__ == "__main__":
    main()
