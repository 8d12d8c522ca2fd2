"""Image store: aspect-preserving resize + center crop, no flips, DICOM MONOCHROME1, resumable, failures listed;
real radiographs from ../shared/data/real-cxr; the data=real_pairs adapter."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from conftest import REPO, compose

from bjexp.data import manifest
from bjexp.data.image_store import ImageError, build_store, fit, preprocess, read_dicom, read_grey

REAL = REPO.parent / "shared" / "data" / "real-cxr"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real CXR test data not found at {REAL}")


def test_fit_preserves_aspect_and_orientation():
    # 120 x 240 (h x w): left half dark, right half bright, a bright dot in the top-left quarter of the center crop
    img = np.zeros((120, 240), np.uint8)
    img[:, 120:] = 200
    img[20:40, 70:90] = 255
    out = fit(img, 60)
    # independent: PIL's ImageOps.fit (resize to cover, center crop)
    ref = np.asarray(ImageOps.fit(Image.fromarray(img), (60, 60), method=Image.BOX, centering=(0.5, 0.5)))
    assert out.shape == (60, 60)
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 2.0
    # no flip: dark left, bright right; the dot stays top-left
    assert out[:, :25].mean() < 60 < 150 < out[:, 35:].mean()
    assert out[10:20, 5:15].mean() > 200 and out[40:, :25].max() < 50
    # portrait too; and upscaling a small image
    assert fit(img.T.copy(), 60).shape == (60, 60) and fit(img[:30, :40], 64).shape == (64, 64)


def test_reduced_jpeg_decode_matches_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:2000, 0:1700]
    img = (128 + 60 * np.sin(xx / 90) * np.cos(yy / 130) + rng.normal(0, 6, (2000, 1700))).clip(0, 255)
    p = tmp_path / "big.jpg"
    Image.fromarray(img.astype(np.uint8)).save(p, quality=92)
    fast = preprocess(p, 128)  # decoded at 1/8 scale (1700 / 8 >= 128)
    assert read_grey(p, min_side=128).shape == (250, 213)
    slow = fit(read_grey(p), 128)
    assert fast.shape == slow.shape == (128, 128)
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 2.0


@needs_real
def test_dicom_monochrome1_is_inverted(tmp_path):
    import pydicom

    src = next((REAL / "singles").glob("*.dcm"))
    mono2 = read_dicom(src)
    ds = pydicom.dcmread(src)
    ref = ds.pixel_array.astype(float)
    ref = np.round((ref - ref.min()) * 255 / (ref.max() - ref.min()))
    assert ds.PhotometricInterpretation == "MONOCHROME2" and np.abs(mono2 - ref).max() <= 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    mono1 = read_dicom(tmp_path / "mono1.dcm")
    assert np.abs(mono1.astype(int) - (255 - mono2.astype(int))).max() <= 1
    (tmp_path / "broken.dcm").write_bytes(b"DICM" * 10)
    with pytest.raises(ImageError, match="broken.dcm"):
        read_dicom(tmp_path / "broken.dcm")


@needs_real
def test_store_real_images_resumable_with_failures_listed(tmp_path):
    items = [(f.stem, f) for f in sorted((REAL / "singles").iterdir()) if f.suffix in (".png", ".dcm")]
    items += [(f.stem, f) for f in sorted((REAL / "mhh_covid19" / "images").glob("*.jpg"))[:3]]
    (tmp_path / "corrupt.jpg").write_bytes((REAL / "mhh_covid19" / "images").glob("*.jpg").__next__().read_bytes()[:500])
    items += [("corrupt", tmp_path / "corrupt.jpg"), ("missing", tmp_path / "nope.jpg")]
    store = tmp_path / "store"
    res = build_store(items, store, 64, workers=2, progress=False)
    assert sorted(k for k, _, _ in res.failed) == ["corrupt", "missing"]
    assert res.written == len(items) - 2 and res.reused == 0
    for key, rel in res.paths.items():
        data = (store / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest()[:16] == res.hashes[key]
        with Image.open(store / rel) as im:
            assert im.size == (64, 64) and im.mode == "L"
    # same picture as an independent PIL/pydicom path (no flip, no inversion), for every source kind
    for key, src in items[:-2]:
        if src.suffix == ".dcm":
            import pydicom

            a = pydicom.dcmread(src).pixel_array.astype(float)
            ref_im = Image.fromarray(np.round((a - a.min()) * 255 / np.ptp(a)).astype(np.uint8))
        else:
            ref_im = Image.open(src).convert("L")
        ref = np.asarray(ImageOps.fit(ref_im, (64, 64), method=Image.BOX), dtype=float)
        got = np.asarray(Image.open(store / res.paths[key]), dtype=float)
        assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.97, key
        assert np.abs(ref - got).mean() < 4, key
    # resume: one output lost (killed run), a temp file left behind -> only that one is rewritten
    lost = store / res.paths[items[0][0]]
    lost.unlink()
    (store / "images" / ".x.png.123.tmp").write_bytes(b"partial")
    again = build_store(items, store, 64, workers=2, progress=False)
    assert again.written == 1 and again.reused == len(items) - 3 and again.hashes == res.hashes


@needs_real
def test_real_pairs_adapter(tmp_path):
    cfg = compose(["data=real_pairs", f"data.root={REAL}", f"paths.cache_dir={tmp_path}", "data.image_size=32"])
    from hydra.utils import get_method

    build_manifest = get_method(cfg.data.builder)
    path = build_manifest(cfg)
    df = manifest.read(path)
    src = pd.read_csv(REAL / "pairs.csv", dtype={"patient_id": str})
    assert len(df) == len(src) == 59 and set(df["split"]) == {"train", "val", "test"}
    assert df.groupby("patient_id")["split"].nunique().max() == 1
    row = df.set_index("pair_id").loc["pair_0001"]
    assert row.text == "COVID-19 follow-up after 3 days" and row.gap_days == 3.0 and row.attr_sex == "M"
    assert all(p.is_file() for p in manifest.resolve(df, "prior_path") + manifest.resolve(df, "current_path"))
    assert build_manifest(cfg) == path  # cached
