"""The pixel representations the evaluation feeds its models, checked against the libraries' own conversions."""
from __future__ import annotations

import numpy as np
import torch

from bjexp.eval.fid import GreyAsRGB
from bjexp.eval.xrv import import_xrv, to_resolution
from bjexp.imaging import grey_to_rgb_uint8, model_to_uint8, model_to_xrv, uint8_to_model, uint8_to_xrv


def _images(n=3, size=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def test_uint8_model_roundtrip_is_exact():
    x = _images()
    assert torch.equal(model_to_uint8(uint8_to_model(x)).squeeze(1), torch.from_numpy(x))


def test_uint8_to_xrv_matches_xrv_normalize_and_model_path():
    xrv = import_xrv()
    x = _images()
    ours = uint8_to_xrv(x).numpy()
    assert np.allclose(ours, xrv.datasets.normalize(x, 255), atol=1e-3)
    assert ours.min() >= -1024 and ours.max() <= 1024
    assert torch.allclose(model_to_xrv(uint8_to_model(x)).squeeze(1), uint8_to_xrv(x), atol=1e-3)


def test_resize_matches_xrv_fix_resolution():
    xrv = import_xrv()
    x = uint8_to_xrv(_images(size=256)).unsqueeze(1)
    assert torch.allclose(to_resolution(x, 224), xrv.utils.fix_resolution(x, 224, object()), atol=1e-4)
    assert to_resolution(x, 256) is x


def test_grey_as_rgb_dataset_is_uint8_three_equal_channels():
    x = _images()
    ds = GreyAsRGB(x)
    item = ds[1]
    assert item.dtype == torch.uint8 and item.shape == (3, 40, 40)
    assert all(torch.equal(item[c], torch.from_numpy(x[1])) for c in range(3))
    assert torch.equal(grey_to_rgb_uint8(torch.from_numpy(x)), torch.stack([ds[i] for i in range(3)]))
