"""Edit locality (issue 14): does the generator change only the region the instruction names?

Per pair, the edit region R = the union over the findings whose label changes (prior vs current) of where that
finding is on the prior and where it is on the current, both in the prior's frame. L1 (grey levels / 255, float)
between the scored image and the prior, inside R and outside it:
- `edit_locality` = `edit_locality/outside`: the leakage (0 for a generator that returns its input), lower is better;
- `edit_locality/inside`: the change where the edit should be;
- `edit_locality/ratio`: outside / inside (of the resample's means).
Pairs with no changed finding (empty R) are left out. Sides `test` and `ceiling` (the real follow-up also differs
in pose and exposure noise). The regions come from `eval.edit_regions` = {_target_: factory (run_cfg, df, size) ->
bool (N, H, W)}; unset (the real world so far) -> the metric is not computed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bjexp.eval.registry import Metric


def regions(ctx) -> np.ndarray | None:
    def build():
        spec = dict((ctx.cfg or {}).get("edit_regions") or {})
        if "_target_" not in spec:
            return None
        from bjexp.instantiate import instantiate

        return instantiate(spec, ctx.run_cfg, ctx.df, ctx.side_images("floor").shape[-1])
    return ctx.memo("edit_regions", build)


def l1_in_out(scored: np.ndarray, prior: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(N, 2) mean |scored - prior| / 255 inside and outside each pair's region (NaN where that part is empty)."""
    diff = np.abs(scored.astype(np.float64) - prior.astype(np.float64)) / 255.0
    diff, region = diff.reshape(len(diff), -1), region.reshape(len(region), -1)
    n_in, n_out = region.sum(1), (~region).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = np.where(n_in > 0, (diff * region).sum(1) / n_in, np.nan)
        outside = np.where(n_out > 0, (diff * ~region).sum(1) / n_out, np.nan)
    return np.stack([inside, outside], 1)


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
        per_pair = ctx.memo(("edit_locality", side), lambda: l1_in_out(
            ctx.side_images(side), ctx.side_images("floor"), region))[rows]
        per_pair = per_pair[~np.isnan(per_pair[:, 0])]  # pairs with a region
        if not len(per_pair):
            return {"": np.nan, "inside": np.nan, "outside": np.nan, "ratio": np.nan}
        inside, outside = per_pair.mean(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = outside / inside if inside > 0 else np.nan
        return {"": outside, "inside": inside, "outside": outside, "ratio": ratio}


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


def synthetic(run_cfg: Any, df, size: int) -> np.ndarray:
    """`eval.edit_regions` factory of the miniature world. Its masks are in the prior's frame, which the scored
    pair keeps unless registration warps the prior (direction=prior_to_current): then there are no regions."""
    from bjexp.data.synthetic import world_dir

    if run_cfg is None:
        raise ValueError("the synthetic edit regions need the run's config (its world folder)")
    reg = run_cfg.get("registration") or {}
    if reg.get("name", "none") != "none" and reg.get("direction", "current_to_prior") != "current_to_prior":
        return None
    return world_regions(world_dir(run_cfg), df, size)
