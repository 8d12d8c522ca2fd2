"""Edit locality (issue 14): does the generator change only the region the instruction names?

Per pair, the edit region R = the union over the findings whose label changes (prior vs current) of where that
finding is on the prior and where it is on the current, both in the prior's frame. L1 (grey levels / 255, float)
between the scored image and the prior, inside R and outside it:
- `edit_locality` = `edit_locality/outside`: the leakage (0 for a generator that returns its input), lower is better;
- `edit_locality/inside`: the change where the edit should be;
- `edit_locality/ratio`: outside / inside (of the resample's means);
- `edit_locality/ssim_inside`, `edit_locality/ssim_outside`: the local SSIM map (torchmetrics, 11 x 11 Gaussian)
  averaged inside and outside R (1 = unchanged); NaN for images under 11 px.
Pairs with no changed finding (empty R) are left out. Sides `test` and `ceiling` (the real follow-up also differs
in pose and exposure noise). The regions come from `eval.edit_regions` = {_target_: factory (ctx, **options) ->
bool (N, H, W) | None}; unset -> the metric is not computed. Two factories:
- `synthetic`: the miniature world's exact finding masks from the phantom renderer (stored beside the images);
- `segmented` (the real world): an approximation from the anatomy segmenter (`eval.segmenter`, ChestX-Det) on the
  prior — the heart for cardiac findings, the lung(s) for the others: the side the progression text names for that
  finding (left / right; else both), and its zone (upper / lower; pleural effusion: the lower third by default).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bjexp.eval import stats
from bjexp.eval.registry import Metric


def regions(ctx) -> np.ndarray | None:
    def build():
        spec = dict((ctx.cfg or {}).get("edit_regions") or {})
        if "_target_" not in spec:
            return None
        from bjexp.instantiate import instantiate

        return instantiate(spec, ctx)
    return ctx.memo("edit_regions", build)


def region_means(per_pixel: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(N, 2) mean of a per-pixel map inside and outside each pair's region (NaN where that part is empty)."""
    per_pixel, region = per_pixel.reshape(len(per_pixel), -1), region.reshape(len(region), -1)
    n_in, n_out = region.sum(1), (~region).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = np.where(n_in > 0, (per_pixel * region).sum(1) / n_in, np.nan)
        outside = np.where(n_out > 0, (per_pixel * ~region).sum(1) / n_out, np.nan)
    return np.stack([inside, outside], 1)


