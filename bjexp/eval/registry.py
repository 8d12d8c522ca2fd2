"""The metric registry: every metric is a small class; `evaluate()` is the one place that runs a list of them.

A metric declares what it consumes (classifier predictions, images, masks, a generating pipeline), whether it is
bootstrapped, whether it is a headline, its direction and a one-line description; `results.json` carries that
metadata (`metric_info`) and every report reads it. Bootstrapped metrics of one side are computed together on each
patient-bootstrap resample (`stats.bootstrap`), in the order their `needs` allow, so a composite (CMIG) reads its
components from the same resample. Set-level metrics (FID) run once, without a CI.

Sides (keys `side/name[/sub]`): `test` = the generated follow-ups, `ceiling` = the real current images (what a
perfect generator would score), `floor` = the priors (what copying the prior scores), `latent` = the real current
images after a round trip through the generator's autoencoder (what a perfect generator in that latent space
would score; only where the run wrote them). docs/evaluation.md says how to add a metric: a class, one line of
`eval.metrics`, a test.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import pandas as pd

from bjexp.eval import stats

SIDES = ("test", "ceiling", "floor", "latent")
DIRECTIONS = ("higher", "lower")
INPUTS = ("predictions", "images", "masks", "pipeline")


class Metric:
    """One metric (or a family of keys under one name: `name` and `name/<sub>`).

    Subclasses set the class attributes and implement `compute`. Config may override `headline` and `sides`
    (`eval.metrics.<name>.headline=false`); other constructor arguments are the metric's own options.
    """
    name: ClassVar[str]  # key stem: results keys are `<side>/<name>` and `<side>/<name>/<sub>`
    description: ClassVar[str] = ""  # one line, shown in reports
    consumes: ClassVar[tuple[str, ...]] = ("predictions",)  # of INPUTS
    needs: ClassVar[tuple[str, ...]] = ()  # metrics whose values (same side, same resample) `compute` reads
    bootstrap: ClassVar[bool] = True  # computed per patient-bootstrap resample (95% CI); False: once, set-level
    direction: ClassVar[str] = "higher"  # which way is better
    unit: ClassVar[str] = ""  # "" (a fraction or a score), "%", ... (for axis labels)
    headline: bool = False  # a column of every report's main table
    sides: tuple[str, ...] = SIDES  # which sides it is computed on

    def __init__(self, *, headline: bool | None = None, sides: list[str] | tuple[str, ...] | None = None):
        if headline is not None:
            self.headline = bool(headline)
        if sides is not None:
            bad = sorted(set(sides) - set(SIDES))
            if bad:
                raise ValueError(f"metric {self.name}: unknown side(s) {bad}; sides are {list(SIDES)}")
            self.sides = tuple(sides)

    def compute(self, ctx: "EvalContext", side: str, rows: np.ndarray | None,
                done: Mapping[str, float]) -> Mapping[str, float]:
        """Values on `side` for these rows of `ctx.df` (a resample, with repeats; None = all rows, for set-level
        metrics): {"": value, "<sub>": value, ...}. `done` holds this resample's values of the metrics computed
        before it (keys without the side: `pathology_auroc`, `pathology_auroc/Effusion`). Return {} when undefined
        (e.g. its inputs are absent), NaN for a statistic undefined on this resample."""
        raise NotImplementedError

    def prepare(self, ctx: "EvalContext") -> None:
        """Called before any metric computes: build or check what this metric will need (weights present, a model
        trained), so a missing file fails in seconds, not after the other metrics' work."""

    def notes(self, side: str, metrics: Mapping[str, dict]) -> list[str]:
        """Sentences for results.json `notes` after the evaluation (e.g. a clamp applied)."""
        return []

    def details(self, ctx: "EvalContext") -> dict | None:
        """Policy/provenance of the metric for results.json `details.<name>` (e.g. FID's resize and N)."""
        return None

    def info(self) -> dict:
        cls = type(self)
        return {"description": self.description, "direction": self.direction, "headline": self.headline,
                "bootstrap": self.bootstrap, "consumes": list(self.consumes), "needs": list(self.needs),
                "sides": list(self.sides), "unit": self.unit, "target": f"{cls.__module__}.{cls.__qualname__}"}

    def key(self, sub: str = "") -> str:
        return f"{self.name}/{sub}" if sub else self.name


