"""The miniature world's stand-in for torchxrayvision's classifiers: one small CNN predicting the five findings
and the identity traits (sex, race-like class, age), trained on independent synthetic studies with ground truth
(classifier.npz from the data cache), cached, with its held-out accuracy recorded next to it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from bjexp import threads
from bjexp.data.phantom import N_RACE
from bjexp.eval.metrics import Predictions
from bjexp.imaging import uint8_to_model
from bjexp.eval.trained_nets import is_saved, load_net, save_net
from bjexp.errors import ConfigError
from bjexp.io import build_once, config_hash
from bjexp.progress import progress

AGE_MEAN, AGE_STD = 55.0, 20.0


class SyntheticCXRNet(nn.Module):
    def __init__(self, n_findings: int, width: int = 32):
        super().__init__()
        w = width
        # Strided blocks: cheap enough to train in about a minute on a laptop CPU.
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, stride=2, padding=1), nn.BatchNorm2d(o), nn.ReLU(),  # noqa: E731
                                           nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())
        self.features = nn.Sequential(block(1, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 4 * w),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16 * w, n_findings + 1 + N_RACE + 1)
        self.n_findings = n_findings

    def forward(self, x):
        f = self.features(x)
        return self.head(f), f


class SyntheticPredictor:
    """Predictor protocol (bjexp.eval.metrics) over a trained SyntheticCXRNet."""
    name = "synthetic_cnn"

    def __init__(self, net: SyntheticCXRNet, findings: tuple[str, ...], version: str, batch_size: int = 256):
        self.net, self.findings, self.version, self.batch_size = net.eval(), tuple(findings), version, batch_size

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> Predictions:
        outs, feats = [], []
        for i in range(0, len(images), self.batch_size):
            o, f = self.net(uint8_to_model(images[i:i + self.batch_size]))
            outs.append(o)
            feats.append(f)
        o, f = torch.cat(outs), torch.cat(feats)
        k = self.net.n_findings
        probs = torch.sigmoid(o[:, :k]).numpy()
        return Predictions(findings={n: probs[:, j] for j, n in enumerate(self.findings)},
                           sex=torch.sigmoid(o[:, k]).numpy(), race=torch.softmax(o[:, k + 1:k + 1 + N_RACE], 1).numpy(),
                           age=(o[:, -1] * AGE_STD + AGE_MEAN).numpy(), features=f.numpy())


def _loss(o, y, attrs, k):
    return (F.binary_cross_entropy_with_logits(o[:, :k], y.float()) + F.binary_cross_entropy_with_logits(o[:, k], attrs[:, 0])
            + F.cross_entropy(o[:, k + 1:k + 1 + N_RACE], attrs[:, 2].long())
            + F.mse_loss(o[:, -1], (attrs[:, 1] - AGE_MEAN) / AGE_STD))


def train_classifier(npz_path: Path, ccfg, cache_dir: Path, seed: int = 0) -> Path:
    data = np.load(npz_path)
    key = config_hash(ccfg, seed, Path(npz_path).parent.name)
    out = Path(cache_dir) / "classifier" / f"synthetic-{key}"
    with threads.pinned():  # the same net on any machine; one sweep job trains, the others wait and reuse it
        return build_once(out, lambda tmp: _train_classifier(data, ccfg, seed, key, tmp), lambda: is_saved(out))


def _train_classifier(data, ccfg, seed: int, key: str, into: Path) -> None:
    images, labels, attrs = data["images"], data["labels"], data["attrs"]
    findings = tuple(str(f) for f in data["findings"])
    n_test = len(images) // 5
    x = uint8_to_model(images)
    y, a = torch.from_numpy(labels), torch.from_numpy(attrs)
    torch.manual_seed(seed)
    net = SyntheticCXRNet(len(findings), ccfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=ccfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=ccfg.lr, total_steps=ccfg.steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    with progress() as bar:
        task = bar.add_task("train synthetic classifier", total=ccfg.steps)
        for _ in range(ccfg.steps):
            idx = n_test + torch.randint(len(images) - n_test, (ccfg.batch_size,), generator=g)
            o, _ = net(x[idx])
            loss = _loss(o, y[idx], a[idx], len(findings))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.advance(task)
    pred = SyntheticPredictor(net, findings, key).predict(images[:n_test])
    from bjexp.eval import stats

    report = {"held_out_images": n_test,
              "accuracy": {f: stats.accuracy(pred.findings[f] >= 0.5, labels[:n_test, j] == 1) for j, f in enumerate(findings)},
              "auroc": {f: stats.auroc(pred.findings[f], labels[:n_test, j]) for j, f in enumerate(findings)},
              "sex_accuracy": stats.accuracy(pred.sex >= 0.5, attrs[:n_test, 0] == 1),
              "race_auroc": stats.multiclass_auroc(pred.race, attrs[:n_test, 2]),
              "age_r": stats.pearson_r(pred.age, attrs[:n_test, 1]),
              "age_mae_years": float(np.abs(pred.age - attrs[:n_test, 1]).mean())}
    save_net(into, net, {"findings": findings, "width": ccfg.width}, report)


def load_predictor(path: str | Path | None = None, world: Any = None, training: Any = None,
                   cache_dir: str | Path | None = None, seed: int = 0) -> SyntheticPredictor:
    """`eval.predictor` of the miniature world: the classifier saved at `path`, else the one trained (once, cached
    under `cache_dir`) with `training` (eval.classifier) on the held-out studies of the world whose `data:` config
    is `world`."""
    if path is None:
        if world is None or training is None or cache_dir is None:
            raise ConfigError("eval.predictor: give `path` (a saved classifier) or `world`, `training` and `cache_dir` "
                             "(conf/eval/synthetic.yaml)")
        from bjexp.data.synthetic import world_folder

        path = train_classifier(world_folder(world, cache_dir) / "classifier.npz", OmegaConf.create(training),
                                Path(cache_dir), seed)
    net, cfg, _ = load_net(path, lambda c: SyntheticCXRNet(len(c["findings"]), c["width"]))
    return SyntheticPredictor(net, tuple(cfg["findings"]), Path(path).name)
