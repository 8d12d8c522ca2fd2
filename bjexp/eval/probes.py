"""Consistency probes (issue 14): what the run's own generator does under instructions with a known right answer.

Each probe is a registry metric that consumes the `pipeline` input (the run's generator: a JourneyPipeline, or the
identity copy) and runs on the `test` side only. `eval.probes` names the ones that run (`python -m bjexp.evaluate
run=<dir> eval.probes=[null_instruction,reversal]`); `eval.probe_settings` sets how many test priors (one per
patient, manifest order), the sampler steps and guidance (default: the run's sampler) and the guidance grid.
Noise is deterministic per (pair, probe, instruction). Per-pair values are NaN outside the probed rows, so the
patient bootstrap of the other metrics gives the probes their CIs too.

Instructions are the describer's own wording (bjexp.data.describers), with severity "moderate" and side "left"
unless a probe varies them:
- `null_instruction`: the describer's "nothing changed" text for the prior's findings. Output vs prior, L1 (grey /
  255) and SSIM, beside the autoencoder round trip's own (`vae_l1`, `vae_ssim`); the value is the excess L1 over the
  round trip (0: changes nothing the latent does not).
- `reversal`: "new X" (X absent on the prior), then "resolved X" on that output. L1 / SSIM back to the prior and the
  classifier's P(X) on the prior, after "new" and after "resolved".
- `severity_monotonic`: "new small / moderate / large X"; the fraction of priors whose classifier P(X) rises
  strictly (a generator that ignores the text scores 0). The classifier's probability saturates near 1, so this
  under-counts a model whose images do grow; the world's measured extent is not used yet.
- `contradiction`: an instruction that contradicts the real current (X's state flipped), scored by the classifier
  alone: the fraction of outputs whose P(X) is on the instruction's side of the threshold, and the AUROC.
- `guidance_curve`: "new X" over a grid of text x image guidance scales: instruction-following (fraction with P(X)
  over threshold) against retention (SSIM to the prior), set-level; the report plots it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from bjexp.eval import stats
from bjexp.eval.registry import Metric

SEVERITIES = (1, 2, 3)  # small, moderate, large (bjexp.data.findings.SEVERITY_WORDS)


# -- instructions ---------------------------------------------------------------------------------------------
def _state(present: bool, severity: int | None = 2, side: str | None = "L"):
    from bjexp.data.describers import FindingState

    return FindingState(severity=severity if present else 0, side=side if present else None)


def new_text(finding: str, severity: int = 2) -> str:
    from bjexp.data.describers import describe_finding

    return describe_finding(finding, _state(False), _state(True, severity))


def resolved_text(finding: str, severity: int = 2) -> str:
    from bjexp.data.describers import describe_finding

    return describe_finding(finding, _state(True, severity), _state(False))


def unchanged_text(prior: dict[str, bool]) -> str:
    """The describer's text for a study pair whose findings did not change."""
    from bjexp.data.describers import describe

    states = {f: _state(p, severity=None, side=None) for f, p in prior.items()}  # presence only: no new severity
    return describe(states, states)


def toward_text(finding: str, prior: bool, target: bool) -> str:
    """The instruction that takes `finding` from the prior's state to `target`."""
    from bjexp.data.describers import describe_finding

    return describe_finding(finding, _state(prior), _state(target)) or unchanged_text({finding: prior})


