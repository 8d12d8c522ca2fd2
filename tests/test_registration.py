"""Pair-level registration: geometry conventions, QC measures, recovery of known transforms, flags."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bjexp.registration import Flag, QcPolicy, build_registrar, register_pair
from bjexp.registration.base import (IDENTITY, compose, corner_error, decompose, invert, pose_matrix,
                                     scale_matrix, warp)
from bjexp.registration.ecc import phase_shift
from bjexp.registration.known import known_pair, phantom, random_pose
from bjexp.registration.qc import mutual_information, ncc, ssim
from bjexp.registration.sitk import to_matrix

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-cxr"
METHODS = {"affine_ecc": {"method": "ecc"}, "affine_ecc_full": {"method": "ecc", "finest_level": 0},
           "affine_sitk": {"method": "sitk"}}


def test_corner_error_and_pose_matrix_against_hand_computation():
    m = pose_matrix(90.0, tx=2.0, ty=-1.0, shape=(11, 11))  # 90 deg about the centre (5, 5), then a shift
    # cv2's positive angle is counter-clockwise on screen: (10, 5) (right of centre) -> (5, 0) (above it)
    assert np.allclose(m @ [10, 5, 1], [5 + 2, 0 - 1])
    assert corner_error(IDENTITY, IDENTITY, (11, 11)) == 0
    shifted = IDENTITY.copy()
    shifted[:, 2] = (3, 4)
    assert corner_error(shifted, IDENTITY, (11, 11)) == pytest.approx(5.0)
    assert np.allclose(compose(m, invert(m)), IDENTITY)
    d = decompose(pose_matrix(7.0, scale=1.1))
    assert d["angle_deg"] == pytest.approx(7.0) and d["scale"] == pytest.approx(1.1)


def test_scale_matrix_is_the_same_map_at_another_resolution():
    rng = np.random.default_rng(0)
    big = phantom(256, 1)
    t = random_pose(rng, 256)
    small_t = scale_matrix(t, 0.5)
    a = cv2.resize(warp(big, t, big.shape), (128, 128), interpolation=cv2.INTER_AREA)
    b = warp(cv2.resize(big, (128, 128), interpolation=cv2.INTER_AREA), small_t, (128, 128))
    assert np.abs(a.astype(int) - b.astype(int))[8:-8, 8:-8].mean() < 2.0


def test_warp_convention_moving_sampled_at_matrix_of_fixed_coordinates():
    img = np.zeros((32, 32), np.uint8)
    img[10, 20] = 255
    m = IDENTITY.copy()
    m[:, 2] = (5, -3)  # fixed (x, y) -> moving (x + 5, y - 3)
    out = warp(img, m, img.shape, "constant")
    assert np.unravel_index(out.argmax(), out.shape) == (13, 15)


def test_ssim_matches_skimage_and_mi_ncc_behave():
    skm = pytest.importorskip("skimage.metrics")
    a, b = phantom(96, 0), phantom(96, 3)
    b = cv2.GaussianBlur(b, (0, 0), 2)
    ref = skm.structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-4)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ncc(a, a) == pytest.approx(1.0) and ncc(a, 255 - a) == pytest.approx(-1.0)
    noise = np.random.default_rng(0).integers(0, 256, a.shape).astype(np.uint8)
    assert mutual_information(a, a) > 5 * mutual_information(a, noise)


def test_phase_shift_sign_and_inputs_untouched():
    a = phantom(128, 2)
    m = IDENTITY.copy()
    m[:, 2] = (6.0, -4.0)
    b = warp(a, invert(m), a.shape)  # b(m(x)) = a(x): b is a moved by (+6, -4)
    a0, b0 = a.copy(), b.copy()
    dx, dy, _ = phase_shift(a, b)
    assert (dx, dy) == pytest.approx((6.0, -4.0), abs=0.3)
    assert np.array_equal(a, a0) and np.array_equal(b, b0)


def test_sitk_matrix_conversion_matches_simpleitk():
    sitk = pytest.importorskip("SimpleITK")
    tx = sitk.AffineTransform(2)
    tx.SetMatrix([1.05, 0.1, -0.05, 0.95])
    tx.SetCenter([30.0, 20.0])
    tx.SetTranslation([3.0, -2.0])
    m = to_matrix(tx)
    for p in np.random.default_rng(0).uniform(0, 64, (20, 2)):
        assert np.allclose(m @ [*p, 1.0], tx.TransformPoint(tuple(p)))
    img = phantom(64, 4)
    ref = sitk.GetArrayFromImage(sitk.Resample(sitk.GetImageFromArray(img.astype(np.float32)), tx,
                                               sitk.sitkLinear, 0.0))
    ours = cv2.warpAffine(img.astype(np.float32), m, (64, 64), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    ys, xs = np.mgrid[0:64, 0:64]
    src = np.einsum("ij,jhw->ihw", m, np.stack([xs, ys, np.ones_like(xs)]).astype(float))
    inside = ((src >= 1) & (src <= 62)).all(0)  # ITK and OpenCV treat the last pixel of the edge differently
    assert np.abs(ref - ours)[inside].max() < 1e-2 and inside.mean() > 0.7


@pytest.mark.parametrize("name", sorted(METHODS))
def test_recovers_known_affine_transforms(name):
    """Phantom pairs related by random affines (±6°, ±6 % shift and scale, shear) plus exposure change and noise."""
    rng = np.random.default_rng(1)
    src = phantom(384, 0)
    reg = build_registrar(METHODS[name])
    errors = []
    for _ in range(6):
        truth = random_pose(rng, 128)
        fixed, moving = known_pair(src, truth, 128, rng=rng)
        res = register_pair(reg, fixed, moving)
        assert res.flag is Flag.OK, res.error
        assert res.score > res.score_before and res.ssim_after > res.ssim_before
        errors.append(corner_error(res.matrix, truth, fixed.shape))
    assert np.median(errors) < 0.3 and max(errors) < 1.0, errors


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real CXRs not found at {REAL}")
def test_recovers_known_affine_on_real_cxr():
    from bjexp.imaging import read_grey

    rng = np.random.default_rng(2)
    srcs = [read_grey(p) for p in sorted((REAL / "mhh_covid19" / "images").glob("*.jpg"))[:4]]
    reg = build_registrar(METHODS["affine_ecc"])
    for src in srcs:
        truth = random_pose(rng, 256)
        fixed, moving = known_pair(src, truth, 256, rng=rng)
        res = register_pair(reg, fixed, moving)
        assert res.flag is Flag.OK and corner_error(res.matrix, truth, fixed.shape) < 0.3


@pytest.mark.parametrize("name", sorted(METHODS))
def test_identical_images_are_already_aligned(name):
    img = phantom(96, 5)
    res = register_pair(build_registrar(METHODS[name]), img, img.copy())
    assert res.flag is Flag.ALREADY_ALIGNED
    assert np.array_equal(res.matrix, IDENTITY) and np.array_equal(res.warped, img)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_unrelated_images_are_flagged_failed(name):
    rng = np.random.default_rng(3)
    fixed = phantom(96, 6)
    noise = cv2.GaussianBlur(rng.integers(0, 256, fixed.shape).astype(np.uint8), (0, 0), 1.0)
    res = register_pair(build_registrar(METHODS[name]), fixed, noise)
    assert res.flag is Flag.FAILED and res.error
    assert np.array_equal(res.warped, noise)  # a failure never hands back a distorted image


def test_fallback_rescues_a_failed_estimate_and_says_so():
    from bjexp.registration import RegistrationFailed

    class Broken:
        name = "broken"

        def estimate(self, fixed, moving):
            raise RegistrationFailed("diverged")

    img = phantom(96, 7)
    truth = pose_matrix(0.0, 3.0, -2.0, shape=img.shape)
    moving = warp(img, invert(truth), img.shape)
    res = register_pair(Broken(), img, moving, fallback=build_registrar({"method": "ecc", "motion": "translation"}))
    assert res.flag is Flag.OK and res.extra["fallback"] == "affine_ecc" and "diverged" in res.extra["first_error"]
    assert corner_error(res.matrix, truth, img.shape) < 0.3
    res = register_pair(Broken(), img, moving, fallback=Broken())
    assert res.flag is Flag.FAILED and "diverged; fallback broken: diverged" in res.error
    fb = build_registrar({"method": "ecc", "name": "affine_ecc", "fallback_motion": "euclidean"}, fallback=True)
    assert fb.motion == "euclidean" and fb.name == "affine_ecc/euclidean"
    assert build_registrar({"method": "ecc"}, fallback=True) is None


def test_qc_at_capped_resolution_agrees_with_native():
    rng = np.random.default_rng(4)
    truth = random_pose(rng, 512)
    fixed, moving = known_pair(phantom(768, 8), truth, 512, rng=rng)
    reg = build_registrar(METHODS["affine_ecc"])
    capped = register_pair(reg, fixed, moving, QcPolicy(qc_size=128))
    native = register_pair(reg, fixed, moving, QcPolicy(qc_size=None))
    assert np.allclose(capped.matrix, native.matrix) and capped.warped.shape == (512, 512)
    assert capped.score == pytest.approx(native.score, abs=0.02)
    assert capped.score_before == pytest.approx(native.score_before, abs=0.02)
    assert capped.ssim_after > capped.ssim_before and native.ssim_after > native.ssim_before


def test_bad_inputs_raise_clear_errors():
    reg = build_registrar(METHODS["affine_ecc"])
    with pytest.raises(ValueError, match="same shape"):
        register_pair(reg, phantom(64), phantom(96))
    with pytest.raises(ValueError, match="uint8 grey"):
        register_pair(reg, phantom(64).astype(np.float32), phantom(64))
    with pytest.raises(ValueError, match="registration.method"):
        build_registrar({"method": "bspline"})
    with pytest.raises(ValueError, match="registration.motion"):
        build_registrar({"method": "ecc", "motion": "homography"})


SITK_CHILD = """
import sys, numpy as np
from bjexp.registration import build_registrar
from bjexp.registration.known import known_pair, phantom, random_pose
from bjexp.registration.methods import option_config
rng = np.random.default_rng(3)
fixed, moving = known_pair(phantom(192, 2), random_pose(rng, 96), 96, rng=rng)
for name in sys.argv[1:]:
    matrix, metric = build_registrar(option_config(name)).estimate(fixed, moving)
    print(name, matrix.tobytes().hex(), repr(metric))
"""


def test_sitk_options_give_the_same_result_in_two_processes():
    """Random metric sampling is seeded (ITK's default seed is the wall clock): a cached registration means one
    thing whichever process computed it."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-c", SITK_CHILD, "affine_sitk", "affine_sitk_published"]
    outs = [subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300) for _ in range(2)]
    assert all(o.returncode == 0 for o in outs), outs[0].stderr[-2000:]
    assert outs[0].stdout == outs[1].stdout and len(outs[0].stdout.splitlines()) == 2
    with pytest.raises(ValueError, match="wall clock"):
        build_registrar({"method": "sitk", "seed": 0})
