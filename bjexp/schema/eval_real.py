"""Real-world evaluation schema (`eval=real`): torchxrayvision classifiers + torch-fidelity FID, offline.

The miniature world's `eval=synthetic` fields (EvalConfig: name, predictor, findings, uncertain, n_bootstrap,
max_pairs, grid_pairs, metrics) with the real defaults, plus how FID is computed, and where the weights and the
reference caches live.
docs/evaluation.md explains every default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from bjexp.schema.model import EvalConfig

# The five most prevalent CheXpert findings of MIMIC-CXR (xrv names), all predicted by every non-MIMIC DenseNet
# that has them: densenet121-res224-chex predicts all five (nih/pc lack Lung Opacity).
REAL_FINDINGS = ["Effusion", "Lung Opacity", "Atelectasis", "Cardiomegaly", "Edema"]


def _predictor() -> dict:
    return {
        "_target_": "bjexp.eval.xrv.XRVPredictor",
        # Not trained on MIMIC (no test-patient leakage); CheXpert labels = the labeler behind MIMIC-CXR-JPG's labels.
        # `all`, `mimic_ch`, `mimic_nb` include MIMIC patients from a random split: report them only beside `chex`.
        "weights": "densenet121-res224-chex",
        "cache_dir": "${eval.weights_dir}",
        "findings": "${eval.findings}",
        "race": True, "age": True, "sex": True, "identity": True,
        "sex_positive": "Female",  # attr_sex == 1 means female
        "batch_size": 32,
        "device": "auto",
        "verify_checksums": "${eval.verify_checksums}",
        "progress": True,
    }


def _segmenter() -> dict:
    # torchxrayvision's ChestX-Det PSPNet (14 structures; lungs and heart used), from the local weights file.
    return {"_target_": "bjexp.eval.segmenter.chestx_det",
            "weights": "${eval.weights_dir}/pspnet_chestxray_best_model_4.pth", "device": "auto", "batch_size": 4}


@dataclass
class FIDSettings:
    # torch-fidelity feature extractors: Inception (the standard FID) and the CXR-domain one (xrv DenseNet features2).
    extractors: list[str] = field(default_factory=lambda: ["inception-v3-compat", "xrv-densenet121-features2"])
    # Fixed N (first N pairs of the scored split, same pairs on both sides); null = all scored pairs.
    n: Optional[int] = None
    inception_weights: str = "${paths.assets_dir}/torch-fidelity/weights-inception-2015-12-05-6726825d.pth"
    xrv_weights: str = "${eval.predictor.weights}"
    batch_size: int = 32


@dataclass
class RealEvalConfig(EvalConfig):
    name: str = "real"
    predictor: dict[str, Any] = field(default_factory=_predictor)
    segmenter: dict[str, Any] = field(default_factory=_segmenter)
    findings: list[str] = field(default_factory=lambda: list(REAL_FINDINGS))
    # uncertain (EvalConfig): CheXpert -1 labels are excluded from that finding's AUROC/accuracy by default,
    # or counted positive/negative. Blank labels are always excluded.
    # How FID is computed (the `fid` metric of eval.metrics, conf/eval/real.yaml).
    fid_settings: FIDSettings = field(default_factory=FIDSettings)
    # Local weights (xrv file names, as ~/.torchxrayvision/models_data); `python -m bjexp.assets fetch eval` fills it.
    weights_dir: str = "${paths.assets_dir}/xrv"
    verify_checksums: bool = True
    # Reference-side caches shared by every run of a sweep: classifier outputs on the real current/prior images
    # (predictions/) and FID reference statistics (fid/).
    cache_dir: str = "${paths.cache_dir}/eval"
    cache_reference: bool = True


cs = ConfigStore.instance()
cs.store(group="eval", name="base_real", node=RealEvalConfig)
