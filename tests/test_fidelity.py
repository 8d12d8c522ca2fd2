"""KID, precision / recall / density / coverage (bjexp/eval/fidelity.py) against brute-force computations, and the
three fidelity metrics of one evaluation sharing a single feature extraction with FID."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from bjexp.eval import fake_weights, fid, fidelity, registry


def _brute_prdc(g: np.ndarray, r: np.ndarray, k: int):
    d = lambda a, b: float(np.sqrt(((a - b) ** 2).sum()))  # noqa: E731
    rad_r = [sorted(d(x, y) for y in r)[k] for x in r]  # index k: the point itself is at 0
    rad_g = [sorted(d(x, y) for y in g)[k] for x in g]
    precision = np.mean([any(d(gj, ri) <= rad_r[i] for i, ri in enumerate(r)) for gj in g])
    recall = np.mean([any(d(ri, gj) <= rad_g[j] for j, gj in enumerate(g)) for ri in r])
    density = sum(d(gj, ri) <= rad_r[i] for gj in g for i, ri in enumerate(r)) / (k * len(g))
    coverage = np.mean([min(d(ri, gj) for gj in g) <= rad_r[i] for i, ri in enumerate(r)])
    return precision, recall, density, coverage


@pytest.mark.parametrize("shift", [0.0, 0.7, 3.0])
def test_prdc_matches_brute_force(shift):
    rng = np.random.default_rng(0)
    r = rng.normal(size=(40, 6))
    g = rng.normal(size=(35, 6)) * 1.3 + shift
    p, rc = fidelity.precision_recall(torch.as_tensor(g), torch.as_tensor(r), k=5)
    dn, cv = fidelity.density_coverage(torch.as_tensor(g), torch.as_tensor(r), k=5)
    assert (p, rc, dn, cv) == pytest.approx(_brute_prdc(g, r, 5), abs=1e-6)
    if shift == 3.0:
        assert cv < 0.2 and dn < 0.2


def test_density_coverage_of_a_copy_and_of_a_far_set():
    r = torch.as_tensor(np.random.default_rng(1).normal(size=(30, 4)))
    assert fidelity.density_coverage(r, r, k=3)[1] == 1.0
    assert fidelity.density_coverage(r + 100, r, k=3) == (0.0, 0.0)
    with pytest.raises(ValueError, match="more than 5 real samples"):
        fidelity.density_coverage(r, r[:5], k=5)


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8)) + 0.5
    kern = lambda x, y: (x @ y.T / x.shape[1] + 1) ** 3  # noqa: E731
    m = len(a)
    kxx, kyy, kxy = kern(a, a), kern(b, b), kern(a, b)
    mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    # Subset size = N: every subset is the whole set, so each subset's MMD is the full-set one.
    assert fidelity.kid(torch.as_tensor(a), torch.as_tensor(b), subsets=3) == pytest.approx(mmd, rel=1e-6)
    same = rng.normal(size=(50, 8))  # a second sample of a's distribution: KID near 0, far under the shifted one
    assert abs(fidelity.kid(torch.as_tensor(a), torch.as_tensor(same), subsets=3)) < mmd / 5


def test_fid_kid_prdc_share_one_feature_pass(tmp_path, monkeypatch):
    import torch_fidelity.utils as tfu

    xrv_dir = tmp_path / "xrv"
    fake_weights.write_xrv(xrv_dir)
    rng = np.random.default_rng(3)
    cur = rng.integers(0, 256, (12, 48, 48), dtype=np.uint8)
    gen = np.clip(cur.astype(int) + rng.integers(-40, 40, cur.shape), 0, 255).astype(np.uint8)
    calls = []
    real = tfu.get_featuresdict_from_dataset
    monkeypatch.setattr(tfu, "get_featuresdict_from_dataset", lambda inp, *a, **k: calls.append(len(inp)) or real(inp, *a, **k))
    cfg = OmegaConf.create({"cache_dir": str(tmp_path / "cache"), "weights_dir": str(xrv_dir), "verify_checksums": False,
                            "fid_settings": {"extractors": [fid.XRV_EXTRACTOR], "n": None, "inception_weights": "",
                                             "xrv_weights": "densenet121-res224-chex", "batch_size": 8}})
    df = pd.DataFrame({"pair_id": [f"p{i}" for i in range(12)], "patient_id": [f"P{i}" for i in range(12)]})
    ctx = registry.EvalContext(df, images={"test": gen, "ceiling": cur, "floor": cur}, cfg=cfg, n_bootstrap=10)
    out = registry.evaluate([fid.FID(), fidelity.KID(subsets=5), fidelity.PRDC(k=3)], ctx, sides=["test"])["metrics"]
    assert calls == [12, 12]  # generated + reference, once for all three metrics
    f_gen, f_ref = ctx.memo(("fidelity_features", "test"), lambda: None)["features"][fid.XRV_EXTRACTOR]
    assert out["test/fid"]["value"] == pytest.approx(fid.fid_from_features(f_gen, f_ref))
    assert out["test/kid"]["value"] == pytest.approx(fidelity.kid(f_gen, f_ref, subsets=5))
    assert out["test/prdc/coverage"]["value"] == out["test/prdc"]["value"] == pytest.approx(
        fidelity.density_coverage(f_gen, f_ref, 3)[1])
    assert out[f"test/prdc/precision/{fid.XRV_EXTRACTOR}"]["value"] == out["test/prdc/precision"]["value"]
