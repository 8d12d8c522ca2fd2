"""The CheXGenBench-style fidelity set beside FID: KID and precision / recall / density / coverage, on the same
Inception and xrv DenseNet features as FID (`fid.side_features`: one extraction per side, reference cached).

- KID: torch-fidelity's (polynomial kernel d=3, gamma=1/D, coef0=1; mean over random subsets of min(1000, N)).
- Precision and recall: torch-fidelity's (Kynkäänniemi et al. 2019: k-NN balls, k = `k`).
- Density and coverage: Naeem et al. 2020, implemented here (torch-fidelity has neither): with r_i the distance of
  real feature i to its k-th nearest real neighbour, density = mean over generated j of #{i: d(g_j, x_i) <= r_i} / k,
  coverage = fraction of real i with some generated j inside its ball.
All set-level (no CI), like FID; compare equal N only (`details.fid.n`).
"""
from __future__ import annotations

import torch

from bjexp.eval.fid import side_features
from bjexp.eval.registry import Metric


def density_coverage(generated: torch.Tensor, real: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """(density, coverage) of generated vs real features (Naeem et al. 2020), float64 Euclidean distances."""
    g, r = (torch.as_tensor(x, dtype=torch.float64) for x in (generated, real))
    if len(r) <= k:
        raise ValueError(f"density/coverage with k={k} need more than {k} real samples, got {len(r)}")
    radius = torch.cdist(r, r).kthvalue(k + 1, dim=1).values  # k-th neighbour, the point itself excluded
    inside = torch.cdist(g, r) <= radius[None]  # (generated, real): g_j in x_i's ball
    return float(inside.sum() / (k * len(g))), float(inside.any(0).double().mean())


def precision_recall(generated: torch.Tensor, real: torch.Tensor, k: int = 5) -> tuple[float, float]:
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    out = prc_features_to_metric(torch.as_tensor(generated, dtype=torch.float32),
                                 torch.as_tensor(real, dtype=torch.float32), prc_neighborhood=k, prc_batch_size=10000,
                                 save_cpu_ram=True, verbose=False)
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


def kid(generated: torch.Tensor, real: torch.Tensor, subsets: int = 100, seed: int = 0) -> float:
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    size = min(1000, len(generated), len(real))
    return float(kid_features_to_metric(torch.as_tensor(generated), torch.as_tensor(real), kid_subsets=subsets,
                                        kid_subset_size=size, kid_kernel="poly", kid_kernel_poly_degree=3,
                                        kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=seed,
                                        verbose=False)[KEY_METRIC_KID_MEAN])


class _Fidelity(Metric):
    consumes = ("images",)
    bootstrap = False
    sides = ("test",)

    def per_extractor(self, gen, ref) -> dict[str, float]:
        raise NotImplementedError

    def compute(self, ctx, side, rows, done):
        feats = side_features(ctx, side)["features"]
        first = ctx.cfg.fid_settings.extractors[0]
        out: dict[str, float] = {}
        for ex, (gen, ref) in feats.items():
            for sub, v in self.per_extractor(gen, ref).items():
                out[f"{sub}/{ex}" if sub else ex] = v
                if ex == first:
                    out[sub] = v
        return out


class KID(_Fidelity):
    name = "kid"
    description = "kernel inception distance of generated vs real current images (first extractor; no CI)"
    direction = "lower"

    def __init__(self, subsets: int = 100, **kw):
        super().__init__(**kw)
        self.subsets = int(subsets)

    def per_extractor(self, gen, ref):
        return {"": kid(gen, ref, self.subsets)}


class PRDC(_Fidelity):
    name = "prdc"
    description = "coverage of the real currents by the generated images (with precision, recall, density; no CI)"

    def __init__(self, k: int = 5, **kw):
        super().__init__(**kw)
        self.k = int(k)

    def per_extractor(self, gen, ref):
        p, r = precision_recall(gen, ref, self.k)
        d, c = density_coverage(gen, ref, self.k)
        return {"": c, "precision": p, "recall": r, "density": d, "coverage": c}