class EvalContext:
    """What metrics consume, each computed at most once, lazily: the scored manifest rows, the images and the
    classifier predictions per side, label and attribute arrays, and `memo` for anything expensive a metric family
    shares (segmentations, a trained segmenter, a pipeline). `providers` build named inputs on first use
    (`get("predictor")`, `get("pipeline")`)."""

    def __init__(self, df: pd.DataFrame, *, images: Mapping[str, np.ndarray] | None = None,
                 predictions: Mapping[str, Any] | None = None, findings: list[str] | tuple[str, ...] = (),
                 uncertain: str = "exclude", n_bootstrap: int = 1000, seed: int = 0, cache_dir: str | Path | None = None,
                 cache_reference: bool = False, cfg: Any = None, run_cfg: Any = None,
                 providers: Mapping[str, Callable[[], Any]] | None = None,
                 race_column: str = "attr_race", age_column: str = "attr_age", sex_column: str = "attr_sex"):
        if uncertain not in ("exclude", "positive", "negative"):
            raise ValueError(f"eval.uncertain={uncertain!r}: expected exclude, positive or negative")
        self.df = df
        self.images = dict(images or {})
        self._predictions = dict(predictions or {})
        self.findings = list(findings)
        self.uncertain, self.n_bootstrap, self.seed = uncertain, int(n_bootstrap), int(seed)
        self.cache_dir = Path(cache_dir) if cache_dir else None  # the evaluation's caches (reference sides)
        self.cache_reference = cache_reference  # reference-side predictions through cache_dir/predictions
        self.cfg, self.run_cfg = cfg, run_cfg  # cfg.eval (metric settings) and the whole run config (None in tests)
        self.providers = dict(providers or {})
        self.columns = {"race": race_column, "age": age_column, "sex": sex_column}
        self._memo: dict = {}

    # -- generic memo and named inputs ------------------------------------------------------------------------
    def memo(self, key: Any, build: Callable[[], Any]) -> Any:
        """`build()` once per key for this evaluation."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def has_memo(self, key: Any) -> bool:
        return key in self._memo

    def get(self, name: str) -> Any:
        if name not in self.providers:
            raise KeyError(f"evaluation input {name!r} is not available here (known: {sorted(self.providers)})")
        return self.memo(("input", name), self.providers[name])

    def built(self, name: str) -> bool:
        return self.has_memo(("input", name))

    # -- per side ---------------------------------------------------------------------------------------------
    def side_images(self, side: str) -> np.ndarray:
        if side not in self.images:
            raise KeyError(f"no images for side {side!r} in this evaluation")
        return self.images[side]

    def predictions(self, side: str):
        """The predictor's outputs on a side's images (reference sides through the on-disk prediction cache)."""
        if side not in self._predictions:
            from bjexp.eval.cache import cached_predict

            predictor = self.get("predictor")
            images = self.side_images(side)
            self._predictions[side] = (predictor.predict(images) if side == "test" else cached_predict(
                predictor, images, self.cache_dir if self.cache_reference else None))
        return self._predictions[side]

    def has_predictions(self, side: str) -> bool:
        return side in self._predictions or ("predictor" in self.providers and side in self.images)

    # -- manifest-derived arrays ------------------------------------------------------------------------------
    def labels(self, which: str, finding: str) -> np.ndarray:
        """Binary labels with NaN where unknown: blank -> NaN; uncertain (-1) -> NaN | 1 | 0 per `uncertain`."""
        def build():
            col = f"{which}_{finding}"
            if col not in self.df.columns:
                return np.full(len(self.df), np.nan)
            y = self.df[col].to_numpy(dtype=np.float64, na_value=np.nan).copy()
            y[y == -1] = {"exclude": np.nan, "positive": 1.0, "negative": 0.0}[self.uncertain]
            return y
        return self.memo(("labels", which, finding), build)

    def changed(self, finding: str) -> np.ndarray:
        """Pairs whose label of `finding` is known on both studies and differs."""
        def build():
            y_cur, y_pri = self.labels("current", finding), self.labels("prior", finding)
            return (~np.isnan(y_cur)) & (~np.isnan(y_pri)) & (y_cur != y_pri)
        return self.memo(("changed", finding), build)

    def attribute(self, what: str) -> np.ndarray | None:
        """Numeric codes of an identity attribute (race | age | sex) as float, blank -> NaN; None if the manifest has
        no such column. Text values are an error, not silently dropped."""
        column = self.columns[what]

        def build():
            if column not in self.df:
                return None
            v = pd.to_numeric(self.df[column], errors="coerce").to_numpy(dtype=np.float64)
            bad = self.df[column].notna().to_numpy() & np.isnan(v)
            if bad.any():
                raise ValueError(f"manifest column {column!r} must hold numeric codes (blank = unknown); got e.g. "
                                 f"{self.df[column][bad].iloc[0]!r} — code it first (bjexp.eval.xrv.code_attributes)")
            return v
        return self.memo(("attribute", column), build)

    def counts(self, side: str) -> dict[str, int]:
        return {f"{side}/n_pairs": int(len(self.df)), f"{side}/n_patients": int(self.df["patient_id"].nunique()),
                **{f"{side}/n_changed/{f}": int(self.changed(f).sum()) for f in self.findings}}


def build_metrics(specs: Mapping[str, Any] | list | None) -> list[Metric]:
    """`eval.metrics` ({name: {_target_: ..., kwargs}}, a null entry switches one off) -> Metric objects, checked:
    each key is its metric's name, names are unique and every `needs` is present before its consumer."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    from bjexp.instantiate import instantiate

    if isinstance(specs, (DictConfig, ListConfig)):
        specs = OmegaConf.to_container(specs, resolve=True)
    items = list(specs.items()) if isinstance(specs, Mapping) else [(None, s) for s in (specs or [])]
    out: list[Metric] = []
    for key, spec in items:
        if spec is None:
            continue
        where = f"eval.metrics.{key}" if key is not None else "eval.metrics"
        if isinstance(spec, Metric):
            m = spec
        else:
            if not isinstance(spec, Mapping) or "_target_" not in spec:
                raise ValueError(f"{where}: expected {{_target_: <Metric class>, ...options}}, got {spec!r}")
            try:
                m = instantiate(dict(spec))
            except Exception as e:  # Hydra wraps import and argument errors; name the entry
                raise ValueError(f"{where}: cannot build {spec['_target_']}: {e}") from None
        if not isinstance(m, Metric):
            raise TypeError(f"{where}: {type(m).__name__} is not a bjexp.eval.registry.Metric")
        if key is not None and key != m.name:
            raise ValueError(f"{where}: this metric is named {m.name!r}; list it as eval.metrics.{m.name}")
        if m.direction not in DIRECTIONS or not set(m.consumes) <= set(INPUTS):
            raise ValueError(f"{where}: direction must be one of {DIRECTIONS}, consumes a subset of {INPUTS}")
        out.append(m)
    names = [m.name for m in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"eval.metrics: metric(s) listed twice: {dup}")
    for i, m in enumerate(out):
        missing = [n for n in m.needs if n not in names[:i]]
        if missing:
            raise ValueError(f"eval.metrics: {m.name} needs {missing} listed before it")
        late = [n for n in m.needs if not next(o for o in out if o.name == n).bootstrap and m.bootstrap]
        if late:
            raise ValueError(f"eval.metrics: bootstrapped {m.name} cannot need set-level {late}")
    return out


