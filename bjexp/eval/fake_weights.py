"""Random-initialised evaluation weights at the exact file names and formats the real loaders expect.

For tests and benchmarks only: the files then go through the real torchxrayvision / torch-fidelity loading code
(pickled DenseNet module, DataParallel ResNet34 state dict, TorchScript age model, Lightning-style sex checkpoint,
Inception state dict), so everything but the learned numbers is the real code path. Never for reported results.
"""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
import torch.nn as nn
import torchvision

from bjexp.eval import assets
from bjexp.eval.xrv import full_weights_name, import_xrv


class _TinyAge(nn.Module):
    """Stand-in for the SENet154 age model: same call signature ((N,3,320,320) -> (N,1)), a fraction of the cost."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 7, stride=4)
        self.fc = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3))) * 10 + 60


def write_xrv(folder: str | Path, *, weights: str = "densenet121-res224-chex", age_arch: str = "tiny",
              seed: int = 0) -> dict[str, Path]:
    """Write DenseNet `weights`, race, age and sex files into `folder`; returns {role: path}."""
    xrv = import_xrv()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    weights = full_weights_name(weights)
    out = {"pathology": folder / assets.get(weights).filename, "race": folder / assets.get("race").filename,
           "age": folder / assets.get("age").filename, "sex": folder / assets.get("sex").filename}
    # xrv DenseNet files are whole pickled modules (xrv loads them with weights_only=False and copies state_dict).
    torch.save(xrv.models.DenseNet(num_classes=18).eval(), out["pathology"])
    # RaceModel: a DataParallel-wrapped ResNet34 state dict (keys 'module.*'), 3 classes, LogSoftmax head.
    race = torchvision.models.resnet34(weights=None)
    race.fc = nn.Sequential(nn.Linear(512, 3), nn.LogSoftmax(dim=1))
    torch.save(nn.DataParallel(race).state_dict(), out["race"])
    # AgeModel: a TorchScript file (torch.jit.load). 'senet154' gives the real architecture's cost (timm).
    if age_arch == "senet154":
        import timm
        age = timm.create_model("legacy_senet154", num_classes=1, pretrained=False).eval()
        torch.jit.save(torch.jit.trace(age, torch.zeros(1, 3, 320, 320)), str(out["age"]))
    else:
        torch.jit.save(torch.jit.script(_TinyAge().eval()), str(out["age"]))
    # SexModel: Lightning checkpoint, keys prefixed 'model.'.
    sex = torchvision.models.resnet34(weights=None)
    sex.fc = nn.Linear(512, 2)
    torch.save({"state_dict": {f"model.{k}": v for k, v in sex.state_dict().items()}}, out["sex"])
    return out


def write_inception(folder: str | Path, seed: int = 0) -> Path:
    """A random state dict for torch-fidelity's `inception-v3-compat`, at its published file name."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = Path(folder) / assets.get("inception").filename
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    # Its constructor always loads weights; skip that once to obtain the randomly initialised module.
    with mock.patch("torch.load", return_value={}), \
            mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="-")
    torch.save(net.state_dict(), path)
    return path


def write_chestx_det(folder: str | Path, seed: int = 0) -> Path:
    """Random ChestX-Det PSPNet weights as xrv ships them: a DataParallel state dict ('module.*' keys) saved with
    torch.save, at its release file name. The architecture is fixed (68 M parameters), so the file is full size;
    the tensors are drawn directly (no model is initialised), BatchNorm statistics neutral."""
    import warnings

    from bjexp.eval.segmenter import CHESTX_DET_FILE

    import_xrv()
    with warnings.catch_warnings():
        from torchxrayvision.baseline_models.chestx_det.ptsemseg.pspnet import pspnet

    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in pspnet(14).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, (shape, dtype) in shapes.items():
        if k.endswith("running_var"):
            t = torch.ones(shape)
        elif k.endswith(("running_mean", "bias")):
            t = torch.zeros(shape)
        elif k.endswith("num_batches_tracked"):
            t = torch.zeros(shape, dtype=dtype)
        elif len(shape) == 1:  # BatchNorm scale
            t = torch.ones(shape)
        else:
            t = torch.randn(shape, generator=g) * (2.0 / max(1, shape[1:].numel())) ** 0.5
        state[f"module.{k}"] = t
    path = Path(folder) / CHESTX_DET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
