"""A tiny in-memory Data + JourneyDiffusion for tests of the training loop (curriculum, DDP, precision), with
random cached latents/text states instead of the prepare stage: seconds, not minutes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import AutoencoderKL

from bjexp.data.datamodule import Tables
from bjexp.models.build import build_scheme
from bjexp.models.diffusion import JourneyDiffusion
from bjexp.models.encoders import EncodedText, TextEncoder
from bjexp.models.unet import tiny_unet
from bjexp.workflow import Data

OVERRIDES = ["trainer.max_steps=4", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
             "trainer.checkpoint_every_n_steps=1000", "model.optim.batch_size=4", "model.unet.block_out_channels=[16,32]",
             "model.unet.attention=[true,false]", "model.unet.head_width=8", "model.unet.norm_num_groups=8"]


class FrozenStub(TextEncoder):
    """The data are cached, so training never calls the encoder."""
    trainable, masked, width, max_length = False, True, 16, 6


def tiny_data(n_pairs: int = 24, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    n_img, n_txt = n_pairs + 1, 8
    df = pd.DataFrame({"pair_id": [f"p{i}" for i in range(n_pairs)],
                       "split": ["train"] * (n_pairs - 4) + ["val"] * 4})
    tables = Tables(torch.zeros(n_img, 8, 8, dtype=torch.uint8), [""] + [f"t{i}" for i in range(1, n_txt)],
                    moments=torch.cat([torch.randn(n_img, 4, 4, 4, generator=g), torch.full((n_img, 4, 4, 4), -4.0)], 1),
                    states=torch.randn(n_txt, 6, 16, generator=g), mask=torch.ones(n_txt, 6, dtype=torch.bool))
    idx = np.arange(n_pairs)
    index = {"prior": idx, "current": idx + 1, "text": 1 + idx % (n_txt - 1), "report": 1 + (idx + 3) % (n_txt - 1)}
    return Data(Path("unused"), df, tables, index)


def tiny_module(cfg, data: Data) -> JourneyDiffusion:
    torch.manual_seed(cfg.seed)
    scheme = build_scheme(cfg)
    unet = tiny_unet(cfg.model.unet, scheme.in_channels(4), 4, 16, 4)
    if cfg.model.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    vae = AutoencoderKL(latent_channels=4, block_out_channels=(8,), norm_num_groups=8)
    null = EncodedText(data.tables.states[:1], data.tables.mask[:1])
    return JourneyDiffusion(unet, vae, FrozenStub(), scheme, null, optim=cfg.model.optim,
                            cfg_dropout=cfg.method.cfg_dropout, texts=data.tables.texts,
                            total_steps=cfg.trainer.max_steps)


def unet_digest(module) -> float:
    return float(sum(p.double().abs().sum() * (i + 1) for i, p in enumerate(module.unet.parameters())))