def metric_info(metrics: list[Metric]) -> dict[str, dict]:
    """results.json's `metric_info`: {name: metadata}, in evaluation (= report column) order."""
    return {m.name: m.info() for m in metrics}


def evaluate(metrics: list[Metric], ctx: EvalContext, sides: tuple[str, ...] | list[str] = SIDES) -> dict:
    """Every metric on every side (of `sides`) it applies to: {"metrics": {key: {value, lo, hi, n_valid}}, "counts",
    "notes", "metric_info", "details", "bootstrap", "draws"}. Bootstrapped metrics of a side share one patient
    bootstrap seeded by ctx.seed: every side, and every run scored on the same pairs with the same seed, draws the
    same resamples, so `draws` ({key: value per resample}) of two runs can be compared resample by resample."""
    out: dict = {"metrics": {}, "counts": {}, "notes": [], "metric_info": metric_info(metrics), "details": {},
                 "bootstrap": bootstrap_meta(ctx), "draws": {}}
    groups = ctx.df["patient_id"].to_numpy()
    for m in metrics:  # only those that will run: a segmenter is not built for a predictions-only evaluation
        if any(side in m.sides and _has_inputs(m, ctx, side) for side in sides):
            m.prepare(ctx)
    for side in sides:
        todo = [m for m in metrics if side in m.sides and _has_inputs(m, ctx, side)]
        if not todo:
            continue
        boot = [m for m in todo if m.bootstrap]
        if boot:
            def statistic(rows: np.ndarray, boot=boot, side=side) -> dict[str, float]:
                done: dict[str, float] = {}
                for m in boot:
                    for sub, v in m.compute(ctx, side, rows, done).items():
                        done[m.key(sub)] = float(v)
                return {f"{side}/{k}": v for k, v in done.items()}

            point, draws = stats.bootstrap_draws(statistic, groups, n_resamples=ctx.n_bootstrap, seed=ctx.seed)
            out["metrics"].update(stats.summarise(point, draws, ctx.n_bootstrap))
            out["draws"].update(draws)
        point = {k.split("/", 1)[1]: v["value"] for k, v in out["metrics"].items() if k.startswith(side + "/")}
        for m in todo:
            if not m.bootstrap:
                for sub, v in m.compute(ctx, side, None, point).items():
                    out["metrics"][f"{side}/{m.key(sub)}"] = {"value": float(v), "lo": math.nan, "hi": math.nan,
                                                               "n_valid": 0}
        out["counts"].update(ctx.counts(side))
    for m in metrics:
        for side in m.sides:
            if side in sides:
                out["notes"] += m.notes(side, out["metrics"])
        d = m.details(ctx)
        if d:
            out["details"][m.name] = d
    return out


