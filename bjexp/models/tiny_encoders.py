"""Tiny text encoders of both families for the miniature world, pretrained contrastively and cached.

Why pretrain (instead of training the encoder with the UNet): the real method freezes a pretrained encoder and
caches its token states; a frozen *random* encoder would make the encoder ablation meaningless, and training it
jointly would forbid the embedding cache. So, like BiomedCLIP on PMC pairs, each tiny encoder is pretrained with
open_clip's CLIP loss on synthetic (image, report Impression) pairs from the training split, then saved as an open_clip
`local-dir:` folder and loaded by the same code as the real weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from bjexp.data.reports import stored_sections
from bjexp.imaging import read_grey, uint8_to_model
from bjexp.io import build_once, bytes_hash, config_hash
from bjexp.progress import progress


def _model_cfg(enc: DictConfig, image_size: int, folder: Path) -> dict:
    t = enc.tiny
    vision = {"image_size": image_size, "layers": t.layers, "width": t.width, "patch_size": 8, "head_width": t.width // t.heads}
    if enc.family == "hf_bert":
        text = {"hf_model_name": str(folder), "hf_tokenizer_name": str(folder), "hf_model_pretrained": False,
                "hf_proj_type": "linear", "hf_pooler_type": "cls_pooler", "context_length": enc.max_length}
    else:
        text = {"context_length": enc.max_length, "vocab_size": 49408, "width": t.width, "heads": t.heads,
                "layers": t.layers}
    return {"embed_dim": t.embed_dim, "custom_text": True, "vision_cfg": vision, "text_cfg": text}


def _write_bert_files(folder: Path, corpus: list[str], enc: DictConfig) -> None:
    """A WordPiece vocabulary of the corpus + a tiny BERT config (the files BiomedCLIP ships): with BERT's own
    normalisation and pre-tokenisation, every character (as a word start and as a continuation) and every word
    whole. Built, not learnt: the tokenizers WordPiece trainer breaks ties in hash order, so each process learnt
    another vocabulary (3 of 3 differed), hence another encoder and generator from an empty cache."""
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import BertConfig, BertTokenizerFast

    norm, pre = BertNormalizer(lowercase=True), BertPreTokenizer()
    words = sorted({w for text in corpus for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))})
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars),
             *(w for w in words if len(w) > 1)]  # [PAD] is id 0: _pretrain drops all-padding columns by it
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary as `vocab=` (a `vocab_file=` keyword is silently ignored: all [UNK]).
    BertTokenizerFast(vocab=str(folder / "vocab.txt"), model_max_length=enc.max_length).save_pretrained(folder)
    t = enc.tiny
    BertConfig(vocab_size=len(vocab), hidden_size=t.width, num_hidden_layers=t.layers,
               num_attention_heads=t.heads, intermediate_size=4 * t.width,
               max_position_embeddings=max(512, enc.max_length)).save_pretrained(folder)


def build_tiny_encoder(enc: DictConfig, manifest_df, image_size: int, cache_dir: Path, seed: int = 0) -> Path:
    """Return the folder of the pretrained tiny encoder for this (encoder cfg, training data), building it once."""
    train = manifest_df[manifest_df["split"] == "train"]
    # (image, Impression) pairs, like image-caption pairs: each study of the training split once (a report without
    # sections counts whole). The vocabulary also covers the full reports and the progression texts it will encode.
    reports = {side: train[f"{side}_report"].fillna("").astype(str) for side in ("prior", "current")}  # no report: ""
    paths = {**dict(zip(train["prior_path"], reports["prior"])), **dict(zip(train["current_path"], reports["current"]))}
    texts = [imp or fin for fin, imp in map(stored_sections, paths.values())]
    vocabulary = sorted(set(texts) | set(paths.values()) | set(manifest_df["text"].fillna("").astype(str)))
    # "wordpiece-v3": the vocabulary is built from the corpus (v2's was learnt, differently in every process; v1's
    # had 5 tokens); never reuse older folders. The texts are in the key: new report wording builds a new encoder.
    corpus = bytes_hash("\x00".join([*texts, *vocabulary]).encode())
    key = config_hash(enc, image_size, seed, sorted(train["pair_id"].tolist())[:50], len(train), "wordpiece-v3", corpus)
    out = Path(cache_dir) / "encoders" / f"{enc.name}-{key}"
    # concurrent sweep jobs: one pretrains, the others wait and reuse it
    return build_once(out, lambda tmp: _pretrain(enc, manifest_df, paths, texts, vocabulary, image_size, seed, out, tmp),
                      (out / "open_clip_config.json").is_file)


def _pretrain(enc: DictConfig, manifest_df, paths: dict, texts: list[str], vocabulary: list[str], image_size: int,
              seed: int, out: Path, tmp: Path) -> None:
    """Into `tmp`, the folder that becomes `out` (an hf_bert config names its final path)."""
    import open_clip
    from safetensors.torch import save_file

    root = Path(manifest_df.attrs.get("root", "."))
    imgs = uint8_to_model(np.stack([read_grey(root / p, image_size) for p in paths])).repeat(1, 3, 1, 1)
    if enc.family == "hf_bert":
        _write_bert_files(tmp, vocabulary, enc)
    cfg = _model_cfg(enc, image_size, tmp)
    (tmp / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}, indent=2))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{tmp}", load_weights=False, pretrained_hf=False, output_dict=True)
    tok = open_clip.get_tokenizer(f"local-dir:{tmp}")
    ids = tok(texts)
    if enc.family == "hf_bert":  # padding is masked: drop all-padding columns (same result, far less work)
        ids = ids[:, : int((ids != 0).sum(1).max())]
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=enc.tiny.pretrain_lr, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    with progress() as bar:
        task = bar.add_task(f"pretrain {enc.name} encoder (CLIP loss)", total=enc.tiny.pretrain_steps)
        for _ in range(enc.tiny.pretrain_steps):
            idx = torch.randint(len(texts), (enc.tiny.pretrain_batch,), generator=g)
            out_ = model(imgs[idx], ids[idx])
            loss = loss_fn(out_["image_features"], out_["text_features"], out_["logit_scale"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.advance(task)
    (tmp / "pretrain.json").write_text(json.dumps({"final_clip_loss": float(loss), "pairs": len(texts)}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "open_clip_model.safetensors"))
    if enc.family == "hf_bert":  # point the config at the folder's final name
        cfg["text_cfg"].update(hf_model_name=str(out), hf_tokenizer_name=str(out))
        (tmp / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}, indent=2))
