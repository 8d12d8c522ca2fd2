"""OpenCV ECC (enhanced correlation coefficient, Evangelidis & Psarakis 2008) on an image pyramid.

ECC maximises the zero-mean normalised correlation, so it is invariant to brightness/contrast differences between
studies. Started from phase correlation (a global translation estimate at the coarsest level) because ECC is a
local optimiser: shifts beyond a few coarse pixels otherwise end in a wrong basin.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bjexp.registration.base import IDENTITY, RegistrationFailed, scale_matrix

MOTIONS = {"translation": cv2.MOTION_TRANSLATION, "euclidean": cv2.MOTION_EUCLIDEAN, "affine": cv2.MOTION_AFFINE}


def phase_shift(fixed: np.ndarray, moving: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, response) with moving(x + d) ~ fixed(x), by windowed phase correlation.

    Copies go in: cv2.phaseCorrelate with a window overwrote its inputs in place (opencv-python-headless 5.0.0.93).
    """
    a = np.array(fixed, dtype=np.float32, copy=True)
    b = np.array(moving, dtype=np.float32, copy=True)
    window = cv2.createHanningWindow(a.shape[::-1], cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(a, b, window)
    return float(dx), float(dy), float(response)


def pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """Finest first; each level halves the size (Gaussian pyramid, so coarse levels are anti-aliased)."""
    out = [img]
    for _ in range(levels - 1):
        out.append(cv2.pyrDown(out[-1]))
    return out


@dataclass
class EccRegistrar:
    name: str = "affine_ecc"
    motion: str = "affine"
    # Pyramid depth: halve until the side is at most `coarsest_size` px, unless `levels` is given.
    coarsest_size: int = 64
    levels: int | None = None
    # iterations per level, coarsest first (a shorter list repeats its last entry)
    iterations: tuple[int, ...] = (50, 30, 15, 5)
    eps: float = 1e-3
    gauss_filt_size: int = 3
    # Smoothing at the finest refined level: none (1) is the most precise once the coarse levels have converged.
    finest_gauss_filt_size: int = 1
    init: str = "phase_correlation"  # or "identity"
    # Stop refining at this pyramid level (0 = full resolution); the estimate is scaled up to full resolution.
    # Level 1 costs ~1/3 of level 0 for ~0.1 px instead of ~0.015 px error at 256 px (benchmark).
    finest_level: int = 1

    def __post_init__(self) -> None:
        if self.motion not in MOTIONS:
            raise ValueError(f"registration.motion={self.motion!r}: expected one of {sorted(MOTIONS)}")
        if self.init not in ("phase_correlation", "identity"):
            raise ValueError(f"registration.init={self.init!r}: expected 'phase_correlation' or 'identity'")

    def estimate(self, fixed: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, float]:
        levels = self.levels
        if levels is None:
            levels = 1
            while max(fixed.shape) / 2 ** (levels - 1) > self.coarsest_size:
                levels += 1
        fp, mp = pyramid(fixed, levels), pyramid(moving, levels)
        coarse = len(fp) - 1
        m = IDENTITY.copy()
        if self.init == "phase_correlation":
            dx, dy, _ = phase_shift(fp[coarse], mp[coarse])
            m[:, 2] = (dx, dy)
        cc = float("nan")
        finest = min(self.finest_level, coarse)  # small images have fewer levels
        for lvl in range(coarse, finest - 1, -1):
            it = self.iterations[min(coarse - lvl, len(self.iterations) - 1)]
            crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(it), float(self.eps))
            warp = m.astype(np.float32)
            if self.motion == "translation":
                warp = np.array([[1, 0, m[0, 2]], [0, 1, m[1, 2]]], np.float32)
            try:
                g = self.finest_gauss_filt_size if lvl == finest else self.gauss_filt_size
                cc, warp = cv2.findTransformECC(fp[lvl], mp[lvl], warp, MOTIONS[self.motion], crit, None, g)
            except cv2.error as e:  # e.g. "The algorithm stopped before its convergence" (uncorrelated images)
                msg = str(e).strip().splitlines()[-1].split(" error: ")[-1].split(" in function")[0]
                raise RegistrationFailed(f"ECC at pyramid level {lvl}: {msg}") from None
            m = warp.astype(np.float64)
            if lvl > 0:
                m = scale_matrix(m, fp[lvl - 1].shape[1] / fp[lvl].shape[1])
        for lvl in range(finest - 2, -1, -1):  # levels skipped: only rescale
            m = scale_matrix(m, fp[lvl].shape[1] / fp[lvl + 1].shape[1])
        return m, float(cc)
