"""Training data: the journey manifest turned into cached tensors (VAE moments, frozen text states).

The VAE and a frozen text encoder are deterministic functions of their inputs, so they run once per unique image
and text, content-hashed on disk, instead of on every step. Images are stored once even when shared by
consecutive triples. With `model.cache_latents=false` (or a trainable encoder) the raw images/texts are served
and the module encodes them per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset, Sampler

from bjexp.errors import ConfigError
from bjexp.imaging import read_grey, uint8_to_vae
from bjexp.io import atomic_write, bytes_hash, cache_lock
from bjexp.models.encoders import EncodedText
from bjexp.progress import progress

NULL_TEXT = ""


@dataclass
class Tables:
    """Unique images and texts with their encodings; pairs index into them."""
    images: torch.Tensor  # (U, H, W) uint8
    texts: list[str]  # index 0 is the null text ""
    moments: torch.Tensor | None = None  # (U, 2C, h, w): VAE posterior mean ‖ logvar
    states: torch.Tensor | None = None  # (T, L, D)
    mask: torch.Tensor | None = None  # (T, L) bool

    def null_text(self) -> EncodedText:
        return EncodedText(self.states[:1], self.mask[:1])


def load_tables(df: pd.DataFrame, image_size: int) -> tuple[Tables, dict[str, np.ndarray]]:
    """Read every unique image once; index arrays per pair (prior, current, text, current_report)."""
    paths = pd.unique(pd.concat([df["prior_path"], df["current_path"]]))
    root = Path(df.attrs.get("root", "."))
    with progress() as bar:
        task = bar.add_task("load images", total=len(paths))
        imgs = []
        for p in paths:
            imgs.append(read_grey(root / p if not Path(p).is_absolute() else p, image_size))
            bar.advance(task)
    pos = {p: i for i, p in enumerate(paths)}
    texts = [NULL_TEXT] + sorted(set(df["text"]) | set(df.get("current_report", pd.Series(dtype=str)).fillna("")) - {NULL_TEXT})
    tpos = {t: i for i, t in enumerate(texts)}
    index = {"prior": df["prior_path"].map(pos).to_numpy(), "current": df["current_path"].map(pos).to_numpy(),
             "text": df["text"].map(tpos).to_numpy(),
             "report": (df["current_report"].fillna("").map(tpos).to_numpy() if "current_report" in df
                        else np.zeros(len(df), dtype=np.int64))}
    return Tables(torch.from_numpy(np.stack(imgs)), texts), index


@torch.no_grad()
def encode_tables(tables: Tables, vae, encoder, cache_dir: Path, key: str, batch_size: int = 128) -> Tables:
    """Fill moments/states/mask, from the on-disk cache when this exact (images, texts, models) was seen."""
    content = bytes_hash(tables.images.numpy().tobytes() + "\x00".join(tables.texts).encode())
    path = Path(cache_dir) / "features" / f"{key}-{content}.safetensors"
    with cache_lock(path):  # concurrent sweep jobs: one encodes, the others wait and reuse it
        if path.is_file():
            t = load_file(path)
            tables.moments, tables.states, tables.mask = t["moments"], t["states"], t["mask"].bool()
            return tables
        return _encode(tables, vae, encoder, path, batch_size)


def _encode(tables: Tables, vae, encoder, path: Path, batch_size: int) -> Tables:
    device = next(vae.parameters()).device
    moments, states, masks = [], [], []
    with progress() as bar:
        task = bar.add_task("cache VAE latents", total=len(tables.images))
        for i in range(0, len(tables.images), batch_size):
            x = uint8_to_vae(tables.images[i:i + batch_size], vae.config.in_channels).to(device)
            moments.append(vae.encode(x).latent_dist.parameters.float().cpu())
            bar.advance(task, len(x))
        task = bar.add_task("cache text states", total=len(tables.texts))
        for i in range(0, len(tables.texts), batch_size):
            enc = encoder.encode(tables.texts[i:i + batch_size])
            states.append(enc.states.float().cpu())
            masks.append(enc.mask.cpu())
            bar.advance(task, len(enc.states))
    tables.moments, tables.states, tables.mask = torch.cat(moments), torch.cat(states), torch.cat(masks)
    if encoder.masked:  # padding is masked, so trailing all-padding positions can be dropped exactly
        keep = int(tables.mask.any(0).nonzero().max()) + 1
        tables.states, tables.mask = tables.states[:, :keep].contiguous(), tables.mask[:, :keep].contiguous()
    with atomic_write(path) as f:
        f.write(_safetensors_bytes({"moments": tables.moments, "states": tables.states, "mask": tables.mask.to(torch.uint8)}))
    return tables


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


class PairDataset(Dataset):
    """Items of one split. kind='triples': (prior, text, current); kind='single': (null prior, report, current)."""

    def __init__(self, tables: Tables, index: dict[str, np.ndarray], rows: np.ndarray, kind: str = "triples",
                 cached: bool = True):
        self.t, self.rows, self.kind, self.cached = tables, rows, kind, cached
        self.prior = torch.as_tensor(index["prior"][rows])
        self.current = torch.as_tensor(index["current"][rows])
        self.text = torch.as_tensor(index["text" if kind == "triples" else "report"][rows])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        p, c, t = self.prior[i], self.current[i], self.text[i]
        item = {"row": self.rows[i], "has_prior": torch.tensor(self.kind == "triples")}
        if self.cached:
            item.update(prior_moments=self.t.moments[p], current_moments=self.t.moments[c],
                        text_states=self.t.states[t], text_mask=self.t.mask[t])
        else:
            item.update(prior_image=self.t.images[p], current_image=self.t.images[c], text_index=t)
        return item


class StepBatchSampler(Sampler[list[int]]):
    """Infinite batches that are a pure function of (seed, micro-step): micro-step m of epoch e takes slice
    m mod n of a permutation seeded by (seed, e). Starting at `start` makes a resumed run see exactly the batches
    an uninterrupted run would have seen; `rank`/`world` take disjoint slices of each global batch (DDP)."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        if n < batch_size * world:
            raise ConfigError(f"{n} training pairs < global batch {batch_size * world}: lower model.optim.batch_size")
        self.n, self.b, self.seed, self.start, self.rank, self.world = n, batch_size, seed, start, rank, world
        self.per_epoch = n // (batch_size * world)

    def __iter__(self):
        # Stateful: the trainer re-iterates after each nominal epoch and must continue, not restart.
        while True:
            epoch, pos = divmod(self.start, self.per_epoch)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
            g = self.b * self.world
            self.start += 1
            yield perm[pos * g + self.rank * self.b: pos * g + (self.rank + 1) * self.b].tolist()

    def __len__(self) -> int:
        # One endless "epoch": the trainer stops at max_steps, and no epoch end discards prefetched batches.
        return 2**62


