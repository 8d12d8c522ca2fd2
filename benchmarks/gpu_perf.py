"""Every GPU measurement of issue 17 in one run (about 4 minutes on an H100/H200; `--budget-s` bounds it):

1. The SD1.5-size training step at 256 px with 256 BiomedCLIP tokens, bf16 autocast, AdamW, EMA, as bjexp runs it
   (`JourneyDiffusion._loss` on cached-feature batches: posterior sample, noise, 3-way CFG dropout, UNet, MSE).
   FLOPs counted by FlopCounterMode on the real step (forward + backward; model FLOPs, bjexp.flops), images/s and
   MFU against the chip's dense bf16 peak (looked up by name, or --peak-tflops), peak memory per batch size
   (64 / 128 / 256, with and without gradient checkpointing).
2. Each lever alone on top of the batch-64 baseline: channels_last, fused and for-loop AdamW, the SDPA kernels
   (flash / efficient / cuDNN / math), a host sync per step (`loss.item()`, what a per-step progress bar does),
   the EMA update (off, foreach, every 4 steps), batches from a CPU feature cache through bjexp's data loader
   (pageable vs pinned, 0 vs 4 workers with prefetch), the Lightning loop itself (progress bar on / off), and
   torch.compile of the UNet (compile seconds and the steady step).
3. The sampling target: the paper's test set (1,214 pairs, 100 Euler-ancestral steps, dual guidance: one UNet call
   on 3x the batch per step) through bjexp's sampler (`guidance.sample`), bf16 vs fp32 weights, batch 64-405, then
   compiled; the SD VAE decode per batch. Total = batches x (100 x step + decode).

    python benchmarks/gpu_perf.py [--out DIR] [--budget-s 270] [--peak-tflops X]
    python benchmarks/gpu_perf.py --tiny            # CPU dry run of every code path (tiny models), for tests

Without a CUDA GPU (and without --tiny) it exits with status 1 and says so. Rows it could not run (out of memory,
no kernel for a setting, time budget spent) are written with the reason, never dropped. Writes DIR/gpu_perf.json
and .md (default benchmarks/results/).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, step_clock  # noqa: E402
from unet_memory import SD15_UNET  # noqa: E402

SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=256)
TINY_UNET = dict(sample_size=4, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=8,
                 norm_num_groups=8)
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                norm_num_groups=8, sample_size=8)
TEST_PAIRS, SAMPLER_STEPS = 1214, 100


class Skip(Exception):
    pass


class Bench:
    def __init__(self, a):
        self.tiny, self.device = a.tiny, ("cpu" if a.tiny else "cuda")
        self.unet_cfg, self.vae_cfg = (TINY_UNET, TINY_VAE) if a.tiny else (SD15_UNET, SD15_VAE)
        self.latent = self.unet_cfg["sample_size"]
        self.tokens, self.width = (6, 16) if a.tiny else (256, 768)
        self.steps, self.warmup = (2, 1) if a.tiny else (6, 2)
        self.deadline = time.perf_counter() + a.budget_s
        self.peak = a.peak_tflops
        self.rows: list[dict] = []
        self.compile = not a.no_compile
        self.flops_per_image: float | None = None

    # -- building blocks ---------------------------------------------------------------------------------------
    def module(self, checkpointing: bool = False, ema_foreach: bool = False):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from omegaconf import OmegaConf

        from bjexp.models.conditioning import Concat
        from bjexp.models.diffusion import JourneyDiffusion
        from bjexp.models.encoders import EncodedText, TextEncoder
        from bjexp.schema.model import CFGDropoutConfig, OptimConfig

        class Cached(TextEncoder):  # batches carry cached text states: training never calls an encoder
            trainable, masked, width, max_length = False, True, self.width, self.tokens

        torch.manual_seed(0)
        with torch.device(self.device):  # initialised on the GPU: seconds, not a minute of CPU init
            unet = UNet2DConditionModel(**self.unet_cfg)
            vae = AutoencoderKL(**self.vae_cfg)
        if checkpointing:
            unet.enable_gradient_checkpointing()
        null = EncodedText(torch.zeros(1, self.tokens, self.width), torch.ones(1, self.tokens, dtype=torch.bool))
        optim = OmegaConf.structured(OptimConfig(lr=1e-4, ema_decay=0.9999, ema_warmup=False))
        m = JourneyDiffusion(unet, vae, Cached(), Concat(), null, optim=optim,
                             cfg_dropout=OmegaConf.structured(CFGDropoutConfig()))
        if ema_foreach:
            m.ema.foreach = True
        m.to(self.device)
        m.on_fit_start()
        return m.train()

    @functools.cache
    def features(self, n_images: int = 512, n_texts: int = 256):
        """A CPU feature cache shaped like bjexp's (Tables: VAE moments, text states with padding masked)."""
        import numpy as np
        import pandas as pd

        from bjexp.data.datamodule import Tables

        g = torch.Generator().manual_seed(0)
        lat = self.latent
        moments = torch.cat([torch.randn(n_images, 4, lat, lat, generator=g), torch.full((n_images, 4, lat, lat), -4.0)], 1)
        lengths = torch.randint(self.tokens // 4, self.tokens + 1, (n_texts,), generator=g)
        mask = torch.arange(self.tokens)[None] < lengths[:, None]
        tables = Tables(torch.zeros(1, 1, 1, dtype=torch.uint8), [""] * n_texts, moments=moments,
                        states=torch.randn(n_texts, self.tokens, self.width, generator=g), mask=mask)
        n = n_images - 1
        df = pd.DataFrame({"pair_id": [f"p{i}" for i in range(n)], "split": ["train"] * n})
        idx = np.arange(n)
        return df, tables, {"prior": idx, "current": idx + 1, "text": idx % n_texts, "report": idx % n_texts}

    def batch(self, n: int, device=None) -> dict:
        df, tables, index = self.features()
        from bjexp.data.datamodule import PairDataset

        ds = PairDataset(tables, index, index["prior"][:n])
        b = torch.utils.data.default_collate([ds[i] for i in range(n)])
        return {k: v.to(device or self.device) if torch.is_tensor(v) else v for k, v in b.items()}

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def row(self, section: str, name: str, fn, need_s: float = 5.0, **info) -> dict | None:
        """Run one measurement; OOM, a missing kernel or the spent budget become the row's `error`."""
        r = {"section": section, "name": name, **info}
        try:
            if self.left() < need_s:
                raise Skip(f"time budget spent ({self.left():.0f} s left, needs ~{need_s:.0f} s)")
            if self.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            r.update(fn())
            if self.device == "cuda":
                r["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        except torch.OutOfMemoryError:
            r["error"] = "out of memory"
        except (Skip, RuntimeError) as e:
            r["error"] = str(e).strip().splitlines()[0][:160]
        finally:
            if self.device == "cuda":
                torch.cuda.empty_cache()
        self.rows.append(r)
        print(json.dumps(r), flush=True)
        return r

    def autocast(self):
        return torch.autocast(self.device, dtype=torch.bfloat16)

    # -- training ----------------------------------------------------------------------------------------------
    def train_loop(self, m, opt, batch, *, steps=None, ema=True, ema_every=1, item=False, context=None,
                   loader=None) -> dict:
        params = [p for p in m.unet.parameters() if p.requires_grad]
        it = iter(loader) if loader is not None else None

        def step(i):
            b = batch if it is None else {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                                          for k, v in next(it).items()}
            with context() if context else contextlib.nullcontext(), self.autocast():
                loss = m._loss(b, dropout=True, g=m._step_generator(i, 0, 0))
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if ema and i % ema_every == 0:
                m.ema.step(m.unet.parameters())
            if item:
                loss.item()

        steps = steps or self.steps
        t_first = time.perf_counter()
        for i in range(self.warmup):
            step(i)
        self.sync()
        first = time.perf_counter() - t_first
        t0 = time.perf_counter()
        for i in range(self.warmup, self.warmup + steps):
            step(i)
        self.sync()
        s = (time.perf_counter() - t0) / steps
        n = (batch if batch is not None else next(iter(loader)))["row"].shape[0]
        out = {"batch": n, "step_s": round(s, 4), "images_per_s": round(n / s, 1), "warmup_s": round(first, 2)}
        if self.flops_per_image and self.peak:
            from bjexp.flops import mfu

            out["mfu_pct"] = round(100 * mfu(self.flops_per_image * n, s, self.peak), 1)
        return out

    def count_flops(self, m, n: int = 8) -> dict:
        from bjexp.flops import count_flops

        b = self.batch(n)

        def fwd_bwd():
            with self.autocast():
                m._loss(b, dropout=True, g=m._step_generator(0, 0, 0)).backward()

        total = count_flops(fwd_bwd)
        m.unet.zero_grad(set_to_none=True)
        self.flops_per_image = total / n
        return {"batch": n, "flops_per_step": total, "tflops_per_image": round(total / n / 1e12, 4)}

    def training(self) -> None:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        m = self.module()
        base_b = 4 if self.tiny else 64
        self.row("flops", "forward + backward, model FLOPs", lambda: self.count_flops(m), need_s=10)
        adamw = lambda **kw: torch.optim.AdamW(m.unet.parameters(), lr=1e-4, weight_decay=1e-2, **kw)  # noqa: E731
        batches = (2, 4) if self.tiny else (64, 128, 256)
        for ckpt in (False, True):
            m.unet.enable_gradient_checkpointing() if ckpt else m.unet.disable_gradient_checkpointing()
            for b in batches:
                self.row("batch", f"batch {b}{', checkpointing' if ckpt else ''}",
                         lambda: self.train_loop(m, adamw(), self.batch(b)), need_s=15, checkpointing=ckpt)
        m.unet.disable_gradient_checkpointing()
        base = self.batch(base_b)

        def L(name, need=10, opt=None, **kw):
            self.row("lever", name, lambda: self.train_loop(m, opt or adamw(), base, **kw), need_s=need)

        L("baseline (AdamW torch default, EMA per-parameter loop, torch's SDPA choice)")
        m.unet.to(memory_format=torch.channels_last)
        L("channels_last")
        m.unet.to(memory_format=torch.contiguous_format)
        L("AdamW fused", opt=adamw(fused=True))
        L("AdamW for-loop (foreach=False)", opt=adamw(foreach=False))
        kernels = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                   "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
        for names in (["efficient"], ["flash", "efficient"], ["cudnn"], ["cudnn", "efficient"], ["math"]):
            L(f"SDPA {'+'.join(names)}", context=lambda names=names: sdpa_kernel([kernels[k] for k in names]))
        L("host sync every step (loss.item())", item=True)
        L("EMA off", ema=False)
        L("EMA every 4 steps", ema_every=4)
        m.ema.foreach = True
        L("EMA foreach")
        m.ema.foreach = False
        self.data_path(m, adamw, base_b)
        self.lightning(m, base_b)
        if self.compile:
            m.unet.compile()
            L("torch.compile(UNet) (warmup_s includes compiling)", need=120)
        del m

    def data_path(self, m, adamw, b: int) -> None:
        from bjexp.data.datamodule import JourneyDataModule

        df, tables, index = self.features()
        for pin, workers in ((False, 0), (True, 0), (True, 4)):
            dm = JourneyDataModule(df, tables, index, batch_size=b, num_workers=workers, pin_memory=pin,
                                   prefetch_factor=4 if workers else None)
            self.row("data", f"feature-cache batches on the CPU: pin_memory={pin}, workers={workers}",
                     lambda dm=dm: self.train_loop(m, adamw(), None, loader=dm.train_dataloader()), need_s=15)

    def lightning(self, m, b: int) -> None:
        import lightning as L

        from bjexp.data.datamodule import JourneyDataModule

        df, tables, index = self.features()
        for bar in (True, False):
            def fit(bar=bar):
                stamps = step_clock()
                steps = self.warmup + self.steps + 1
                tr = L.Trainer(accelerator="cpu" if self.tiny else "gpu", devices=1,
                               precision="32-true" if self.tiny else "bf16-mixed", max_steps=steps, logger=False,
                               enable_checkpointing=False, enable_progress_bar=bar, enable_model_summary=False,
                               gradient_clip_val=1.0, limit_val_batches=0, num_sanity_val_steps=0,
                               use_distributed_sampler=False)
                tr.fit(m, datamodule=JourneyDataModule(df, tables, index, batch_size=b, pin_memory=not self.tiny,
                                                       num_workers=0))
                gaps = [y - x for x, y in zip(stamps, stamps[1:])][self.warmup:]
                s = sorted(gaps)[len(gaps) // 2]
                return {"batch": b, "step_s": round(s, 4), "images_per_s": round(b / s, 1)}
            self.row("lever", f"the Lightning loop (bjexp's fit), progress bar {'on' if bar else 'off'}", fit,
                     need_s=30)
            m.to(self.device)  # Lightning's teardown moves the module to the CPU

    # -- sampling ----------------------------------------------------------------------------------------------
    def sampling(self) -> None:
        from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel

        from bjexp.models.conditioning import Concat
        from bjexp.models.diffusion import noise_scheduler
        from bjexp.models.encoders import EncodedText
        from bjexp.models.guidance import pair_generator, sample

        torch.manual_seed(0)
        with torch.device(self.device):
            unet = UNet2DConditionModel(**self.unet_cfg).eval().requires_grad_(False)
            vae = AutoencoderKL(**self.vae_cfg).eval().requires_grad_(False)
        sched = EulerAncestralDiscreteScheduler.from_config(noise_scheduler().config)
        lat, dev = self.latent, self.device

        def run(b: int, steps: int, weights_bf16: bool):
            prior = torch.randn(b, 4, lat, lat, device=dev)
            text = EncodedText(torch.randn(b, self.tokens, self.width, device=dev),
                               torch.ones(b, self.tokens, dtype=torch.bool, device=dev))
            null = EncodedText(torch.zeros(1, self.tokens, self.width, device=dev),
                               torch.ones(1, self.tokens, dtype=torch.bool, device=dev))
            if weights_bf16:
                prior, text, null = prior.bfloat16(), EncodedText(text.states.bfloat16(), text.mask), \
                    EncodedText(null.states.bfloat16(), null.mask)
            gens = [pair_generator(f"p{i}", 0, dev) for i in range(b)]
            ctx = contextlib.nullcontext() if weights_bf16 else self.autocast()
            self.sync()
            t0 = time.perf_counter()
            with ctx, torch.no_grad():
                sample(unet, sched, Concat(), prior, text, null, steps=steps, image_guidance=1.5, text_guidance=7.5,
                       generators=gens)
            self.sync()
            return time.perf_counter() - t0

        def per_step(b: int, bf16: bool) -> dict:
            unet.to(torch.bfloat16 if bf16 else torch.float32)
            lo, hi = (1, 2) if self.tiny else (2, 5)
            run(b, lo, bf16)  # warm-up (kernels, allocator; compiling when compiled)
            s = (run(b, hi, bf16) - run(b, lo, bf16)) / (hi - lo)
            batches = math.ceil(TEST_PAIRS / b)
            return {"batch": b, "unet_batch": 3 * b, "sampler_step_s": round(s, 4),
                    "test_set_unet_min": round(batches * SAMPLER_STEPS * s / 60, 2)}

        batches = (2, 4) if self.tiny else (64, 128, 256, 405)
        for bf16 in (False, True):
            for b in (batches if bf16 else batches[::2]):
                self.row("sampling", f"batch {b}, {'bf16 weights' if bf16 else 'fp32 weights + bf16 autocast'}",
                         lambda b=b, bf16=bf16: per_step(b, bf16), need_s=20)
        vae.to(torch.bfloat16)
        for b in batches:
            def decode(b=b):
                z = torch.randn(b, 4, lat, lat, device=dev, dtype=torch.bfloat16)
                vae.decode(z)
                self.sync()
                t0 = time.perf_counter()
                with torch.no_grad():
                    vae.decode(z / vae.config.scaling_factor)
                self.sync()
                s = time.perf_counter() - t0
                return {"batch": b, "decode_s": round(s, 4), "test_set_decode_s": round(math.ceil(TEST_PAIRS / b) * s, 2)}
            self.row("sampling", f"SD VAE decode, batch {b}, bf16", decode, need_s=10)
        if not self.compile:
            return
        unet.compile()
        b = batches[-2]
        self.row("sampling", f"batch {b}, bf16 weights, torch.compile(UNet)", lambda: per_step(b, True), need_s=90)


def report(bench: Bench, out: Path, argv: list[str], elapsed: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    m = machine()
    payload = {"command": "python " + " ".join(argv), "machine": m, "peak_tflops": bench.peak,
               "flops_per_image": bench.flops_per_image, "elapsed_s": round(elapsed, 1), "rows": bench.rows}
    (out / "gpu_perf.json").write_text(json.dumps(payload, indent=2))
    cols = ["section", "name", "batch", "step_s", "images_per_s", "mfu_pct", "peak_mem_GiB", "warmup_s",
            "sampler_step_s", "test_set_unet_min", "decode_s", "test_set_decode_s", "tflops_per_image", "error"]
    lines = [f"# GPU performance (issue 17)", "", f"Command: `{payload['command']}`", "", f"Machine: {m}", "",
             f"Peak (dense bf16): {bench.peak} TFLOP/s; model FLOPs per training image: "
             f"{bench.flops_per_image and round(bench.flops_per_image / 1e12, 4)} TFLOP; whole run {elapsed:.0f} s.",
             "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in bench.rows]
    (out / "gpu_perf.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'gpu_perf.md'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--budget-s", type=float, default=270.0, help="stop starting new rows after this long")
    ap.add_argument("--peak-tflops", type=float, help="the chip's dense bf16 peak (default: looked up by name)")
    ap.add_argument("--tiny", action="store_true", help="CPU dry run with tiny models (tests the code paths)")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    ap.add_argument("--sections", nargs="+", default=["training", "sampling"], choices=["training", "sampling"])
    a = ap.parse_args(argv)
    if not a.tiny:
        if not torch.cuda.is_available():
            print("gpu_perf: no CUDA GPU visible (torch.cuda.is_available() is False): this benchmark measures a GPU; "
                  "run it on a GPU node (bash benchmarks/gpu.sh), or --tiny for a CPU dry run", file=sys.stderr)
            return 1
        from bjexp.flops import peak_tflops

        a.peak_tflops = a.peak_tflops or peak_tflops(torch.cuda.get_device_name())
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    bench = Bench(a)
    for section in a.sections:
        getattr(bench, section)()
    report(bench, a.out, [sys.argv[0], *(argv if argv is not None else sys.argv[1:])], time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
