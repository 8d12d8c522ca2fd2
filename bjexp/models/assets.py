"""Offline-first weights: the registry of real assets and the one error for a missing one.

Each asset is a folder under `paths.assets_dir`, filled by `python -m bjexp.assets fetch NAME` when online
(huggingface_hub snapshots, sha256 recorded in `<folder>/bjexp-asset.json`) or by hand. A run whose weights are
missing fails at build time with `MissingWeightsError` naming the path to fill and the fetch command.
Evaluation weights (xrv classifiers, Inception) are registered by `bjexp.eval.assets` when that module exists.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

RECORD = "bjexp-asset.json"


class MissingWeightsError(FileNotFoundError):
    def __init__(self, what: str, detail: str = "", fetch: str = "python -m bjexp.assets fetch <name>"):
        msg = f"missing weights: {what}" + (f" ({detail})" if detail else "")
        msg += f". Fill that path, or fetch it when online: `{fetch}` (see `python -m bjexp.assets list`)."
        super().__init__(msg)


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    allow_patterns: tuple[str, ...]
    revision: str = "main"


@dataclass(frozen=True)
class UrlFile:
    relpath: str  # relative to the asset's folder
    url: str
    sha256: str | None = None
    sha256_prefix: str | None = None

    def matches(self, path: Path) -> bool | None:
        """True/False against the published checksum; None when none is published."""
        if not (self.sha256 or self.sha256_prefix):
            return None
        d = sha256(path)
        return d == self.sha256 if self.sha256 else d.startswith(self.sha256_prefix)


@dataclass(frozen=True)
class Asset:
    name: str
    folder: str  # relative to paths.assets_dir
    description: str
    required: tuple[str, ...]  # files that must exist (relative to the folder); any entry may be "a|b" (either)
    enables: str  # the runs it makes possible (config overrides)
    sources: tuple[HubSource, ...] = field(default_factory=tuple)
    urls: tuple[UrlFile, ...] = field(default_factory=tuple)  # direct downloads (evaluation weights)
    fetch_hint: str = ""  # for assets not on a hub: how to obtain them
    optional: bool = False  # alternatives no default run needs (listed, never reported as missing)

    def path(self, assets_dir: str | Path) -> Path:
        return Path(assets_dir) / self.folder

    def missing(self, assets_dir: str | Path) -> list[str]:
        root = self.path(assets_dir)
        return [r for r in self.required if not any((root / alt).is_file() for alt in r.split("|"))]

    @property
    def fetch_command(self) -> str:
        return f"python -m bjexp.assets fetch {self.name}"


_SD15_FILES = ("model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
               "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
               "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json", "unet/config.json",
               "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors")
# What a complete folder needs (a tokenizer saved by recent transformers is tokenizer.json alone).
_SD15_REQUIRED = tuple(f for f in _SD15_FILES if f.startswith(("model_index", "scheduler", "text_encoder", "unet", "vae"))) \
    + ("tokenizer/tokenizer_config.json", "tokenizer/tokenizer.json|tokenizer/merges.txt")
_BERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"

ASSETS: dict[str, Asset] = {a.name: a for a in [
    Asset("sd15", "stable-diffusion-v1-5",
          "Stable Diffusion 1.5 (diffusers format): UNet, VAE, CLIP ViT-L/14 text encoder + tokenizer (fp32 safetensors)",
          _SD15_REQUIRED, "model=sd15 (any encoder); encoder=clip with model=sd15",
          (HubSource("stable-diffusion-v1-5/stable-diffusion-v1-5", _SD15_FILES),)),
    Asset("instructpix2pix", "instruct-pix2pix",
          "InstructPix2Pix (diffusers folder, timbrooks/instruct-pix2pix): 8-channel UNet, VAE, CLIP ViT-L/14 text "
          "encoder + tokenizer, Euler-ancestral scheduler config",
          _SD15_REQUIRED, "method=instructpix2pix, method=instructpix2pix_ft (model=sd15)",
          (HubSource("timbrooks/instruct-pix2pix", _SD15_FILES),)),
    Asset("roentgen", "roentgen",
          "RoentGen (Chambon et al.): Stable Diffusion fine-tuned on MIMIC-CXR impressions, diffusers folder",
          _SD15_REQUIRED, "method=roentgen_pretrained (model=sd15)",
          fetch_hint="RoentGen's weights are distributed by Stanford AIMI to MIMIC-credentialed users, not by a hub: "
                     "request them via https://stanfordmimi.github.io/RoentGen/ and unpack the diffusers folder "
                     "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) into this path"),
    Asset("biomedclip", "biomedclip",
          "BiomedCLIP (open_clip local-dir): PubMedBERT text tower, 256 tokens, 768-d; BERT config + WordPiece vocab",
          ("open_clip_config.json", "open_clip_pytorch_model.bin|open_clip_model.safetensors", "config.json",
           "vocab.txt", "tokenizer_config.json"),
          "encoder=biomedclip with model=sd15",
          (HubSource("microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
                     ("open_clip_config.json", "open_clip_pytorch_model.bin")),
           HubSource(_BERT, ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")))),
]}


def _eval_assets() -> list[Asset]:
    """`eval` (the default evaluation weights: xrv classifiers + Inception) and each optional xrv classifier,
    from bjexp.eval.assets.EVAL_ASSETS (direct URL downloads with published checksums)."""
    try:
        from bjexp.eval import assets as ev
    except ImportError:
        return []
    items = list(getattr(ev, "EVAL_ASSETS", {}).values())

    def asset(name, group, description, enables):
        return Asset(name, ".", description, tuple(a.relpath for a in group), enables,
                     urls=tuple(UrlFile(a.relpath, a.url, a.sha256, a.sha256_prefix) for a in group))
    out = [asset("eval", [a for a in items if a.default], "evaluation weights: " +
                 ", ".join(a.name for a in items if a.default), "eval on real images (pathology/race/age/sex, FID)")]
    out += [dataclasses.replace(asset(a.name, [a], a.description, f"optional evaluation classifier {a.name}"),
                                optional=True) for a in items if not a.default]
    return out


def registry() -> dict[str, Asset]:
    """Model assets plus evaluation assets (when bjexp.eval.assets is present)."""
    out = dict(ASSETS)
    for a in _eval_assets():
        out.setdefault(a.name, a)
    return out


def get(name: str) -> Asset:
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(sorted(reg))}")
    return reg[name]


def require(name: str, assets_dir: str | Path) -> Path:
    """The asset's folder, or MissingWeightsError naming the missing files and the fetch command."""
    a = get(name)
    missing = a.missing(assets_dir)
    if missing:
        raise MissingWeightsError(str(a.path(assets_dir)), f"{a.description}; missing: {', '.join(missing)}",
                                  fetch=a.fetch_command)
    return a.path(assets_dir)


