"""Procedural chest-X-ray-like phantoms with ground truth: anatomy, five findings, identity traits, pose.

Image convention: radiological view — the patient's left is on the image's right. Coordinates u (left→right) and
v (top→bottom) span [-1, 1]. Intensities are attenuation-like in [0, 1] (bright = dense), uint8 on output.
Lung shapes come from the real lung masks shipped in the torchxrayvision wheel (read in place).
"""
from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bjexp.data.describers import FindingState
from bjexp.data.findings import SYNTHETIC_FINDINGS

N_RACE = 3  # a 3-valued categorical identity trait standing in for race (rendered as soft-tissue density)
# The patient's left lung is on the image's right (u > 0).
SIDE_SIGN = {"R": -1, "L": 1}
# A study's masks (PhantomRenderer.pack): bit i of its uint8 mask image is MASK_NAMES[i].
ANATOMY = ("Left lung", "Right lung", "Heart")
MASK_NAMES = (*ANATOMY, *SYNTHETIC_FINDINGS)
# A finding's region: where drawing it changes the intensity (in [0, 1]) by at least this much (5 of 255 grey levels).
FINDING_LEVEL = 0.02


@dataclass
class Anatomy:
    """Per-patient traits: fixed along a journey (what retention metrics check)."""
    mask_index: int
    sex: int  # 0/1; 1 renders breast soft-tissue shadows
    age: float  # years; older: fainter ribs, larger brighter aortic knob (unfolding), darker (hyperinflated) lungs
    race: int  # 0..N_RACE-1; soft-tissue density level
    habitus: float  # 0..1 body width
    ctr: float  # normal cardiothoracic ratio
    texture_seed: int
    consolidation_site: tuple[float, float]  # (side sign-free offset u, v) of a consolidation within its lung


@dataclass
class Pose:
    angle: float = 0.0  # degrees, about the image centre
    tx: float = 0.0  # pixels
    ty: float = 0.0
    scale: float = 1.0

    def matrix(self, size: int) -> np.ndarray:
        """2x3 forward affine (phantom frame → image)."""
        c = (size - 1) / 2.0
        m = cv2.getRotationMatrix2D((c, c), self.angle, self.scale)
        m[:, 2] += (self.tx, self.ty)
        return m


@dataclass
class StudyState:
    findings: dict[str, FindingState] = field(default_factory=dict)

    def labels(self) -> dict[str, int]:
        return {f: int(self.findings.get(f, FindingState()).present) for f in SYNTHETIC_FINDINGS}


def load_lung_masks(size: int, cache_dir: str | Path | None = None) -> np.ndarray:
    """Real lung masks (bool, (N, size, size)) from torchxrayvision's wheel: keep those with two lungs of
    plausible area, resized to the phantom resolution. Decoding takes seconds, so the result is cached."""
    cached = Path(cache_dir) / f"lung_masks_{size}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        return np.load(cached)
    masks = _decode_lung_masks(size)
    if cached is not None:
        from bjexp.io import atomic_write

        with atomic_write(cached) as f:
            np.save(f, masks)
    return masks


@functools.lru_cache(maxsize=4)
def _decode_lung_masks(size: int) -> np.ndarray:
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")  # locate without importing (xrv silences warnings)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("torchxrayvision is not installed; its wheel ships the lung masks the phantoms use")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "semantic_masks_v7labs_lungs.zip"
    if not path.is_file():
        raise FileNotFoundError(f"lung masks not found at {path} (reinstall torchxrayvision==1.5.7)")
    from concurrent.futures import ThreadPoolExecutor

    from bjexp.threads import allowed_cpus

    def decode(data: bytes) -> np.ndarray | None:  # OpenCV releases the GIL: the masks decode on every core
        a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        return None if a is None else cv2.resize((a > 127).astype(np.float32), (size, size),
                                                 interpolation=cv2.INTER_AREA) > 0.5

    with zipfile.ZipFile(path) as z:
        files = [z.read(n) for n in sorted(n for n in z.namelist() if not n.endswith("/"))]
    masks = []
    with ThreadPoolExecutor(allowed_cpus()) as pool:
        for a in pool.map(decode, files):
            if a is None:
                continue
            half = size // 2
            left, right = a[:, :half].mean(), a[:, half:].mean()
            if 0.15 < left < 0.55 and 0.15 < right < 0.55 and abs(left - right) < 0.12:
                masks.append(a)
    if len(masks) < 50:
        raise RuntimeError(f"only {len(masks)} usable lung masks in {path}")
    return np.stack(masks)