def bootstrap_meta(ctx: EvalContext) -> dict:
    """What makes two runs' draws comparable resample by resample: the seed, the count and the scored patients."""
    from bjexp.io import bytes_hash

    ids = "\x00".join(map(str, ctx.df["patient_id"])) + "\x01" + "\x00".join(map(str, ctx.df.get("pair_id", [])))
    return {"seed": ctx.seed, "n_resamples": ctx.n_bootstrap, "unit": "patient", "rows_hash": bytes_hash(ids.encode())}


def _has_inputs(m: Metric, ctx: EvalContext, side: str) -> bool:
    """A metric runs on a side when that side has what it consumes (e.g. no predictor: no prediction metrics)."""
    if "predictions" in m.consumes and not ctx.has_predictions(side):
        return False
    if "images" in m.consumes and side not in ctx.images:
        return False
    if "pipeline" in m.consumes and "pipeline" not in ctx.providers:
        return False
    return True


CONF = Path(__file__).resolve().parents[2] / "conf" / "eval" / "metrics"


def config_metrics(name: str = "paper") -> list[Metric]:
    """The metric list of `conf/eval/metrics/<name>.yaml` (what `eval.metrics` starts from)."""
    from omegaconf import OmegaConf

    return build_metrics(OmegaConf.load(CONF / f"{name}.yaml"))


def score_predictions(metrics: list[Metric], pred: Any, df: pd.DataFrame, *, prior: Any = None, side: str = "test",
                      **ctx_kw: Any) -> dict:
    """`evaluate` on one side from predictions already made (tests, benchmarks): `prior` = the priors'
    predictions (for identity similarity); `ctx_kw` as EvalContext (findings, uncertain, n_bootstrap, seed)."""
    preds = {**({"floor": prior} if prior is not None else {}), side: pred}
    return evaluate(metrics, EvalContext(df, predictions=preds, **ctx_kw), sides=[side])
