"""FID: the distance against torchmetrics on identical features, and the torch-fidelity pipeline with the
xrv extractor (real loading path, random weights) against features computed directly, with its reference cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bjexp import assets
from bjexp.eval import fake_weights, fid
from bjexp.eval.xrv import load_densenet, to_resolution
from bjexp.imaging import uint8_to_xrv


class _Passthrough(torch.nn.Module):
    """torchmetrics 'feature extractor' that returns its input: both implementations see the same features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


def _torchmetrics_fid(a: np.ndarray, b: np.ndarray) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    m = FrechetInceptionDistance(feature=_Passthrough(a.shape[1]), normalize=True)
    m.update(torch.as_tensor(b, dtype=torch.float64), real=True)
    m.update(torch.as_tensor(a, dtype=torch.float64), real=False)
    return float(m.compute())


@pytest.mark.parametrize("n1,n2,dim", [(600, 500, 48), (90, 120, 160)])  # N > D: torch-fidelity's path; N < D: SVD
@pytest.mark.parametrize("shift", [0.0, 0.3, 2.0])
def test_fid_matches_torchmetrics_and_torch_fidelity_on_same_features(shift, n1, n2, dim):
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(dim, dim)) / 7
    a = rng.normal(size=(n1, dim)) @ mix + shift
    b = rng.normal(size=(n2, dim)) @ (mix * 1.2)
    ours = fid.fid_from_features(a, b)
    assert ours == pytest.approx(_torchmetrics_fid(a, b), abs=1e-3, rel=1e-6)
    assert ours == pytest.approx(fid.fid_torch_fidelity(a, b), abs=1e-3, rel=1e-6)
    assert ours >= 0


@pytest.fixture(scope="module")
def xrv_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("assets") / "xrv"
    fake_weights.write_xrv(d)
    return d


def test_xrv_fid_pipeline_matches_direct_features_and_caches_reference(xrv_dir, tmp_path, monkeypatch):
    import torch_fidelity.utils as tfu

    rng = np.random.default_rng(1)
    gen = rng.integers(0, 256, (6, 48, 48), dtype=np.uint8)
    ref = np.clip(gen.astype(int) + rng.integers(-60, 60, gen.shape), 0, 255).astype(np.uint8)
    calls = []
    real = tfu.get_featuresdict_from_dataset
    monkeypatch.setattr(tfu, "get_featuresdict_from_dataset", lambda inp, *a, **k: calls.append(len(inp)) or real(inp, *a, **k))
    kw = dict(cache_root=tmp_path / "fid", extractors=[fid.XRV_EXTRACTOR], xrv_dir=xrv_dir, verify_checksums=False,
              verbose=False)
    cold = fid.compute_fid(gen, ref, **kw)
    assert calls == [6, 6]  # generated + reference
    warm = fid.compute_fid(gen, ref, **kw)
    assert calls == [6, 6, 6]  # reference statistics came from the cache
    assert warm["metrics"] == cold["metrics"]
    assert len(list((tmp_path / "fid").glob("bjexp-ref-*-n6-*features-features2.pt"))) == 1

    net = load_densenet("chex", xrv_dir)
    with torch.inference_mode():
        feats = [net.features2(to_resolution(uint8_to_xrv(torch.from_numpy(x)).unsqueeze(1), 224)).numpy() for x in (gen, ref)]
    direct = fid.fid_torch_fidelity(*feats)  # features by xrv directly, distance by torch-fidelity
    assert cold["metrics"]["test/fid/xrv-densenet121-features2"] == pytest.approx(direct, rel=1e-3)
    pol = cold["policy"]
    assert pol["n"] == 6 and pol["weights"][fid.XRV_EXTRACTOR]["sha256"] == assets.sha256(
        xrv_dir / assets.get("densenet121-res224-chex").file)

    # the cache name is the reference content: another reference set cannot hit this entry
    assert pol["reference_images_hash"] == fid.images_hash(ref) != fid.images_hash(ref[::-1].copy())
    assert len(list((tmp_path / "fid").glob(f"bjexp-ref-{fid.images_hash(ref)}-n6-*"))) == 1

    with pytest.raises(ValueError, match="n=9"):
        fid.compute_fid(gen, ref, n=9, **kw)


def test_missing_fid_weights_error_names_file_checksum_and_command(tmp_path):
    with pytest.raises(assets.MissingWeightsError) as e:
        fid.compute_fid(np.zeros((3, 8, 8), np.uint8), np.zeros((3, 8, 8), np.uint8), cache_root=tmp_path,
                        extractors=[fid.INCEPTION_EXTRACTOR],
                        inception_weights=tmp_path / "torch-fidelity" / "weights-inception-2015-12-05-6726825d.pth")
    msg = str(e.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in msg and "6726825d" in msg
    assert f"python -m bjexp.assets --dir {tmp_path} fetch inception" in msg


def test_inception_checksum_is_verified(tmp_path):
    path = fake_weights.write_inception(tmp_path / "torch-fidelity")  # random weights: not the published file
    with pytest.raises(assets.ChecksumError, match="6726825d"):
        fid.weights_file(fid.INCEPTION_EXTRACTOR, xrv_weights="chex", xrv_dir=tmp_path, inception_weights=path)
    assert fid.weights_file(fid.INCEPTION_EXTRACTOR, xrv_weights="chex", xrv_dir=tmp_path, inception_weights=path,
                            verify=False) == path
