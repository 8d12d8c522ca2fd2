"""Register one pair and judge the result the same way for every method (QC, plausibility, flag)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from bjexp.registration.base import (IDENTITY, Flag, Registrar, RegistrationFailed, RegistrationResult,
                                     corner_error, decompose, in_field_mask, warp)
from bjexp.registration.qc import ncc, ssim


@dataclass
class QcPolicy:
    """When an estimate is accepted. Bounds are generous: they catch divergence, not real pose changes."""
    already_aligned_px: float = 0.5   # mean corner displacement below which the moving image is kept as is
    max_angle_deg: float = 20.0
    max_shift_frac: float = 0.25      # of the image side
    max_scale_change: float = 0.3     # |isotropic scale - 1|
    max_anisotropy: float = 1.3       # ratio of the linear part's singular values
    min_gain: float = -0.01           # failed if NCC after < NCC before + min_gain (registration made it worse)
    min_correlation: float = 0.15     # failed if NCC after is below: the images do not correspond (e.g. noise)
    border: str = "replicate"         # how out-of-field pixels are filled in the warped image
    # QC similarities are computed on copies downsized to at most this side (px): QC then costs the same at any
    # stored resolution and `min_score` means the same thing at 256 and 1024 px. null = native resolution.
    qc_size: int | None = 256


def implausible(m: np.ndarray, shape: tuple[int, int], p: QcPolicy) -> str:
    if not np.all(np.isfinite(m)):
        return "non-finite transform"
    d = decompose(m)
    h, w = shape
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0, 1.0])
    shift = np.asarray(m) @ centre - centre[:2]
    if d["det"] <= 0:
        return "transform flips the image"
    if abs(d["angle_deg"]) > p.max_angle_deg:
        return f"rotation {d['angle_deg']:.1f} deg > {p.max_angle_deg}"
    if abs(d["scale"] - 1) > p.max_scale_change:
        return f"scale {d['scale']:.3f} outside 1 +- {p.max_scale_change}"
    if d["anisotropy"] > p.max_anisotropy:
        return f"anisotropy {d['anisotropy']:.3f} > {p.max_anisotropy}"
    if np.abs(shift).max() > p.max_shift_frac * max(h, w):
        return f"shift of the centre {np.abs(shift).max():.1f} px > {p.max_shift_frac} x {max(h, w)} px"
    return ""


def register_pair(registrar: Registrar, fixed: np.ndarray, moving: np.ndarray, policy: QcPolicy | None = None,
                  fallback: Registrar | None = None) -> RegistrationResult:
    """Estimate, check, warp and score. A failure returns the moving image unchanged with flag FAILED and the
    reason in `error` (it never raises for a registration problem; bad inputs raise ValueError).

    `fallback` (e.g. the same method with a rigid motion model) is tried when the first estimate fails QC: on real
    pairs, collimation and inspiration differences can pull a 6-parameter affine into an implausible shear that a
    3-parameter model does not have. A result it rescues says so in `extra["fallback"]`.
    """
    res = _register(registrar, fixed, moving, policy or QcPolicy())
    if res.flag is Flag.FAILED and fallback is not None:
        second = _register(fallback, fixed, moving, policy or QcPolicy())
        if second.flag is not Flag.FAILED:
            second.extra.update(fallback=fallback.name, first_error=res.error)
            return second
        res.error += f"; fallback {fallback.name}: {second.error}"
    return res


def _register(registrar: Registrar, fixed: np.ndarray, moving: np.ndarray, p: QcPolicy) -> RegistrationResult:
    for name, a in (("fixed", fixed), ("moving", moving)):
        if a.ndim != 2 or a.dtype != np.uint8:
            raise ValueError(f"{name} image must be uint8 grey (H, W); got {a.dtype} {a.shape}")
    if fixed.shape != moving.shape:
        raise ValueError(f"fixed {fixed.shape} and moving {moving.shape} must have the same shape (resize first)")
    shrink = p.qc_size is not None and max(fixed.shape) > p.qc_size

    def small(a: np.ndarray) -> np.ndarray:  # the QC copy
        if not shrink:
            return a
        f = p.qc_size / max(a.shape)
        return cv2.resize(a, (round(a.shape[1] * f), round(a.shape[0] * f)), interpolation=cv2.INTER_AREA)

    fixed_q = small(fixed)
    score_before = ncc(fixed_q, small(moving))
    ssim_before = ssim(fixed_q, small(moving))

    def unchanged(flag: Flag, metric: float = math.nan, error: str = "", extra: dict | None = None):
        return RegistrationResult(moving.copy(), IDENTITY.copy(), metric, score_before, score_before,
                                  ssim_before, ssim_before, 0.0, flag, error, extra or {})

    try:
        m, metric = registrar.estimate(fixed, moving)
    except RegistrationFailed as e:
        return unchanged(Flag.FAILED, error=str(e))
    m = np.asarray(m, dtype=np.float64).reshape(2, 3)
    if why := implausible(m, fixed.shape, p):
        return unchanged(Flag.FAILED, metric, f"implausible transform: {why}", {"estimate": m.tolist()})
    if corner_error(m, IDENTITY, fixed.shape) < p.already_aligned_px:
        return unchanged(Flag.ALREADY_ALIGNED, metric, extra={"estimate": m.tolist()})
    warped = warp(moving, m, fixed.shape, p.border)
    inside = in_field_mask(m, fixed.shape, moving.shape)
    warped_q, inside_q = small(warped), small(inside.astype(np.uint8) * 255) == 255
    score = ncc(fixed_q, warped_q, inside_q)
    if score < score_before + p.min_gain:
        return unchanged(Flag.FAILED, metric, f"similarity decreased: NCC {score_before:.3f} -> {score:.3f}",
                         {"estimate": m.tolist()})
    if score < p.min_correlation:
        return unchanged(Flag.FAILED, metric, f"no correspondence: NCC after {score:.3f} < {p.min_correlation}",
                         {"estimate": m.tolist()})
    return RegistrationResult(warped, m, float(metric), score, score_before, ssim_before, ssim(fixed_q, warped_q),
                              float(1.0 - inside.mean()), Flag.OK)
