"""The Registrar protocol, its result, and the geometry helpers every method shares.

Convention (OpenCV's and SimpleITK's): `matrix` is a 2x3 affine mapping *fixed*-frame pixel coordinates
(x, y; pixel centres at integers) to *moving*-frame coordinates, so the moving image resampled into the fixed frame
is `cv2.warpAffine(moving, matrix, (w, h), flags=INTER_LINEAR | WARP_INVERSE_MAP)`.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


class Flag(str, enum.Enum):
    OK = "ok"
    ALREADY_ALIGNED = "already_aligned"  # the estimate is within `already_aligned_px` of identity: moving kept as is
    FAILED = "failed"                    # error, implausible transform, or similarity made worse: moving kept as is


@dataclass
class RegistrationResult:
    warped: np.ndarray          # uint8 (H, W), the moving image in the fixed frame
    matrix: np.ndarray          # 2x3 float64, fixed -> moving coordinates (see module docstring)
    metric: float               # the method's own final metric (ECC correlation, SimpleITK metric value, ...)
    score: float                # method-independent QC score: NCC(fixed, warped) over in-field pixels
    score_before: float         # NCC(fixed, moving)
    ssim_before: float
    ssim_after: float
    out_of_field_frac: float    # fraction of fixed-frame pixels whose source lies outside the moving image
    flag: Flag
    error: str = ""
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Registrar(Protocol):
    """Estimates the fixed -> moving 2x3 affine of two uint8 grey images of the same shape.

    Returns the matrix and the method's own final metric; QC, flags and warping are done by `register_pair`, so
    every method is judged the same way.
    """

    name: str

    def estimate(self, fixed: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, float]: ...


class RegistrationFailed(RuntimeError):
    """A method could not produce a transform (non-convergence, degenerate input)."""


# ---------------------------------------------------------------------------------------------------- geometry

def to3x3(m: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(m, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 of the map x -> a(b(x))."""
    return (to3x3(a) @ to3x3(b))[:2]


def invert(m: np.ndarray) -> np.ndarray:
    return np.linalg.inv(to3x3(m))[:2]


def scale_matrix(m: np.ndarray, factor: float, factor_y: float | None = None) -> np.ndarray:
    """The same geometric map expressed on images resized by `factor` (pixel centres: x' = f(x + .5) - .5)."""
    fy = factor if factor_y is None else factor_y
    s = to3x3([[factor, 0, 0.5 * factor - 0.5], [0, fy, 0.5 * fy - 0.5]])
    return (s @ to3x3(m) @ np.linalg.inv(s))[:2]


def pose_matrix(angle_deg: float = 0.0, tx: float = 0.0, ty: float = 0.0, scale: float = 1.0,
                shape: tuple[int, int] = (256, 256)) -> np.ndarray:
    """2x3 that rotates by `angle_deg` (counter-clockwise on screen, as cv2.getRotationMatrix2D), scales about the
    image centre, then shifts by (tx, ty) pixels — the synthetic world's pose parameters, as a map of coordinates."""
    h, w = shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle_deg, scale)
    m[:, 2] += (tx, ty)
    return m


def corner_error(estimated: np.ndarray, truth: np.ndarray, shape: tuple[int, int]) -> float:
    """Mean Euclidean distance (pixels) between the four image corners mapped by two 2x3 transforms."""
    h, w = shape
    c = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64).T
    d = np.asarray(estimated).reshape(2, 3) @ c - np.asarray(truth).reshape(2, 3) @ c
    return float(np.linalg.norm(d, axis=0).mean())


def decompose(m: np.ndarray) -> dict[str, float]:
    """Rotation (deg, sign as `pose_matrix`), isotropic scale and anisotropy of the linear part."""
    a = np.asarray(m, dtype=np.float64)[:, :2]
    u, s, vt = np.linalg.svd(a)
    r = u @ vt
    return {"angle_deg": math.degrees(math.atan2(r[0, 1], r[0, 0])), "scale": float(math.sqrt(abs(np.linalg.det(a)))),
            "anisotropy": float(s[0] / max(s[1], 1e-12)), "det": float(np.linalg.det(a))}


def warp(moving: np.ndarray, matrix: np.ndarray, shape: tuple[int, int], border: str = "replicate") -> np.ndarray:
    h, w = shape
    mode = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT_101}
    return cv2.warpAffine(moving, np.asarray(matrix, dtype=np.float64).reshape(2, 3), (w, h),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=mode[border], borderValue=0)


def in_field_mask(matrix: np.ndarray, fixed_shape: tuple[int, int], moving_shape: tuple[int, int]) -> np.ndarray:
    """True where a fixed-frame pixel's source lies inside the moving image."""
    ones = np.full(moving_shape, 255, np.uint8)
    h, w = fixed_shape
    m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    return cv2.warpAffine(ones, m, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
