"""Tiny random weights in the exact formats of the real assets, for tests and for smoke-running the real-world
configs without downloads: a diffusers Stable Diffusion folder (`save_pretrained`; CLIP text model + a real CLIP
BPE tokenizer built from open_clip's merges; the same layout serves RoentGen), an InstructPix2Pix one (8-channel
UNet, Euler-ancestral scheduler) and a BiomedCLIP-style open_clip `local-dir:` folder (HF BERT tower
named by its hub id as in the real open_clip_config.json, WordPiece vocab, BERT config, weights as .bin).
`write_fake_assets(dir)` fills an assets folder so `paths.assets_dir=dir model=sd15` runs end to end."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from bjexp.assets import get


def clip_tokenizer_files(folder: Path, n_merges: int = 2000) -> None:
    """vocab.json + merges.txt of CLIP's byte-level BPE (first `n_merges` merges, as open_clip's SimpleTokenizer)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:1 + n_merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def write_tiny_sd(folder: str | Path, seed: int = 0, width: int = 32, sample_size: int = 16, levels: int = 2,
                  layers_per_block: int = 1) -> Path:
    """A diffusers SD1.5-format folder with tiny random weights (4-channel UNet, 3-channel VAE). `levels` UNet and
    VAE levels, as SD lays them out (cross-attention in all UNet levels but the coarsest; VAE downsampling
    2^(levels-1): SD's 8x at levels=4)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=sample_size, in_channels=4, out_channels=4,
                                layers_per_block=layers_per_block,
                                block_out_channels=(width,) + (2 * width,) * (levels - 1), norm_num_groups=8,
                                down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
                                cross_attention_dim=width, attention_head_dim=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(width,) * levels,
                        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                        norm_num_groups=8, sample_size=2 ** (levels - 1) * sample_size)
    tok_dir = folder / ".tok"
    clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                          steps_offset=1, set_alpha_to_one=False)
    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=sched,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    import shutil

    shutil.rmtree(tok_dir)
    return folder


def write_tiny_ip2p(folder: str | Path, seed: int = 0, width: int = 32, sample_size: int = 16) -> Path:
    """An InstructPix2Pix-format folder (timbrooks/instruct-pix2pix layout): SD's components with an 8-channel
    UNet (noisy latent + image latent) and an Euler-ancestral scheduler config ("leading" spacing, steps_offset 1)."""
    from diffusers import EulerAncestralDiscreteScheduler, UNet2DConditionModel

    folder = write_tiny_sd(folder, seed, width, sample_size)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    cfg = dict(unet.config)
    cfg["in_channels"] = 8
    UNet2DConditionModel.from_config(cfg).save_pretrained(folder / "unet")
    EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                                    timestep_spacing="leading").save_pretrained(folder / "scheduler")
    index = json.loads((folder / "model_index.json").read_text())
    index.update(_class_name="StableDiffusionInstructPix2PixPipeline",
                 scheduler=["diffusers", "EulerAncestralDiscreteScheduler"])
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def write_tiny_biomedclip(folder: str | Path, seed: int = 0, width: int = 48, context_length: int = 256) -> Path:
    """An open_clip local-dir folder shaped like BiomedCLIP's: the text_cfg names the hub BERT (resolved to the
    folder by the loader, never the hub), CLS-last-hidden-state pooler + MLP projection, 256-token context,
    WordPiece vocab + BERT config beside it, weights as open_clip_pytorch_model.bin."""
    import open_clip
    from transformers import BertConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = ("no yes new resolved worsening improved stable pleural effusion pneumothorax cardiomegaly edema "
             "consolidation atelectasis opacity lung left right bilateral the of and is in with mild moderate "
             "severe small large increased decreased unchanged").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(words)) + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] \
        + list("abcdefghijklmnopqrstuvwxyz.,;:-")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # As the BiomedBERT repo ships it: vocab.txt + tokenizer_config.json (+ config.json), no tokenizer.json.
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    BertConfig(vocab_size=len(vocab), hidden_size=width, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=2 * width, max_position_embeddings=512).save_pretrained(folder)
    hub = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    cfg = {"model_cfg": {"embed_dim": 32,
                         "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                         "text_cfg": {"hf_model_name": hub, "hf_tokenizer_name": hub, "hf_proj_type": "mlp",
                                      "hf_pooler_type": "cls_last_hidden_state_pooler",
                                      "context_length": context_length}},
           "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
    torch.manual_seed(seed)
    text_cfg = {**cfg["model_cfg"]["text_cfg"], "hf_model_name": str(folder), "hf_model_pretrained": False}
    model = open_clip.create_model(f"local-dir:{folder}", text_cfg=text_cfg, load_weights=False, pretrained_hf=False)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


WRITERS = {
    "sd15": lambda folder, seed: write_tiny_sd(folder, seed),
    "roentgen": lambda folder, seed: write_tiny_sd(folder, seed),  # RoentGen ships the SD1.x diffusers layout
    "instructpix2pix": lambda folder, seed: write_tiny_ip2p(folder, seed),
    "biomedclip": lambda folder, seed: write_tiny_biomedclip(folder, seed, width=32),
}


def write_fake_assets(assets_dir: str | Path, seed: int = 0, names: tuple[str, ...] = ("sd15", "biomedclip")) -> Path:
    """Fill `assets_dir` with tiny stand-ins for the model assets `names`, at the registry's folder names."""
    root = Path(assets_dir)
    for name in names:
        WRITERS[name](get(name).path(root), seed)
    return root
