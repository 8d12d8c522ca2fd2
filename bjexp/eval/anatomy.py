"""Table 4: anatomy concordance. Dice between the segmenter's lungs and heart on the prior and on the scored image
of each pair: does the generated follow-up keep the patient's anatomy? The ceiling row (prior vs the real
current image) is what the real follow-up keeps; the floor (prior vs itself) would be 1 and is not scored.

Per structure (`anatomy_dice/<structure>`) and their mean (`anatomy_dice`: per pair the mean over structures,
then the mean over pairs); a structure absent from both masks of a pair is left out of that pair. The images are
segmented once per side (`ctx.memo`), the segmenter built once per evaluation (`eval.segmenter`).
"""
from __future__ import annotations

import numpy as np

from bjexp.eval.registry import Metric
from bjexp.eval.segmenter import build, dice


def segmenter(ctx):
    return ctx.memo("segmenter", lambda: build((ctx.cfg or {}).get("segmenter"), ctx.run_cfg))


def segmentation(ctx, side: str) -> np.ndarray:
    """bool (N, structures, H, W) of a side's images, computed once per evaluation."""
    return ctx.memo(("segmentation", side), lambda: segmenter(ctx).segment(ctx.side_images(side)))


class AnatomyDice(Metric):
    name = "anatomy_dice"
    description = "Dice of the segmented lungs and heart, prior vs scored image (mean over structures)"
    consumes = ("images",)
    headline = True
    sides = ("test", "ceiling")

    def prepare(self, ctx):
        segmenter(ctx)

    def compute(self, ctx, side, rows, done):
        per_pair = ctx.memo(("anatomy_dice", side), lambda: dice(segmentation(ctx, "floor"), segmentation(ctx, side)))
        out = {s: _nanmean(per_pair[rows, j]) for j, s in enumerate(segmenter(ctx).structures)}
        with np.errstate(invalid="ignore"):
            out[""] = _nanmean(np.nanmean(per_pair[rows], axis=1))
        return out

    def details(self, ctx):
        if not ctx.has_memo("segmenter"):
            return None
        seg = segmenter(ctx)
        return {"segmenter": seg.name, "version": seg.version, "structures": list(seg.structures),
                "held_out": getattr(seg, "report", None)}


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")