def require_folder(name: str, folder: str | Path) -> Path:
    """A user-given folder checked against asset `name`'s required files (MissingWeightsError if incomplete)."""
    a = get(name)
    root = Path(folder)
    missing = [r for r in a.required if not any((root / alt).is_file() for alt in r.split("|"))]
    if missing:
        raise MissingWeightsError(str(root), f"{a.description}; missing: {', '.join(missing)}", fetch=a.fetch_command)
    return root


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def write_record(folder: Path, sources: list[dict]) -> dict:
    """Record every file's sha256 (checked by `verify --checksums`)."""
    from bjexp.io import write_json

    files = {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != RECORD and ".cache" not in p.parts}
    record = {"sources": sources, "sha256": files}
    write_json(folder / RECORD, record)
    return record


def check_asset(a: Asset, assets_dir: str | Path) -> list[str]:
    """Files of a present asset that fail their checksum (published ones for URL files, else the fetch record)."""
    root = a.path(assets_dir)
    if a.urls:
        return [u.relpath for u in a.urls if (root / u.relpath).is_file() and u.matches(root / u.relpath) is False]
    return check_record(root)


def check_record(folder: Path) -> list[str]:
    """Files whose content no longer matches the sha256 recorded at fetch time ([] if none or no record)."""
    rec = folder / RECORD
    if not rec.is_file():
        return []
    sums = json.loads(rec.read_text())["sha256"]
    return [f for f, s in sums.items() if not (folder / f).is_file() or sha256(folder / f) != s]
