"""Image pairs with a known transform, for tests and the benchmark (accuracy where the truth is known).

`known_pair` simulates a change of patient pose under a fixed detector: both images are sampled from the same
high-resolution source through a square field of view, the moving one through the true transform, so neither has
black wedges and neither is resampled twice.
"""
from __future__ import annotations

import cv2
import numpy as np

from bjexp.registration.base import compose, invert, pose_matrix


def random_pose(rng: np.random.Generator, size: int, max_angle: float = 6.0, max_shift_frac: float = 0.06,
                max_scale_frac: float = 0.06, max_shear: float = 0.02) -> np.ndarray:
    """A random fixed -> moving 2x3 on a `size` px image: rotation, isotropic scale and shift about the centre,
    plus a little shear/anisotropy (so a 6-parameter affine is needed)."""
    m = pose_matrix(rng.uniform(-max_angle, max_angle), *(rng.uniform(-1, 1, 2) * max_shift_frac * size),
                    1.0 + rng.uniform(-max_scale_frac, max_scale_frac), shape=(size, size))
    c = (size - 1) / 2.0
    sh = np.array([[1.0 + rng.uniform(-max_shear, max_shear), rng.uniform(-max_shear, max_shear), 0.0],
                   [0.0, 1.0, 0.0]])
    sh[0, 2] = c - sh[0, 0] * c - sh[0, 1] * c
    return compose(m, sh)


def known_pair(source: np.ndarray, truth: np.ndarray, size: int, fov_frac: float = 0.8,
               rng: np.random.Generator | None = None, photometric: bool = True,
               zero_border: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(fixed, moving) of `size` px with moving(truth(x)) = fixed(x) (up to optional gamma/noise on moving).

    The field of view is a centred square of `fov_frac` x the source's short side. `zero_border`: the moving image
    is the fixed one resampled through the transform with zeros outside it (the black wedges of a resampled
    image), instead of a second view of the source.
    """
    h0, w0 = source.shape
    side = fov_frac * min(h0, w0)
    f = side / size
    x0, y0 = (w0 - side) / 2.0, (h0 - side) / 2.0
    # output pixel -> source pixel (pixel centres)
    view = np.array([[f, 0.0, x0 + 0.5 * f - 0.5], [0.0, f, y0 + 0.5 * f - 0.5]])
    src = cv2.GaussianBlur(source, (0, 0), 0.45 * f) if f > 1.2 else source  # anti-alias before decimation
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    fixed = cv2.warpAffine(src, view, (size, size), flags=flags, borderMode=cv2.BORDER_REFLECT_101)
    if zero_border:
        moving = cv2.warpAffine(fixed, invert(truth), (size, size), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=0)
    else:
        moving = cv2.warpAffine(src, compose(view, invert(truth)), (size, size), flags=flags,
                                borderMode=cv2.BORDER_REFLECT_101)
    if photometric and rng is not None:  # a different exposure and noise, as between two studies
        g = rng.uniform(0.85, 1.15)
        mv = 255.0 * (moving / 255.0) ** g * rng.uniform(0.9, 1.1) + rng.normal(0, 2.0, moving.shape)
        moving = np.clip(mv, 0, 255).astype(np.uint8)
    return fixed, moving


def phantom(size: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth chest-like test image (two dark lung fields, mediastinum, ribs-like bands, texture)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.75 - 0.25 * yy
    for cx in (0.3, 0.7):
        lung = ((xx - cx) / 0.16) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
        img = img - 0.45 * lung
    img = img + 0.06 * np.sin(yy * 40 + 3 * xx) * (np.abs(xx - 0.5) > 0.1)
    img = img + 0.15 * np.exp(-(((xx - 0.42) / 0.05) ** 2 + ((yy - 0.65) / 0.07) ** 2))  # an asymmetric blob
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), size / 100) + rng.normal(0, 0.01, img.shape)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def pose_truth(row, shape: tuple[int, int], direction: str = "current_to_prior") -> np.ndarray:
    """Ground-truth fixed -> moving 2x3 of a synthetic-world manifest row (columns prior_pose_* / current_pose_*:
    angle deg, tx/ty px, scale about the centre). Each study image is the phantom warped forward by its pose,
    image(P(u)) = phantom(u), so prior -> current coordinates are P_current o P_prior^-1."""
    def pose(which: str) -> np.ndarray:
        return pose_matrix(*(float(row[f"{which}_pose_{k}"]) for k in ("angle", "tx", "ty", "scale")), shape=shape)

    t = compose(pose("current"), invert(pose("prior")))
    return t if direction == "current_to_prior" else invert(t)