class PhantomRenderer:
    """Renders a study (anatomy + findings + pose) to a uint8 image. Deterministic given its inputs and rng."""

    def __init__(self, size: int, masks: np.ndarray):
        self.size = size
        self.masks = masks
        g = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        self.v, self.u = np.meshgrid(g, g, indexing="ij")
        self._side_cache: dict[int, tuple] = {}

    def _lung_geometry(self, idx: int):
        if idx not in self._side_cache:
            m = self.masks[idx].astype(np.float32)
            sides = {}
            for side, sign in SIDE_SIGN.items():
                s = m * ((self.u * sign) > 0)
                ys, xs = np.nonzero(s)
                box = (self.u[ys, xs].min(), self.u[ys, xs].max(), self.v[ys, xs].min(), self.v[ys, xs].max())
                sides[side] = (s, box)
            self._side_cache[idx] = (m, sides)
        return self._side_cache[idx]

    def _texture(self, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed).standard_normal((self.size, self.size)).astype(np.float32)
        t = cv2.GaussianBlur(r, (0, 0), self.size / 48)
        return t / (t.std() + 1e-6)

    def render(self, a: Anatomy, state: StudyState, pose: Pose, rng: np.random.Generator) -> np.ndarray:
        return self.expose(self.draw(a, state)[0], pose, rng)

    def study_masks(self, a: Anatomy, state: StudyState, pose: Pose) -> np.ndarray:
        return self.pack(self.draw(a, state)[1], pose)

    def expose(self, img: np.ndarray, pose: Pose, rng: np.random.Generator) -> np.ndarray:
        """Drawn intensities -> the uint8 image: gain and noise (the only randomness), then the pose."""
        img = img * rng.uniform(0.97, 1.03) + rng.normal(0, 0.012, img.shape).astype(np.float32)
        return (np.clip(self._warp(img, pose), 0, 1) * 255 + 0.5).astype(np.uint8)

    def pack(self, layers: dict[str, np.ndarray], pose: Pose) -> np.ndarray:
        """A study's masks as uint8 bit-planes (H, W) in the pose: bit i set where MASK_NAMES[i] is. Anatomy: the
        lung and heart shapes as drawn; a finding: where drawing it changes the intensity by at least FINDING_LEVEL."""
        bits = np.zeros((self.size, self.size), np.uint8)
        for i, name in enumerate(MASK_NAMES):
            if name in layers:
                w = self._warp(layers[name], pose)
                bits |= ((w > 0.5) if name in ANATOMY else (np.abs(w) >= FINDING_LEVEL)).astype(np.uint8) << i
        return bits

    def _warp(self, x: np.ndarray, pose: Pose) -> np.ndarray:
        return cv2.warpAffine(x.astype(np.float32), pose.matrix(self.size), (self.size, self.size),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def draw(self, a: Anatomy, state: StudyState) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Intensities in the phantom frame (before noise and pose) and the layers `pack` makes masks of: the
        anatomy's shapes (0/1) and each present finding's own contribution to the intensities. No randomness."""
        u, v, size = self.u, self.v, self.size
        lungs, sides = self._lung_geometry(a.mask_index)
        tex = self._texture(a.texture_seed)
        f = state.findings
        layers = {"Left lung": sides["L"][0], "Right lung": sides["R"][0]}

        body_a = 0.80 + 0.16 * a.habitus
        body = _soft((u / body_a) ** 2 + (v / 1.25) ** 2 < 1, size)
        img = body * (0.40 + 0.07 * a.race)

        # Pneumothorax: the lung collapses towards its hilum; the space left is dark and has no markings.
        lung_fields = {}
        ptx_space = np.zeros_like(u)
        for side, (s, (u0, u1, v0, v1)) in sides.items():
            st = f.get("Pneumothorax", FindingState())
            if st.present and st.side in (side, "B"):
                k = [0, 0.22, 0.32, 0.42][st.severity or 2]
                hilum = ((u0 + u1) / 2 * 0.6, (v0 + v1) / 2)
                collapsed = _scale_about(s, hilum, 1 - k, size)
                ptx_space = np.maximum(ptx_space, s * (1 - collapsed))
                lung_fields[side] = collapsed
            else:
                lung_fields[side] = s
        inflated = np.clip(lung_fields["L"] + lung_fields["R"], 0, 1)
        # Age: hyperinflation darkens the lung fields — a broad cue that survives the VAE's 8x downsampling.
        aged = (a.age - 20) / 70
        img = img - (0.26 + 0.10 * aged) * _blur(lungs, size) + 0.045 * tex * inflated
        img = img - 0.16 * ptx_space
        edge = np.clip(_blur(inflated, size, 0.6) - _blur(inflated, size, 2.0), 0, 1) * (ptx_space.max() > 0)
        img = img + 0.5 * edge * _blur(ptx_space, size, 2.0).clip(0, 1) * 2
        if f.get("Pneumothorax", FindingState()).present:
            unmarked = 0.045 * tex * (inflated - np.clip(sides["L"][0] + sides["R"][0], 0, 1))
            layers["Pneumothorax"] = unmarked - 0.16 * ptx_space + 0.5 * edge * _blur(ptx_space, size, 2.0).clip(0, 1) * 2

        # Ribs: bright arcs, fainter with age (bone density).
        rib_c = 0.08 * (1.25 - aged * 0.8)
        ribs = sum(np.exp(-(((v - (-0.75 + k * 0.16) - 0.22 * u ** 2) / 0.035) ** 2)) for k in range(9))
        img = img + rib_c * ribs * _blur(lungs, size)

        # Heart (cardiomegaly widens it) and aortic knob (unfolds and calcifies with age).
        cm = f.get("Cardiomegaly", FindingState())
        ctr = a.ctr + ([0, 0.10, 0.15, 0.20][cm.severity or 2] if cm.present else 0.0)
        shape = lambda ratio: ((u - 0.07) / (ratio * body_a)) ** 2 + ((v - 0.20) / 0.25) ** 2 < 1  # noqa: E731
        heart = _soft(shape(ctr), size)
        img = img + 0.32 * heart
        layers["Heart"] = shape(ctr).astype(np.float32)
        if cm.present:
            layers["Cardiomegaly"] = 0.32 * (heart - _soft(shape(a.ctr), size))
        knob = _soft(((u - 0.10) / (0.06 + 0.06 * aged)) ** 2 + ((v + 0.28) / (0.05 + 0.04 * aged)) ** 2 < 1, size)
        img = img + (0.08 + 0.22 * aged) * knob
        if a.sex == 1:
            breasts = sum(_soft(((u - sgn * 0.45) / 0.30) ** 2 + ((v - 0.50) / 0.20) ** 2 < 1, size, 2.5)
                          for sgn in (-1, 1))
            img = img + 0.10 * breasts

        # Effusion: dependent fluid with a meniscus (higher laterally), blunting the costophrenic angle.
        ef = f.get("Effusion", FindingState())
        if ef.present:
            layers["Effusion"] = np.zeros_like(u)
            for side, (s, (u0, u1, v0, v1)) in sides.items():
                if ef.side in (side, "B"):
                    h = [0, 0.26, 0.38, 0.52][ef.severity or 2] * (v1 - v0)
                    lateral = np.abs(u - (u0 + u1) / 2) / max(u1 - u0, 1e-3)
                    fluid = (v > v1 - h * (0.55 + 0.9 * lateral)).astype(np.float32) * s
                    drawn = 0.40 * _blur(fluid, size, 1.0)
                    img = img + drawn
                    layers["Effusion"] = layers["Effusion"] + drawn

        # Consolidation: a patchy focal opacity in one lung, at a per-patient site.
        co = f.get("Consolidation", FindingState())
        if co.present:
            s, (u0, u1, v0, v1) = sides[co.side or "R"]
            cu = (u0 + u1) / 2 + a.consolidation_site[0] * (u1 - u0) * 0.25
            cv = v0 + (0.45 + 0.3 * a.consolidation_site[1]) * (v1 - v0)
            r = [0, 0.16, 0.21, 0.27][co.severity or 2]
            blob = np.exp(-(((u - cu) ** 2 + (v - cv) ** 2) / (2 * r ** 2))) * (1 + 0.25 * tex)
            layers["Consolidation"] = drawn = 0.38 * np.clip(blob, 0, 1.2) * lung_fields[co.side or "R"]
            img = img + drawn

        # Edema: bilateral perihilar (bat-wing) haze.
        ed = f.get("Edema", FindingState())
        if ed.present:
            k = ed.severity or 2
            haze = sum(np.exp(-(((u - sgn * 0.22) / (0.22 + 0.05 * k)) ** 2 + ((v + 0.02) / 0.35) ** 2))
                       for sgn in (-1, 1))
            layers["Edema"] = drawn = (0.07 + 0.045 * k) * haze * inflated
            img = img + drawn
        return img, layers


def _blur(x: np.ndarray, size: int, px: float = 1.0) -> np.ndarray:
    return cv2.GaussianBlur(x.astype(np.float32), (0, 0), max(px * size / 64, 0.3))


def _soft(mask: np.ndarray, size: int, px: float = 0.8) -> np.ndarray:
    return _blur(mask.astype(np.float32), size, px)


def _scale_about(m: np.ndarray, centre_uv: tuple[float, float], k: float, size: int) -> np.ndarray:
    c = ((centre_uv[0] + 1) / 2 * size - 0.5, (centre_uv[1] + 1) / 2 * size - 0.5)
    mat = cv2.getRotationMatrix2D(c, 0.0, k)
    return cv2.warpAffine(m.astype(np.float32), mat, (size, size), flags=cv2.INTER_LINEAR)


def unpack(bits: np.ndarray, name: str) -> np.ndarray:
    """One mask (bool) out of uint8 bit-planes (PhantomRenderer.pack, stored as PNG beside the images)."""
    return (np.asarray(bits) >> MASK_NAMES.index(name) & 1).astype(bool)