# -- distances --------------------------------------------------------------------------------------------------
def l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image mean |a - b| of uint8 grey images, in [0, 1] (float: no uint8 wrap)."""
    return np.abs(a.astype(np.float64) - b.astype(np.float64)).reshape(len(a), -1).mean(1) / 255.0


# -- the shared runner ------------------------------------------------------------------------------------------
class Probing:
    """The probed rows and a memoised `generate(tag, texts, inputs)` for one evaluation."""

    def __init__(self, ctx):
        s = dict((ctx.cfg or {}).get("probe_settings") or {})
        run_s = (ctx.run_cfg or {}).get("sampler") or {}
        self.ctx = ctx
        self.generator = ctx.get("pipeline")
        self.steps = int(s.get("steps") or run_s.get("steps", 12))
        self.image_guidance = float(s.get("image_guidance") or run_s.get("image_guidance", 1.5))
        self.text_guidance = float(s.get("text_guidance") or run_s.get("text_guidance", 7.5))
        self.grid = (list(s.get("grid_text_guidance") or [1.0, 3.0, 7.5]),
                     list(s.get("grid_image_guidance") or [1.0, 1.5, 2.5]))
        self.batch = int(s.get("batch_size") or 64)
        self.seed = int((ctx.run_cfg or {}).get("seed", ctx.seed))
        n = int(s.get("n_priors") or 32)
        _, first = np.unique(ctx.df["patient_id"].to_numpy(), return_index=True)
        self.rows = np.sort(first)[:n]  # one prior per patient, manifest order
        self.prior = ctx.side_images("floor")[self.rows]
        self.pair_ids = ctx.df["pair_id"].to_numpy()[self.rows].astype(str)

    def findings(self) -> list[str]:
        pred = self.predict_prior()
        return [f for f in self.ctx.findings if f in pred.findings]

    def absent_targets(self) -> tuple[list[str], np.ndarray]:
        """Per probed prior, a finding its label says is absent (rotating through the findings), and which priors
        have one (the others get NaN through `spread`)."""
        fs = self.findings()
        xs = []
        for k, r in enumerate(self.rows):
            absent = [f for f in fs if self.ctx.labels("prior", f)[r] == 0]
            xs.append(absent[k % len(absent)] if absent else None)
        return [x or fs[0] for x in xs], np.array([x is not None for x in xs])

    def predict_prior(self):
        return self.ctx.memo(("probe", "prior_pred"), lambda: self.ctx.get("predictor").predict(self.prior))

    def predict(self, images: np.ndarray):
        return self.ctx.get("predictor").predict(images)

    @torch.no_grad()
    def generate(self, tag: str, texts: list[str], images: np.ndarray | None = None,
                 text_guidance: float | None = None, image_guidance: float | None = None) -> np.ndarray:
        """The generator's outputs for the probed priors (or `images`) under `texts`, memoised per call."""
        from bjexp.models.guidance import pair_generator

        tg = self.text_guidance if text_guidance is None else float(text_guidance)
        ig = self.image_guidance if image_guidance is None else float(image_guidance)
        src = self.prior if images is None else images

        def build():
            device = getattr(self.generator, "device", "cpu")
            out = []
            for i in range(0, len(src), self.batch):
                sl = slice(i, i + self.batch)
                gens = [pair_generator(f"{p}/probe/{tag}/{t}", self.seed, device)
                        for p, t in zip(self.pair_ids[sl], texts[sl])]
                out.append(torch.as_tensor(self.generator(images=torch.as_tensor(src[sl]), texts=list(texts[sl]),
                                                          generators=gens, steps=self.steps, image_guidance=ig,
                                                          text_guidance=tg)).cpu().numpy())
            return np.concatenate(out) if out else src[:0]
        return self.ctx.memo(("probe", tag, tuple(texts), tg, ig, images is None), build)

    def round_trip(self) -> np.ndarray:
        rt = getattr(self.generator, "round_trip", None)
        if rt is None:  # no autoencoder (the identity copy): the round trip is the image itself
            return self.prior
        return self.ctx.memo(("probe", "round_trip"), lambda: torch.as_tensor(rt(torch.as_tensor(self.prior))).cpu().numpy())

    def spread(self, per_probe: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
        """Per-probe values -> per ctx.df row (NaN where not probed, or where `keep` is False)."""
        out = np.full(len(self.ctx.df), np.nan)
        out[self.rows] = per_probe if keep is None else np.where(keep, per_probe, np.nan)
        return out


def probing(ctx) -> Probing:
    return ctx.memo(("probe", "runner"), lambda: Probing(ctx))


def _mean(per_row: np.ndarray, rows: np.ndarray) -> float:
    v = per_row[rows]
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else math.nan


class Probe(Metric):
    consumes = ("pipeline", "predictions")
    sides = ("test",)

    def per_row(self, ctx) -> dict[str, np.ndarray]:
        """{sub: per ctx.df row value (NaN where not probed)}, computed once."""
        raise NotImplementedError

    def compute(self, ctx, side, rows, done):
        values = ctx.memo(("probe", self.name, "rows"), lambda: self.per_row(ctx))
        return {sub: _mean(v, rows) for sub, v in values.items()}


class NullInstruction(Probe):
    name = "null_instruction"
    description = "L1 change under a 'nothing changed' text beyond the autoencoder round trip's own (0 = none)"
    direction = "lower"
    consumes = ("pipeline",)

    def per_row(self, ctx):
        p = probing(ctx)
        texts = [unchanged_text({f: ctx.labels("prior", f)[r] == 1 for f in ctx.findings}) for r in p.rows]
        out, rt = p.generate("null", texts), p.round_trip()
        d, d_rt = l1(out, p.prior), l1(rt, p.prior)
        return {"": p.spread(d - d_rt), "l1": p.spread(d), "ssim": p.spread(stats.ssim(out, p.prior)),
                "vae_l1": p.spread(d_rt), "vae_ssim": p.spread(stats.ssim(rt, p.prior))}


class Reversal(Probe):
    name = "reversal"
    description = "L1 back to the prior after 'new X' then 'resolved X' (with P(X) after each step)"
    direction = "lower"

    def per_row(self, ctx):
        p = probing(ctx)
        xs, keep = p.absent_targets()
        first = p.generate("new", [new_text(x) for x in xs])
        back = p.generate("resolved", [resolved_text(x) for x in xs], images=first)
        pp, pn, pr = (_prob(pred, xs) for pred in (p.predict_prior(), p.predict(first), p.predict(back)))
        return {"": p.spread(l1(back, p.prior), keep), "ssim": p.spread(stats.ssim(back, p.prior), keep),
                "p_prior": p.spread(pp, keep), "p_new": p.spread(pn, keep), "p_resolved": p.spread(pr, keep)}


class SeverityMonotonic(Probe):
    name = "severity_monotonic"
    description = "fraction of priors whose P(X) rises strictly over 'new small / moderate / large X'"

    def per_row(self, ctx):
        p = probing(ctx)
        from bjexp.data.findings import SEVERITY_WORDS

        xs, keep = p.absent_targets()
        # "moderate X" is reversal's first step: the same tag shares its generations (memoised)
        probs = np.stack([_prob(p.predict(p.generate("new" if s == 2 else f"severity{s}", [new_text(x, s) for x in xs])),
                                xs) for s in SEVERITIES], 1)
        rising = np.all(np.diff(probs, axis=1) > 0, axis=1).astype(np.float64)
        return {"": p.spread(rising, keep),
                **{f"p_{SEVERITY_WORDS[s]}": p.spread(col, keep) for s, col in zip(SEVERITIES, probs.T)}}


class Contradiction(Probe):
    name = "contradiction"
    description = "fraction of outputs on the side of the threshold an instruction contradicting the real current asks"

    def per_row(self, ctx):
        p = probing(ctx)
        fs = p.findings()
        xs, target, keep, texts = [], [], [], []
        for k, r in enumerate(p.rows):
            known = [f for f in fs if not np.isnan(ctx.labels("current", f)[r]) and not np.isnan(ctx.labels("prior", f)[r])]
            x = known[k % len(known)] if known else fs[0]
            want = ctx.labels("current", x)[r] != 1 if known else False
            xs.append(x), target.append(want), keep.append(bool(known))
            texts.append(toward_text(x, ctx.labels("prior", x)[r] == 1, want))
        pred = p.predict(p.generate("contradiction", texts))
        target, keep = np.array(target, np.float64), np.array(keep)
        follows = (_shown(pred, xs) == (target == 1)).astype(np.float64)
        return {"": p.spread(follows, keep), "prob": p.spread(_prob(pred, xs), keep), "target": p.spread(target, keep)}

    def compute(self, ctx, side, rows, done):
        v = ctx.memo(("probe", self.name, "rows"), lambda: self.per_row(ctx))
        prob, target = v["prob"][rows], v["target"][rows]
        ok = ~np.isnan(prob)
        return {"": _mean(v[""], rows), "auroc": stats.auroc(prob[ok], target[ok])}


class GuidanceCurve(Probe):
    name = "guidance_curve"
    description = "instruction-following vs retention over a text x image guidance grid ('new X'; set-level)"
    bootstrap = False

    def compute(self, ctx, side, rows, done):
        p = probing(ctx)
        xs, keep = p.absent_targets()
        if not keep.any():
            return {}
        texts = [new_text(x) for x in xs]
        out: dict[str, float] = {}
        for tg in p.grid[0]:
            for ig in p.grid[1]:
                img = p.generate("new", texts, text_guidance=tg, image_guidance=ig)
                key = f"t{tg:g}_i{ig:g}"
                out[f"{key}/follow"] = float(_shown(p.predict(img), xs)[keep].mean())
                out[f"{key}/retain"] = float(stats.ssim(img, p.prior)[keep].mean())
        follow = [v for k, v in out.items() if k.endswith("/follow")]
        return {"": float(np.mean(follow)), **out}

    def details(self, ctx):
        if not ctx.has_memo(("probe", "runner")):
            return None
        p = probing(ctx)
        return {"text_guidance": p.grid[0], "image_guidance": p.grid[1], "n_priors": int(len(p.rows)),
                "steps": p.steps, "follow": "fraction with P(X) >= threshold after 'new X'",
                "retain": "mean SSIM to the prior"}


def _prob(pred, xs: list[str]) -> np.ndarray:
    """Per image i, the classifier's P(xs[i])."""
    return np.array([pred.findings[x][i] for i, x in enumerate(xs)], np.float64)


def _shown(pred, xs: list[str]) -> np.ndarray:
    """Per image i, whether the classifier calls xs[i] present (its operating threshold)."""
    return _prob(pred, xs) >= np.array([pred.thresholds.get(x, 0.5) for x in xs])


def check_probes(names: Any, metrics: list[Metric]) -> list[str]:
    """`eval.probes` -> the names, each a pipeline-consuming metric of `eval.metrics` (a clear error otherwise)."""
    names = list(names or [])
    known = [m.name for m in metrics if "pipeline" in m.consumes]
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"eval.probes: unknown probe(s) {bad}; the probes of eval.metrics are {known}")
    return names
