"""Text encoders behind one small interface: texts -> token states + padding mask (+ pooled).

`OpenClipTextEncoder` loads any open_clip model folder (`local-dir:` format: open_clip_config.json + weights,
plus tokenizer/BERT config files for HF text towers) — the real BiomedCLIP and the tiny encoders the miniature
world pretrains are loaded by exactly this code. The tiny ones are built by `bjexp.models.tiny_encoders`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bjexp.assets import MissingWeightsError, Problem


@dataclass
class EncodedText:
    states: torch.Tensor  # (B, L, D) token states for cross-attention
    mask: torch.Tensor  # (B, L) bool, True = attend (all True for encoders that do not mask padding)
    pooled: torch.Tensor | None = None


class TextEncoder(nn.Module):
    """Interface: `tokenize(texts)` -> ids; `forward(ids)` -> EncodedText; `encode(texts)` does both."""
    max_length: int
    width: int
    masked: bool
    path: Path | None = None  # the weights folder (part of the text-state cache key)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, texts: list[str]) -> EncodedText:
        ids = self.tokenize(list(texts)).to(next(self.parameters()).device)
        return self(ids)


class OpenClipTextEncoder(TextEncoder):
    """The text tower of an open_clip model folder. HF towers (BiomedCLIP's PubMedBERT) mask padding; the
    built-in causal CLIP tower does not (as Stable Diffusion uses CLIP: all 77 states)."""

    def __init__(self, path: str | Path, max_length: int | None = None, trainable: bool = False):
        super().__init__()
        import open_clip

        self.path = path = Path(path)
        cfg_file = path / "open_clip_config.json"
        if not cfg_file.is_file():
            raise MissingWeightsError(Problem("an open_clip local-dir model folder", path, ("open_clip_config.json",)))
        model_cfg = json.loads(cfg_file.read_text())["model_cfg"]
        text_cfg = dict(model_cfg.get("text_cfg", {}))
        self.hf = bool(text_cfg.get("hf_model_name"))
        if self.hf:
            # The BERT config and tokenizer live in the folder: never resolve the hub id offline.
            if not (path / "config.json").is_file():
                raise MissingWeightsError(Problem("the HF text tower's BERT config", path, ("config.json",)))
            text_cfg["hf_model_name"] = str(path)
            text_cfg["hf_model_pretrained"] = False
        model = open_clip.create_model(f"local-dir:{path}", text_cfg=text_cfg, load_weights=True, pretrained_hf=False)
        self.tokenizer = open_clip.get_tokenizer(f"local-dir:{path}", context_length=max_length)
        self.text = model.text if hasattr(model, "text") else None
        if self.text is None:
            raise ValueError(f"{path}: expected an open_clip model with a separate text tower (custom_text)")
        self.text.output_tokens = True
        self.max_length = self.tokenizer.context_length
        self.masked = self.hf
        self.pad_id = self.text.config.pad_token_id if self.hf else 0
        with torch.no_grad():
            self.width = self(self.tokenize([""])).states.shape[-1]
        self.trainable = trainable
        self.requires_grad_(trainable)
        if not trainable:
            self.eval()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def forward(self, ids: torch.Tensor) -> EncodedText:
        pooled, tokens = self.text(ids)
        if self.hf:
            mask = ids != self.pad_id
            if tokens.shape[1] == ids.shape[1] - 1:  # CLS pooler: open_clip drops the CLS state
                mask = mask[:, 1:]
        else:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncodedText(tokens, mask, pooled)

    def train(self, mode: bool = True):
        return super().train(mode and getattr(self, "trainable", True))
