"""`python -m bjexp.train`: the whole job — prepare (cached), register (cached), train (resumable), sample the test
split with the EMA weights, evaluate, report. With no arguments it runs on the embedded default (miniature world,
tiny models, CPU). Sweeps: `python -m bjexp.train -m encoder=biomedclip,clip`.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from bjexp import cli, runstate, schema

schema.register()


class Stopwatch:
    """Wall-clock seconds per stage, recorded in results.json (where a run's minutes went)."""

    def __init__(self):
        self.laps: dict[str, float] = {}

    def __call__(self, name: str):
        import contextlib
        import time

        @contextlib.contextmanager
        def lap():
            t = time.perf_counter()
            yield
            self.laps[name] = round(time.perf_counter() - t, 2)
        return lap()


def run(cfg: DictConfig) -> dict:
    import lightning as L

    from bjexp import evaluate, sample
    from bjexp.data import manifest as mf
    from bjexp.io import write_json
    from bjexp.methods import build_method
    from bjexp.slurm import is_rank_zero
    from bjexp.tracking import runinfo
    from bjexp.tracking.wandb_log import log_results, make_loggers, may_upload_images
    from bjexp.workflow import fit, load_data

    run_dir = Path(cfg.paths.run_dir)
    method = build_method(cfg)  # an unknown method class fails here; load_data's preflight checks it before data
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    clock = Stopwatch()
    with clock("data"):
        data = load_data(cfg)
    info = runinfo.record(cfg, run_dir, manifest=str(data.manifest_path), manifest_hash=mf.file_hash(data.manifest_path))
    loggers = make_loggers(cfg, run_dir, info)
    module = None
    if method.trains:
        with clock("build_models"):  # includes one-off pretraining of tiny VAE/encoder and the feature cache
            module = method.build(cfg, data)
        with clock("fit"):
            trainer = fit(cfg, module, data, run_dir, loggers)
        if not trainer.is_global_zero:
            return {}
    if not is_rank_zero():
        return {}
    generator = method.generator(cfg, data, module)
    with clock("sample"):
        sample.generate(cfg, data, generator, run_dir, getattr(method, "prompt", "text"))
    with clock("evaluate"):  # includes one-off training of the miniature world's classifier, and the probes
        results = evaluate.evaluate(cfg, data, run_dir, generator)
    results["timings_s"] = clock.laps
    write_json(run_dir / "results.json", results)
    log_results(loggers, results, run_dir / "grid.png" if may_upload_images(cfg) else None)
    print(f"results: {run_dir / 'results.json'}  report: {run_dir / 'report.md'}")
    return {k: v["value"] for k, v in results["metrics"].items()}


@cli.main()
def main(cfg: DictConfig) -> dict:
    return runstate.tracked(run, cfg)  # refuses a run dir of another config; run.json: running -> finished | failed


if __name__ == "__main__":
    main()