def l1_in_out(scored: np.ndarray, prior: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(N, 2) mean |scored - prior| / 255 inside and outside each pair's region (NaN where that part is empty)."""
    return region_means(np.abs(scored.astype(np.float64) - prior.astype(np.float64)) / 255.0, region)


def ssim_in_out(scored: np.ndarray, prior: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(N, 2) mean local SSIM (scored vs prior) inside and outside each pair's region (NaN where that part is empty)."""
    if min(scored.shape[1:]) < 11:  # smaller than the SSIM window
        return np.full((len(scored), 2), np.nan)
    return region_means(stats.ssim(scored, prior, full=True), region)


class EditLocality(Metric):
    name = "edit_locality"
    description = "L1 change (vs the prior) outside the changed findings' region: leakage of the edit"
    consumes = ("images", "masks")
    direction = "lower"
    headline = True
    sides = ("test", "ceiling")

    def compute(self, ctx, side, rows, done):
        region = regions(ctx)
        if region is None:
            return {}
        per_pair = ctx.memo(("edit_locality", side), lambda: np.concatenate([
            f(ctx.side_images(side), ctx.side_images("floor"), region) for f in (l1_in_out, ssim_in_out)], 1))[rows]
        per_pair = per_pair[~np.isnan(per_pair[:, 0])]  # pairs with a region
        if not len(per_pair):
            return {k: np.nan for k in ("", "inside", "outside", "ratio", "ssim_inside", "ssim_outside")}
        inside, outside, ssim_inside, ssim_outside = per_pair.mean(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = outside / inside if inside > 0 else np.nan
        return {"": outside, "inside": inside, "outside": outside, "ratio": ratio, "ssim_inside": ssim_inside,
                "ssim_outside": ssim_outside}


def world_regions(world: str | Path, df, size: int) -> np.ndarray:
    """The miniature world's exact edit regions of the manifest rows `df`, at `size` px (nearest)."""
    import cv2

    from bjexp.data.findings import SYNTHETIC_FINDINGS
    from bjexp.data.phantom import unpack
    from bjexp.data.synthetic import mask_path, pair_mask_path
    from bjexp.imaging import read_grey

    world = Path(world)
    out = np.zeros((len(df), size, size), bool)
    for i, row in enumerate(df.to_dict("records")):
        changed = [f for f in SYNTHETIC_FINDINGS if row[f"prior_{f}"] != row[f"current_{f}"]]
        if not changed:
            continue
        prior_bits = read_grey(world / mask_path(row['prior_study_id']))
        current_bits = read_grey(world / pair_mask_path(row['pair_id']))  # the current's findings in the prior's pose
        r = np.zeros(prior_bits.shape, bool)
        for f in changed:
            r |= unpack(prior_bits, f) | unpack(current_bits, f)
        out[i] = cv2.resize(r.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return out


def synthetic(ctx) -> np.ndarray | None:
    """`eval.edit_regions` factory of the miniature world. Its masks are in the prior's frame, which the scored
    pair keeps unless registration warps the prior (direction=prior_to_current): then there are no regions."""
    from bjexp.data.synthetic import world_dir

    run_cfg, df, size = ctx.run_cfg, ctx.df, ctx.side_images("floor").shape[-1]
    if run_cfg is None:
        raise ValueError("the synthetic edit regions need the run's config (its world folder)")
    reg = run_cfg.get("registration") or {}
    if reg.get("name", "none") != "none" and reg.get("direction", "current_to_prior") != "current_to_prior":
        return None
    return world_regions(world_dir(run_cfg), df, size)


CARDIAC = {"Cardiomegaly", "Enlarged Cardiomediastinum"}
LOWER_BY_DEFAULT = {"Effusion"}  # pleural fluid layers at the bases on an erect film


def _clauses(text: str, finding: str) -> list[str]:
    """The clauses of a progression text that name `finding` (its describer phrase or its name)."""
    import re

    from bjexp.data.findings import PHRASE

    words = {PHRASE.get(finding, finding).lower(), finding.lower()}
    return [c for c in re.split(r"[;,.]", str(text).lower()) if any(w in c for w in words)]


def finding_region(masks: np.ndarray, finding: str, text: str) -> np.ndarray:
    """One finding's approximate region on one prior from its anatomy masks (STRUCTURES order: left lung, right
    lung, heart) and the progression text's side and zone words for it."""
    from bjexp.eval.segmenter import STRUCTURES

    left, right, heart = (masks[STRUCTURES.index(s)] for s in ("Left lung", "Right lung", "Heart"))
    if finding in CARDIAC:
        return heart.copy()
    said = " ".join(_clauses(text, finding))
    sides = [m for w, m in (("left", left), ("right", right)) if w in said and "bilateral" not in said]
    region = np.logical_or.reduce(sides) if sides else left | right
    zone = ("upper" if any(w in said for w in ("upper", "apical", "apex")) else
            "lower" if any(w in said for w in ("lower", "basal", "base", "basilar")) or finding in LOWER_BY_DEFAULT
            else None)
    if zone is None or not region.any():
        return region
    rows = np.flatnonzero(region.any(1))
    top, bottom = rows[0], rows[-1] + 1
    cut = top + (bottom - top) // 3 if zone == "upper" else bottom - (bottom - top) // 3
    keep = np.zeros_like(region)
    keep[(slice(top, cut) if zone == "upper" else slice(cut, bottom))] = True
    return region & keep


def segmented(ctx) -> np.ndarray:
    """`eval.edit_regions` factory of the real world: per pair, the union over its changed findings (labels of the
    prior vs the current) of `finding_region` on the prior's segmentation (eval.segmenter)."""
    from bjexp.eval.anatomy import segmentation

    masks = segmentation(ctx, "floor")
    texts = ctx.df["text"].astype(str).to_numpy() if "text" in ctx.df else np.full(len(ctx.df), "")
    out = np.zeros((len(ctx.df), *masks.shape[2:]), bool)
    for f in ctx.findings:
        for i in np.flatnonzero(ctx.changed(f)):
            out[i] |= finding_region(masks[i], f, texts[i])
    return out