class JourneyDataModule(L.LightningDataModule):
    def __init__(self, df: pd.DataFrame, tables: Tables, index: dict[str, np.ndarray], *, batch_size: int,
                 num_workers: int = 0, cached: bool = True, kind: str = "triples", seed: int = 0,
                 pin_memory: bool = False, prefetch_factor: int | None = None):
        super().__init__()
        self.df, self.tables, self.index = df, tables, index
        self.batch_size, self.num_workers, self.cached, self.kind, self.seed = batch_size, num_workers, cached, kind, seed
        self.loader_kwargs = {"num_workers": num_workers, "pin_memory": pin_memory,
                              **({"prefetch_factor": prefetch_factor} if num_workers and prefetch_factor else {})}

    def _rows(self, split: str) -> np.ndarray:
        return np.flatnonzero((self.df["split"] == split).to_numpy())

    def train_dataloader(self) -> DataLoader:
        ds = PairDataset(self.tables, self.index, self._rows("train"), self.kind, self.cached)
        tr = self.trainer
        start = tr.global_step * tr.accumulate_grad_batches if tr is not None else 0
        sampler = StepBatchSampler(len(ds), self.batch_size, self.seed, start,
                                   tr.global_rank if tr else 0, tr.world_size if tr else 1)
        return DataLoader(ds, batch_sampler=sampler, persistent_workers=self.num_workers > 0, **self.loader_kwargs)

    def val_dataloader(self) -> DataLoader:
        ds = PairDataset(self.tables, self.index, self._rows("val"), "triples", self.cached)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, **self.loader_kwargs)

