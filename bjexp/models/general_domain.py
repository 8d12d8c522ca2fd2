"""The miniature world's Stable Diffusion and InstructPix2Pix: tiny models pretrained once on general-domain scenes
(`bjexp.data.scenes`, not chest X-rays) and cached as real diffusers folders, so `JourneyPipeline.from_pretrained`
and the fine-tuning path load them exactly as they load the real SD1.5 / timbrooks/instruct-pix2pix folders.

Built the way the real ones were, at miniature scale:
- a VAE with the miniature world's architecture (`model.vae`), trained on scenes (SD's VAE is not a CXR VAE);
- a CLIP text encoder (transformers `CLIPTextModel` + a CLIP BPE `CLIPTokenizer`), pretrained contrastively on
  (scene, caption) pairs with a tiny vision tower, then frozen;
- text-to-image: a UNet with the architecture of `model.unet`, trained on captions with 10 % text dropout;
- InstructPix2Pix: that UNet with conv_in widened to 8 channels (zeros), fine-tuned on (before, instruction,
  after) edits with InstructPix2Pix's 5/5/5 % dropout.
Each folder is keyed by everything that makes it (`model.general`, `model.vae`, `model.unet`, image size) and built
only when a method asks for it (`bjexp.methods.pretrained.GeneralDomain`); `pretrain.json` records its losses, its
in-domain check and the CPU time it took, `preview.png` what it draws.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from bjexp.data import scenes
from bjexp.io import atomic_dir, config_hash
from bjexp.progress import progress

VERSION = "1"  # bump when the recipe changes: cached folders of another version are never reused
PREVIEW_SAMPLER = OmegaConf.create({"scheduler": "EulerAncestralDiscreteScheduler", "scheduler_kwargs": {}})


def _root(cfg: DictConfig) -> Path:
    return Path(cfg.paths.cache_dir) / "general"


def _keys(cfg: DictConfig) -> tuple[str, str]:
    """(text-to-image key, InstructPix2Pix key): the edit settings do not rebuild the text-to-image model."""
    m = cfg.model
    g = OmegaConf.to_container(m.general, resolve=True)
    edits = {k: g.pop(k) for k in ("n_edits", "ip2p_steps")}
    sd = config_hash(m.image_size, m.vae, m.unet, m.num_train_timesteps, g, VERSION)
    return sd, config_hash(sd, edits)


def text_to_image_folder(cfg: DictConfig) -> Path:
    """The tiny Stable Diffusion stand-in (a StableDiffusionPipeline folder), built on first use."""
    out = _root(cfg) / f"sd-{_keys(cfg)[0]}"
    if not (out / "model_index.json").is_file():
        _build_text_to_image(cfg, out)
    return out


def instruct_pix2pix_folder(cfg: DictConfig) -> Path:
    """The tiny InstructPix2Pix stand-in (a StableDiffusionInstructPix2PixPipeline folder), built on first use
    from the text-to-image folder."""
    out = _root(cfg) / f"ip2p-{_keys(cfg)[1]}"
    if not (out / "model_index.json").is_file():
        _build_instruct_pix2pix(cfg, text_to_image_folder(cfg), out)
    return out


# -- the recipes ------------------------------------------------------------------------------------------------
def _build_text_to_image(cfg: DictConfig, out: Path) -> None:
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from bjexp.models.conditioning import TextOnly
    from bjexp.models.unet import tiny_unet
    from bjexp.models.vae import load_vae, train_tiny_vae

    g, size = cfg.model.general, cfg.model.image_size
    laps: dict = {}
    with _lap(laps, "scenes"):
        images, captions = scenes.captioned(g.n_scenes, size, g.seed)
    with _lap(laps, "vae"):
        vae = load_vae(train_tiny_vae(cfg.model.vae, images, _root(cfg), g.seed))
    with atomic_dir(out) as tmp:
        with _lap(laps, "clip"):
            clip_loss = _pretrain_clip(g, images, captions, tmp)
            text_encoder, tokenizer, encoder = _load_text(tmp)
        latent = size // 2 ** (len(vae.config.block_out_channels) - 1)
        torch.manual_seed(g.seed)
        unet = tiny_unet(cfg.model.unet, vae.config.latent_channels, vae.config.latent_channels, encoder.width, latent)
        n = len(images)
        with _lap(laps, "unet"):
            losses = _train(cfg, unet, vae, encoder, TextOnly(), torch.from_numpy(images), captions,
                            np.arange(n), np.arange(n), np.arange(n), g.sd_steps, "text-to-image")
        # SD1.5's own scheduler config (PNDM, "leading" spacing, steps_offset 1) on the training noise schedule.
        sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1, set_alpha_to_one=False)
        StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sched,
                                safety_checker=None, feature_extractor=None,
                                requires_safety_checker=False).save_pretrained(tmp)
        prompts = captions[:8]  # training captions: an in-domain check that it draws what it is told
        with _lap(laps, "preview"):
            preview = _preview(tmp, torch.from_numpy(images[:8]), prompts, g.seed)
        _save_grid(tmp / "preview.png", [images[:8], preview])
        _write_report(tmp, laps, clip_final_loss=clip_loss, unet_loss=losses, preview_prompts=prompts,
                      **_agreement(preview, images[:8]))


def _build_instruct_pix2pix(cfg: DictConfig, sd: Path, out: Path) -> None:
    from diffusers import (EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
                           UNet2DConditionModel)

    from bjexp.models.conditioning import Concat
    from bjexp.models.unet import widen_conv_in
    from bjexp.models.vae import load_vae

    g, size = cfg.model.general, cfg.model.image_size
    laps: dict = {}
    with _lap(laps, "scenes"):
        before, texts, after = scenes.edits(g.n_edits + 8, size, g.seed)
    held = slice(g.n_edits, None)  # 8 held-out edits for the in-domain check
    vae = load_vae(sd, subfolder="vae")
    text_encoder, tokenizer, encoder = _load_text(sd)
    unet = widen_conv_in(UNet2DConditionModel.from_pretrained(sd, subfolder="unet"), 2 * vae.config.latent_channels)
    n = g.n_edits
    images = torch.from_numpy(np.concatenate([before[:n], after[:n]]))
    with atomic_dir(out) as tmp:
        with _lap(laps, "unet"):
            losses = _train(cfg, unet, vae, encoder, Concat(), images, texts[:n], np.arange(n), n + np.arange(n),
                            np.arange(n), g.ip2p_steps, "InstructPix2Pix")
        # timbrooks/instruct-pix2pix's scheduler config: Euler-ancestral, "leading" spacing, steps_offset 1.
        sched = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                steps_offset=1, timestep_spacing="leading")
        StableDiffusionInstructPix2PixPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                               scheduler=sched, safety_checker=None, feature_extractor=None,
                                               requires_safety_checker=False).save_pretrained(tmp)
        with _lap(laps, "preview"):
            edited = _preview(tmp, torch.from_numpy(before[held]), texts[held], g.seed)
        _save_grid(tmp / "preview.png", [before[held], edited, after[held]])
        # Did it learn to edit? Its outputs should be nearer the targets than the unedited inputs are.
        _write_report(tmp, laps, unet_loss=losses, preview_instructions=texts[held],
                      **_agreement(edited, after[held]),
                      **{f"unedited_{k}": v for k, v in _agreement(before[held], after[held]).items()})


def _pretrain_clip(g: DictConfig, images: np.ndarray, captions: list[str], folder: Path) -> float:
    """CLIP's contrastive loss on (scene, caption) pairs with a tiny vision tower; saves text_encoder/ (a
    CLIPTextModel: the text half) and tokenizer/ (CLIP's BPE, first merges) into `folder`."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig

    from bjexp.imaging import uint8_to_model
    from bjexp.models.fake_assets import clip_tokenizer_files

    t = g.text
    clip_tokenizer_files(folder / ".bpe")
    tokenizer = CLIPTokenizer(str(folder / ".bpe" / "vocab.json"), str(folder / ".bpe" / "merges.txt"),
                              model_max_length=77)
    tokenizer.save_pretrained(folder / "tokenizer")
    common = dict(hidden_size=t.width, intermediate_size=4 * t.width, num_hidden_layers=t.layers,
                  num_attention_heads=t.heads, projection_dim=t.embed_dim)
    text_cfg = CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **common)
    vision_cfg = CLIPVisionConfig(image_size=images.shape[-1], patch_size=8, num_channels=1, **common)
    torch.manual_seed(g.seed)
    clip = CLIPModel(CLIPConfig(text_config=text_cfg.to_dict(), vision_config=vision_cfg.to_dict(),
                                projection_dim=t.embed_dim))
    # Tokenized as SD's pipelines do (padded to 77, no attention mask: CLIP's causal mask keeps padding out).
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    pixels = uint8_to_model(images)
    opt = torch.optim.AdamW(clip.parameters(), lr=t.pretrain_lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(g.seed)
    with progress() as bar:
        task = bar.add_task("pretrain general-domain CLIP", total=t.pretrain_steps)
        for _ in range(t.pretrain_steps):
            idx = torch.randint(len(ids), (t.pretrain_batch,), generator=gen)
            loss = clip(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=True).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.advance(task)
    text = CLIPTextModel(text_cfg)
    text.load_state_dict(clip.text_model.state_dict())
    text.save_pretrained(folder / "text_encoder")
    import shutil

    shutil.rmtree(folder / ".bpe")
    return float(loss.detach())


def _load_text(folder: Path):
    """(CLIPTextModel, CLIPTokenizer, the HFClipTextEncoder wrapping them): loaded from the folder as SD's are."""
    from bjexp.models.hf_clip import HFClipTextEncoder

    encoder = HFClipTextEncoder(folder)
    return encoder.text, encoder.tokenizer, encoder


def _train(cfg: DictConfig, unet, vae, encoder, scheme, images: torch.Tensor, texts: list[str], prior: np.ndarray,
           current: np.ndarray, text: np.ndarray, steps: int, what: str) -> dict:
    """Fit `unet` in place (EMA weights at the end) with the training loss of `JourneyDiffusion`, on cached VAE
    moments and frozen text states of (images[prior], texts[text]) -> images[current]."""
    from torch.utils.data import DataLoader

    from bjexp.data.datamodule import PairDataset, StepBatchSampler, Tables, encode_tables
    from bjexp.models.diffusion import JourneyDiffusion

    g = cfg.model.general
    uniq = sorted(set(texts))
    tables = Tables(images, [""] + uniq)
    pos = {s: i + 1 for i, s in enumerate(uniq)}
    index = {"prior": prior, "current": current, "text": np.asarray([pos[texts[i]] for i in text])}
    with torch.no_grad(), tempfile.TemporaryDirectory() as features:  # used once: not kept in the cache
        encode_tables(tables, vae, encoder, Path(features), "general")
    module = JourneyDiffusion(unet, vae, encoder, scheme, tables.null_text(), optim=g.optim, cfg_dropout=g.cfg_dropout,
                              num_train_timesteps=cfg.model.num_train_timesteps, seed=g.seed, total_steps=steps)
    rows = np.arange(len(prior))
    batches = iter(DataLoader(PairDataset(tables, index, rows), batch_sampler=StepBatchSampler(
        len(rows), g.optim.batch_size, g.seed)))
    optimizers = module.configure_optimizers()
    opt, schedule = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    module.train()
    curve = []
    with progress() as bar:
        task = bar.add_task(f"pretrain general-domain {what}", total=steps)
        for step in range(steps):
            loss = module._loss(next(batches), dropout=True, g=module._step_generator(step, 0, 0))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            schedule.step()
            module.ema.step(unet.parameters())
            curve.append(float(loss.detach()))
            bar.advance(task)
    module.ema.copy_to(unet.parameters())
    unet.eval()
    k = max(1, steps // 10)
    return {"first_10pct": float(np.mean(curve[:k])), "last_10pct": float(np.mean(curve[-k:])), "steps": steps}


def _preview(folder: Path, images: torch.Tensor, texts: list[str], seed: int) -> np.ndarray:
    """What the saved folder draws, loaded by the same code the baselines use (20 Euler-a steps, s_T 7.5, s_I 1.5)."""
    from bjexp.models.pipeline import JourneyPipeline

    pipe = JourneyPipeline.from_pretrained(folder, PREVIEW_SAMPLER)
    gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(len(texts))]
    return pipe(images, list(texts), generators=gens, steps=20, image_guidance=1.5, text_guidance=7.5).numpy()


def _agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean absolute grey-level difference and correlation of two image stacks (the in-domain checks)."""
    x, y = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    r = [float(np.corrcoef(p, q)[0, 1]) if p.std() and q.std() else 0.0 for p, q in zip(x, y)]
    return {"mae_uint8": float(np.abs(x - y).mean()), "pearson_r": float(np.mean(r))}


def _save_grid(path: Path, rows: list[np.ndarray]) -> None:
    from bjexp.imaging import write_png

    write_png(path, np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0))


@contextlib.contextmanager
def _lap(laps: dict, name: str):
    """Wall and process-CPU seconds of a stage into `laps` (the machine is shared: CPU time is the comparable one)."""
    w, c = time.perf_counter(), time.process_time()
    yield
    laps[name] = {"wall_s": round(time.perf_counter() - w, 1), "cpu_s": round(time.process_time() - c, 1)}


def _write_report(folder: Path, laps: dict, **fields) -> None:
    import os

    (folder / "pretrain.json").write_text(json.dumps(
        {**fields, "timings": laps, "torch_threads": torch.get_num_threads(), "cpu": os.cpu_count(),
         "version": VERSION}, indent=2))
