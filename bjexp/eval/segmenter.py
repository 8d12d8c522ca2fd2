"""Anatomy segmenters for Table 4 (and edit locality): images -> lung and heart masks, one protocol, two worlds.

- Miniature world: a small U-Net trained on the classifier's independent phantom studies against the phantom's
  exact anatomy masks (`classifier.npz` `masks`), cached like the classifier, with its own held-out Dice recorded
  beside it (`report.json`).
- Real world: torchxrayvision's ChestX-Det PSPNet (`baseline_models.chestx_det.PSPNet`, 14 structures, 512 px)
  from a local weights file; a missing file is a MissingWeightsError naming the path and the fetch command.

`eval.segmenter` = {_target_: a factory (run_cfg, **options) -> Segmenter}: the factory gets the run's config (the
synthetic one finds its world and cache there).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bjexp import assets, threads
from bjexp.imaging import uint8_to_model, uint8_to_xrv
from bjexp.eval.trained_nets import is_saved, load_net, save_net
from bjexp.io import build_once, config_hash
from bjexp.progress import progress

STRUCTURES = ("Left lung", "Right lung", "Heart")  # the patient's left lung is on the image's right
CHESTX_DET_FILE = assets.get("chestx_det").file  # part of `python -m bjexp.assets fetch eval`
CHESTX_DET_TARGETS = {"Left lung": "Left Lung", "Right lung": "Right Lung", "Heart": "Heart"}


class Segmenter(Protocol):
    name: str
    version: str
    structures: tuple[str, ...]

    def segment(self, images: np.ndarray) -> np.ndarray:
        """uint8 grey (N, H, W) -> bool (N, len(structures), H, W) at the images' size."""
        ...


def build(spec: Any, run_cfg: Any) -> Segmenter:
    """`eval.segmenter` -> a Segmenter."""
    from omegaconf import DictConfig, OmegaConf

    from bjexp.instantiate import instantiate

    spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec or {})
    if "_target_" not in spec:
        raise ValueError("eval.segmenter is not set: the anatomy metrics need one ({_target_: a factory "
                         "(run_cfg, **options) -> Segmenter}; see conf/eval/synthetic.yaml, bjexp/schema/eval_real.py)")
    return instantiate(spec, run_cfg)


def dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dice per leading index of two bool mask stacks (..., H, W); NaN where both are empty."""
    a, b = a.reshape(*a.shape[:-2], -1), b.reshape(*b.shape[:-2], -1)
    inter, total = (a & b).sum(-1), a.sum(-1) + b.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * inter / np.maximum(total, 1), np.nan)


# ---------------------------------------------------------------------------------------------- miniature world
class TinyUNet(nn.Module):
    """A small U-Net working at half resolution (smooth organ shapes need no more): a strided stem, two more
    levels with skip connections, one logit per structure upsampled to the input size. Cheap on a CPU."""

    def __init__(self, n_out: int = len(STRUCTURES), width: int = 16):
        super().__init__()
        w = width
        conv = lambda i, o, s=1: nn.Sequential(nn.Conv2d(i, o, 3, stride=s, padding=1), nn.BatchNorm2d(o),  # noqa: E731
                                               nn.ReLU(), nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())
        self.e1, self.e2, self.e3 = conv(1, w, 2), conv(w, 2 * w, 2), conv(2 * w, 2 * w, 2)
        self.d2, self.d1 = conv(4 * w, 2 * w), conv(3 * w, w)
        self.out = nn.Conv2d(w, n_out, 1)

    def forward(self, x):
        e1 = self.e1(x)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        d2 = self.d2(torch.cat([F.interpolate(e3, size=e2.shape[-2:]), e2], 1))
        d1 = self.d1(torch.cat([F.interpolate(d2, size=e1.shape[-2:]), e1], 1))
        return F.interpolate(self.out(d1), size=x.shape[-2:], mode="bilinear", align_corners=False)


class SyntheticSegmenter:
    name = "synthetic_unet"

    def __init__(self, net: TinyUNet, version: str, batch_size: int = 256):
        self.net, self.version, self.batch_size = net.eval(), version, batch_size
        self.structures = STRUCTURES

    @torch.no_grad()
    def segment(self, images: np.ndarray) -> np.ndarray:
        out = [self.net(uint8_to_model(images[i:i + self.batch_size])) > 0
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(STRUCTURES), *images.shape[1:]), bool)


def anatomy_targets(masks: np.ndarray) -> np.ndarray:
    """Phantom bit-plane masks (N, H, W) -> bool (N, 3, H, W) in STRUCTURES order."""
    from bjexp.data.phantom import unpack

    return np.stack([unpack(masks, s) for s in STRUCTURES], axis=1)


def train_synthetic(npz_path: str | Path, cache_dir: str | Path, *, steps: int = 150, batch_size: int = 32,
                    lr: float = 3e-3, width: int = 16, seed: int = 0) -> Path:
    """Train (once, cached) the miniature world's segmenter on the classifier's studies; the first fifth is held
    out and its Dice per structure written to report.json."""
    key = config_hash(steps, batch_size, lr, width, seed, Path(npz_path).parent.name, "tiny-unet-v2")
    out = Path(cache_dir) / "segmenter" / f"synthetic-{key}"
    with threads.pinned():  # the same net on every machine; one builder at a time
        return build_once(out, lambda tmp: _train_segmenter(npz_path, tmp, key, steps, batch_size, lr, width, seed),
                          lambda: is_saved(out))


def _train_segmenter(npz_path, into: Path, key: str, steps: int, batch_size: int, lr: float, width: int,
                     seed: int) -> None:
    data = np.load(npz_path)
    if "masks" not in data.files:
        raise ValueError(f"{npz_path} has no masks: it was made by a miniature world before version 4")
    images, target = data["images"], anatomy_targets(data["masks"])
    n_test = len(images) // 5
    x, y = uint8_to_model(images), torch.from_numpy(target).float()
    torch.manual_seed(seed)
    net = TinyUNet(len(STRUCTURES), width)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    with progress() as bar:
        task = bar.add_task("train synthetic segmenter", total=steps)
        for _ in range(steps):
            idx = n_test + torch.randint(len(images) - n_test, (batch_size,), generator=g)
            logits = net(x[idx])
            p = torch.sigmoid(logits)
            soft_dice = 1 - (2 * (p * y[idx]).sum((2, 3)) + 1) / (p.sum((2, 3)) + y[idx].sum((2, 3)) + 1)
            loss = F.binary_cross_entropy_with_logits(logits, y[idx]) + soft_dice.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.advance(task)
    seg = SyntheticSegmenter(net, key).segment(images[:n_test])
    d = dice(seg, target[:n_test])
    report = {"held_out_images": n_test, "dice": {s: float(np.nanmean(d[:, j])) for j, s in enumerate(STRUCTURES)},
              "mean_dice": float(np.nanmean(d)), "steps": steps}
    save_net(into, net, {"structures": STRUCTURES, "width": width}, report)


def load_synthetic(path: str | Path) -> SyntheticSegmenter:
    net, _, report = load_net(path, lambda c: TinyUNet(len(c["structures"]), c["width"]))
    seg = SyntheticSegmenter(net, Path(path).name)
    seg.report = report
    return seg


def synthetic(run_cfg: Any, steps: int = 150, batch_size: int = 32, lr: float = 3e-3, width: int = 16):
    """`eval.segmenter` factory of the miniature world: trained on its own classifier studies (cached)."""
    from bjexp.data.synthetic import world_dir

    if run_cfg is None:
        raise ValueError("the synthetic segmenter needs the run's config (its world and cache folders)")
    path = train_synthetic(world_dir(run_cfg) / "classifier.npz", Path(run_cfg.paths.cache_dir), steps=steps,
                           batch_size=batch_size, lr=lr, width=width, seed=int(run_cfg.seed))
    return load_synthetic(path)


# ---------------------------------------------------------------------------------------------- real world
def load_chestx_det(weights: str | Path, device: str = "auto"):
    """torchxrayvision's ChestX-Det PSPNet with its weights from a local file (or the folder holding
    pspnet_chestxray_best_model_4.pth), through xrv's own constructor (which never downloads once the file
    is there)."""
    from bjexp.eval.xrv import import_xrv

    path = chestx_det_file(weights)
    import_xrv()
    import warnings

    with warnings.catch_warnings():
        from torchxrayvision.baseline_models.chestx_det import PSPNet
    with _as_xrv_file(path) as folder:
        model = PSPNet(cache_dir=str(folder))
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    return model.eval().to(dev)


def chestx_det_file(weights: str | Path, verify: bool = True) -> Path:
    """The weights file (a folder: its pspnet_chestxray_best_model_4.pth, checked by the assets registry; a file
    of another name: the user's own copy); MissingWeightsError naming the path and the fetch command if absent."""
    path = Path(os.path.expanduser(str(weights)))
    if path.is_file() and path.name != CHESTX_DET_FILE:
        return path
    folder = path.parent if path.name == CHESTX_DET_FILE else path
    return assets.require("chestx_det", folder=folder, verify=verify) / CHESTX_DET_FILE


@contextlib.contextmanager
def _as_xrv_file(path: Path):
    """A folder in which the weights carry xrv's file name (a link when the user's file is named otherwise)."""
    if path.name == CHESTX_DET_FILE:
        yield path.parent
        return
    with tempfile.TemporaryDirectory(prefix="bjexp-chestxdet-") as tmp:
        os.symlink(path.resolve(), Path(tmp) / CHESTX_DET_FILE)
        yield Path(tmp)


class ChestXDetSegmenter:
    """Lungs and heart from ChestX-Det's 14 structures: sigmoid > 0.5 at 512 px, resized back (bilinear on the
    probabilities) to the images' size."""
    name = "xrv:chestx_det_pspnet"

    def __init__(self, weights: str | Path, device: str = "auto", batch_size: int = 4):
        self.model = load_chestx_det(weights, device)
        self.device = next(self.model.parameters()).device
        self.batch_size = batch_size
        self.structures = STRUCTURES
        self.index = [self.model.targets.index(CHESTX_DET_TARGETS[s]) for s in STRUCTURES]
        self.file = chestx_det_file(weights)
        self.version = assets.sha256(self.file)[:16]

    @torch.inference_mode()
    def segment(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch_size):
            x = uint8_to_xrv(torch.as_tensor(images[i:i + self.batch_size])).unsqueeze(1).to(self.device)
            p = torch.sigmoid(self.model(x)[:, self.index])
            out.append((F.interpolate(p, size=images.shape[1:], mode="bilinear") > 0.5).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(STRUCTURES), *images.shape[1:]), bool)


def chestx_det(run_cfg: Any, weights: str, device: str = "auto", batch_size: int = 4) -> ChestXDetSegmenter:
    """`eval.segmenter` factory of the real world."""
    return ChestXDetSegmenter(weights, device, batch_size)
