"""The miniature world's general domain: synthetic non-CXR scenes (shapes on textured backgrounds), with captions
(for a tiny text-to-image model, the stand-in for Stable Diffusion) and (before, instruction, after) edits (for a
tiny InstructPix2Pix). They exist so that the zero-shot baselines mean in miniature what they mean in the paper:
models pretrained on *other* images, applied to chest X-rays they never saw. Grey, like the phantoms.

A scene is 1-3 shapes (distinct kinds, distinct places) on a background; an edit changes one thing (add, remove,
resize or re-shade a shape, or change the background texture) and keeps everything else, texture phase and
jitter included, as the prompt-to-prompt pairs InstructPix2Pix was trained on do.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle", "ring", "cross")
SIZES = {"small": 0.11, "large": 0.2}  # half-extent, as a fraction of the image size
SHADES = {"dark": 25, "bright": 235}
PLACES = {"top left": (0.28, 0.28), "top right": (0.72, 0.28), "bottom left": (0.28, 0.72),
          "bottom right": (0.72, 0.72), "centre": (0.5, 0.5)}
BACKGROUNDS = ("plain", "striped", "checkered", "dotted", "cloudy")
TONES = {"dark": 80, "light": 165}


@dataclass(frozen=True)
class Shape:
    kind: str
    size: str
    shade: str
    place: str

    def words(self) -> str:
        return f"a {self.size} {self.shade} {self.kind} at the {self.place}" if self.place != "centre" \
            else f"a {self.size} {self.shade} {self.kind} in the centre"


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background: str
    tone: str
    seed: int  # texture phase and position jitter: kept by an edit

    def caption(self) -> str:
        return " and ".join(s.words() for s in self.shapes) + f" on a {self.tone} {self.background} background"


def random_shape(rng: np.random.Generator, taken: set[str], places: set[str]) -> Shape:
    kind = rng.choice([k for k in SHAPES if k not in taken])
    place = rng.choice([p for p in PLACES if p not in places])
    return Shape(str(kind), str(rng.choice(list(SIZES))), str(rng.choice(list(SHADES))), str(place))


def random_scene(rng: np.random.Generator) -> Scene:
    shapes: list[Shape] = []
    for _ in range(int(rng.integers(1, 4))):
        shapes.append(random_shape(rng, {s.kind for s in shapes}, {s.place for s in shapes}))
    return Scene(tuple(shapes), str(rng.choice(BACKGROUNDS)), str(rng.choice(list(TONES))),
                 int(rng.integers(2**31)))


def random_edit(scene: Scene, rng: np.random.Generator) -> tuple[str, Scene]:
    """(instruction, edited scene): one change, everything else kept."""
    ops = ["add", "background"] + (["remove", "resize", "shade"] if scene.shapes else [])
    if len(scene.shapes) == 1:
        ops.remove("remove")  # keep at least one shape
    if len(scene.shapes) == 3:
        ops.remove("add")
    op = str(rng.choice(ops))
    shapes = list(scene.shapes)
    if op == "add":
        new = random_shape(rng, {s.kind for s in shapes}, {s.place for s in shapes})
        text = f"add {new.words()}"
        shapes.append(new)
    elif op == "background":
        bg = str(rng.choice([b for b in BACKGROUNDS if b != scene.background]))
        return f"make the background {bg}", dataclasses.replace(scene, background=bg)
    else:
        i = int(rng.integers(len(shapes)))
        s = shapes[i]
        if op == "remove":
            text = f"remove the {s.kind}"
            del shapes[i]
        elif op == "resize":
            size = "small" if s.size == "large" else "large"
            text = f"make the {s.kind} {'smaller' if size == 'small' else 'larger'}"
            shapes[i] = dataclasses.replace(s, size=size)
        else:
            shade = "dark" if s.shade == "bright" else "bright"
            text = f"make the {s.kind} {shade}"
            shapes[i] = dataclasses.replace(s, shade=shade)
    return text, dataclasses.replace(scene, shapes=tuple(shapes))


def _background(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    v, u = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base, amp = TONES[scene.tone], 28.0
    phase, freq, angle = rng.uniform(0, 2 * np.pi), rng.uniform(5, 9), rng.uniform(0, np.pi)
    along = u * np.cos(angle) + v * np.sin(angle)
    if scene.background == "plain":
        tex = np.zeros_like(u)
    elif scene.background == "striped":
        tex = np.sign(np.sin(2 * np.pi * freq * along + phase))
    elif scene.background == "checkered":
        tex = np.sign(np.sin(2 * np.pi * freq / 1.5 * u + phase) * np.sin(2 * np.pi * freq / 1.5 * v + phase))
    elif scene.background == "dotted":
        cell = 1.0 / freq
        du, dv = (u + phase / 10) % cell - cell / 2, (v + phase / 10) % cell - cell / 2
        tex = np.where(du ** 2 + dv ** 2 < (0.3 * cell) ** 2, 1.0, -0.4)
    else:  # cloudy: smooth noise
        tex = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), size / 12)
        tex /= np.abs(tex).max() + 1e-6
    return base + amp * tex


def render(scene: Scene, size: int) -> np.ndarray:
    """uint8 (size, size) grey image of the scene (deterministic in the scene, including its seed)."""
    rng = np.random.default_rng(scene.seed)
    jitter = rng.uniform(-0.04, 0.04, (len(PLACES), 2))  # per place (drawn first): an edit elsewhere moves nothing
    img = _background(scene, size, rng)
    for s in scene.shapes:
        j = jitter[list(PLACES).index(s.place)]
        cx, cy = (np.asarray(PLACES[s.place]) + j) * size
        r = SIZES[s.size] * size
        mask = np.zeros((size, size), np.uint8)
        c = (int(round(cx * 4)), int(round(cy * 4)))  # 2 fractional bits: sub-pixel, anti-aliased edges
        ri = int(round(r * 4))
        if s.kind == "circle":
            cv2.circle(mask, c, ri, 255, -1, cv2.LINE_AA, shift=2)
        elif s.kind == "ring":
            cv2.circle(mask, c, int(round(r * 3.2)), 255, max(2, int(r * 0.45)), cv2.LINE_AA, shift=2)
        elif s.kind == "square":
            k = int(round(r * 0.85 * 4))
            pts = np.array([[c[0] - k, c[1] - k], [c[0] + k, c[1] - k], [c[0] + k, c[1] + k], [c[0] - k, c[1] + k]])
            cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, shift=2)
        elif s.kind == "triangle":
            pts = np.array([[c[0], c[1] - ri], [c[0] + int(ri * 0.95), c[1] + int(ri * 0.7)],
                            [c[0] - int(ri * 0.95), c[1] + int(ri * 0.7)]])
            cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, shift=2)
        else:  # cross
            w = max(1, int(round(r * 0.35)))
            cv2.rectangle(mask, (int(cx - r), int(cy - w)), (int(cx + r), int(cy + w)), 255, -1, cv2.LINE_AA)
            cv2.rectangle(mask, (int(cx - w), int(cy - r)), (int(cx + w), int(cy + r)), 255, -1, cv2.LINE_AA)
        a = mask.astype(np.float32) / 255.0
        img = img * (1 - a) + SHADES[s.shade] * a
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def captioned(n: int, size: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """`n` scenes: uint8 images (n, size, size) and their captions."""
    rng = np.random.default_rng([seed, 0])
    scenes = [random_scene(rng) for _ in range(n)]
    return np.stack([render(s, size) for s in scenes]), [s.caption() for s in scenes]


def edits(n: int, size: int, seed: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """`n` (before, instruction, after) triples: uint8 befores (n, size, size), instructions, uint8 afters."""
    rng = np.random.default_rng([seed, 1])
    before, texts, after = [], [], []
    for _ in range(n):
        scene = random_scene(rng)
        text, edited = random_edit(scene, rng)
        before.append(render(scene, size))
        texts.append(text)
        after.append(render(edited, size))
    return np.stack(before), texts, np.stack(after)
