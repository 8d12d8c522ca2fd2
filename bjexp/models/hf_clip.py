"""Stable Diffusion's own text encoder: transformers `CLIPTextModel` + `CLIPTokenizer` from a diffusers folder
(`text_encoder/`, `tokenizer/`). As SD1.5 uses it: 77 tokens padded to max length, the last hidden state (768-d
for ViT-L/14), no padding mask (all 77 states attend)."""
from __future__ import annotations

from pathlib import Path

import torch

from bjexp.assets import require
from bjexp.models.encoders import EncodedText, TextEncoder


class HFClipTextEncoder(TextEncoder):
    masked = False

    def __init__(self, path: str | Path, max_length: int | None = None, trainable: bool = False,
                 asset: str = "sd15"):
        super().__init__()
        from transformers import CLIPTextModel, CLIPTokenizer

        # `asset`: the kind of diffusers folder `path` is (sd15, instructpix2pix, roentgen): its file list + checksums
        self.path = path = require(asset, folder=path, subfolders=("text_encoder", "tokenizer"))
        self.tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
        self.text = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True)
        self.max_length = int(max_length or self.tokenizer.model_max_length)
        self.width = int(self.text.config.hidden_size)
        self.trainable = trainable
        self.requires_grad_(trainable)
        if not trainable:
            self.eval()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        # Exactly StableDiffusionPipeline.encode_prompt's call (parity with diffusers).
        return self.tokenizer(list(texts), padding="max_length", max_length=self.max_length, truncation=True,
                              return_tensors="pt").input_ids

    def forward(self, ids: torch.Tensor) -> EncodedText:
        out = self.text(ids)
        states = out.last_hidden_state
        mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        return EncodedText(states, mask, out.pooler_output)

    def train(self, mode: bool = True):
        return super().train(mode and getattr(self, "trainable", True))
