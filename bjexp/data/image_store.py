"""The preprocessed image store: each source image once, at training resolution, as an 8-bit grey PNG.

Preprocessing: grey; aspect-preserving resize so the shorter side is `size` (area interpolation), then a center
crop to size x size; never a flip (laterality). JPEGs are decoded at a reduced scale when the image is large
enough (libjpeg DCT scaling through PIL's draft mode: several times faster than a full decode + resize).
DICOM: modality + VOI LUT, MONOCHROME1 inverted so that bone is bright, min-max to 8 bits.

The store is resumable: files are written atomically (temp + rename) and an existing file is reused (unless its
source is newer: a replaced or fixed source is stored again), so a killed prepare continues where it stopped. A
corrupt or missing source is recorded (key, path, reason) and skipped. Every stored file's content hash (sha256 of
the PNG bytes, 16 hex) is returned for the manifest. Stored images are written owner-only by default (MIMIC).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from bjexp.io import Mode, atomic_write, bytes_hash, private_mode

log = logging.getLogger(__name__)
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 6]


class ImageError(ValueError):
    """A source image that cannot be read (the message names the file)."""


def read_dicom(path: str | Path) -> np.ndarray:
    """DICOM -> uint8 grey: modality LUT (rescale), VOI LUT / window, MONOCHROME1 inverted, min-max to [0, 255]."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types for damaged files
        raise ImageError(f"cannot read DICOM {path}: {type(e).__name__}: {e}") from e
    if arr.ndim != 2:
        raise ImageError(f"{path}: expected one grey frame, got pixel array of shape {arr.shape}")
    arr = apply_voi_lut(apply_modality_lut(arr, ds), ds).astype(np.float64)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        arr = arr.max() - arr
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        raise ImageError(f"{path}: constant image (all pixels {lo})")
    return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_grey(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """JPEG/PNG/DICOM -> uint8 grey (H, W). With `min_side`, JPEGs are decoded at 1/2, 1/4 or 1/8 scale (libjpeg
    DCT scaling via PIL's draft mode) as long as the shorter side stays >= min_side. A truncated or corrupt file is
    an ImageError (PIL refuses truncated data; OpenCV would silently fill it with grey)."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):
        return read_dicom(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            if min_side and im.format == "JPEG":
                w, h = im.size
                f = max((f for f in (8, 4, 2, 1) if min(w, h) // f >= min_side), default=1)
                im.draft("L", (w // f, h // f))
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float PNG or TIFF: min-max to 8 bits
                a = np.asarray(im, dtype=np.float64)
                lo, hi = a.min(), a.max()
                return np.round((a - lo) * (255.0 / max(hi - lo, 1e-9))).astype(np.uint8)
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


def fit(img: np.ndarray, size: int) -> np.ndarray:
    """Aspect-preserving resize (shorter side = size) + center crop to size x size. No flips."""
    h, w = img.shape[:2]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    if (nh, nw) != (h, w):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(img[top: top + size, left: left + size])


def preprocess(path: str | Path, size: int) -> np.ndarray:
    return fit(read_grey(path, min_side=size), size)


def encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img, PNG_PARAMS)
    if not ok:
        raise ImageError("PNG encoding failed")
    return buf.tobytes()


@dataclass
class StoreResult:
    """key -> path relative to the store folder and content hash; failures as (key, source, reason)."""

    paths: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    reused: int = 0
    written: int = 0


def _fresh(out: Path, src: str | Path) -> bool:
    """A stored file is reused when it exists and is not older than its source."""
    try:
        return out.stat().st_mtime_ns >= Path(src).stat().st_mtime_ns
    except FileNotFoundError:
        return out.is_file()


def build_store(items: Sequence[tuple[str, str | Path]], store_dir: str | Path, size: int, workers: int = 2,
                progress: bool = True, perms: Mode | None = None) -> StoreResult:
    """Preprocess (key, source path) items into `<store_dir>/images/<key>.png`, reusing files already there.
    `perms`: file and folder modes (default owner-only, bjexp.io.private_mode())."""
    store_dir = Path(store_dir)
    perms = perms or private_mode()
    res = StoreResult()

    def one(item: tuple[str, str | Path]) -> tuple[str, str | None, str | None, bool]:
        key, src = item
        rel = f"images/{key}.png"
        out = store_dir / rel
        if _fresh(out, src):
            return key, rel, bytes_hash(out.read_bytes()), True
        try:
            data = encode_png(preprocess(src, size))
        except (ImageError, cv2.error, OSError, ValueError) as e:
            return key, None, str(e), False
        with atomic_write(out, "wb", perms) as f:
            f.write(data)
        return key, rel, bytes_hash(data), False

    items = list(dict.fromkeys((k, str(p)) for k, p in items))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(one, items)
        if progress and items:
            from rich.progress import track

            results = track(results, total=len(items), description=f"image store ({size}px)", transient=True)
        for (key, src), (_, rel, info, reused) in zip(items, results):
            if rel is None:
                res.failed.append((key, src, info or "unknown error"))
            else:
                res.paths[key], res.hashes[key] = rel, info
                res.reused += reused
                res.written += not reused
    if res.failed:
        log.warning("image store: %d image(s) failed, e.g. %s", len(res.failed), res.failed[0][2])
    return res
