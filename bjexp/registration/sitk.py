"""SimpleITK 2-D affine registration (the classic ITK recipe: centred geometry initialiser, mean squares or
Mattes mutual information, multi-resolution, random sampling)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bjexp.registration.base import RegistrationFailed

TRANSFORMS = ("affine", "euclidean", "translation")


@dataclass
class SitkRegistrar:
    name: str = "affine_sitk"
    motion: str = "affine"
    metric: str = "mattes"               # "mattes" (mutual information) | "mean_squares"
    histogram_bins: int = 32
    optimizer: str = "regular_step"      # "regular_step" | "gradient_descent"
    learning_rate: float = 1.0
    min_step: float = 1e-4               # regular_step only
    iterations: int = 200
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas: tuple[float, ...] = (2.0, 1.0, 0.0)  # in pixels of the level
    sampling_fraction: float = 0.25      # random sampling of the metric; 1.0 = all pixels
    seed: int = 1                        # the sampling's seed: same pixels in every process (ITK: 0 = wall clock)
    threads: int = 1

    def __post_init__(self) -> None:
        if self.motion not in TRANSFORMS:
            raise ValueError(f"registration.motion={self.motion!r}: expected one of {list(TRANSFORMS)}")
        if self.metric not in ("mattes", "mean_squares"):
            raise ValueError(f"registration.metric={self.metric!r}: expected 'mattes' or 'mean_squares'")
        if self.optimizer not in ("regular_step", "gradient_descent"):
            raise ValueError(f"registration.optimizer={self.optimizer!r}: "
                             "expected 'regular_step' or 'gradient_descent'")
        if self.seed == 0 and self.sampling_fraction < 1.0:
            raise ValueError("registration.seed=0 lets ITK seed its pixel sampling from the wall clock (a different "
                             "result in every process): use a positive seed")
        if len(self.shrink_factors) != len(self.smoothing_sigmas):
            raise ValueError("registration.shrink_factors and smoothing_sigmas must have the same length")

    def estimate(self, fixed: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, float]:
        import SimpleITK as sitk

        f = sitk.GetImageFromArray(fixed.astype(np.float32))
        m = sitk.GetImageFromArray(moving.astype(np.float32))
        base = {"affine": sitk.AffineTransform(2), "euclidean": sitk.Euler2DTransform(),
                "translation": sitk.TranslationTransform(2)}[self.motion]
        if self.motion == "translation":
            tx = base
        else:
            tx = sitk.CenteredTransformInitializer(f, m, base, sitk.CenteredTransformInitializerFilter.GEOMETRY)
        reg = sitk.ImageRegistrationMethod()
        if self.metric == "mattes":
            reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=self.histogram_bins)
        else:
            reg.SetMetricAsMeanSquares()
        if self.sampling_fraction < 1.0:
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(self.sampling_fraction, self.seed)
        reg.SetInterpolator(sitk.sitkLinear)
        if self.optimizer == "regular_step":
            reg.SetOptimizerAsRegularStepGradientDescent(learningRate=self.learning_rate, minStep=self.min_step,
                                                         numberOfIterations=self.iterations)
        else:
            reg.SetOptimizerAsGradientDescent(learningRate=self.learning_rate, numberOfIterations=self.iterations)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel(list(self.shrink_factors))
        reg.SetSmoothingSigmasPerLevel(list(self.smoothing_sigmas))
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        reg.SetInitialTransform(tx, inPlace=True)
        reg.SetNumberOfThreads(self.threads)
        # Parts of the method run on ITK's process-wide thread default, and multi-threaded they differ from run to
        # run in the last bits: pin it for the call, so the same pair gives the same transform in every process.
        default_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(self.threads)
        try:
            reg.Execute(f, m)
        except RuntimeError as e:  # e.g. "All samples map outside moving image buffer"
            raise RegistrationFailed(f"SimpleITK: {str(e).strip().splitlines()[-1][:200]}") from None
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(default_threads)
        return to_matrix(tx), float(reg.GetMetricValue())


def to_matrix(tx) -> np.ndarray:
    """2x3 fixed -> moving of a SimpleITK 2-D transform with spacing 1 and origin 0 (physical = pixel index)."""
    if tx.GetName() == "TranslationTransform":
        t = tx.GetOffset()
        return np.array([[1.0, 0.0, t[0]], [0.0, 1.0, t[1]]])
    a = np.asarray(tx.GetMatrix(), dtype=np.float64).reshape(2, 2)
    c = np.asarray(tx.GetCenter(), dtype=np.float64)
    t = np.asarray(tx.GetTranslation(), dtype=np.float64)
    return np.hstack([a, (c + t - a @ c)[:, None]])
