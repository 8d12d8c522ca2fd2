"""SD1.5-size UNet (random weights, SD1.5's config, 8 input channels; no download) at 256 px (32x32x4 latents):
training-step time (forward + backward [+ AdamW step]) and peak memory per batch size; with `--mode sample`, one
dual-guidance sampler step instead (a no-grad forward over 3x the batch: conditional, image-only and null inputs).

    OMP_NUM_THREADS=1 python benchmarks/unet_memory.py --batches 1 2 --steps 2 --optimizer none --checkpointing  # CPU
    python benchmarks/unet_memory.py --device cuda --precision bf16 --batches 8 16 32      # GPU
    python benchmarks/unet_memory.py --device cuda --precision bf16 --mode sample --batches 8 32

Writes benchmarks/results/unet_memory_<device>.{json,md} with the command and the machine. Quotes medians over
`--steps` timed steps after one warm-up step. CPU peak memory = the process's peak RSS growth (ru_maxrss) during
the batch's steps, so run batch sizes in increasing order (as the script does).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

# SD1.5's unet/config.json (stable-diffusion-v1-5), in_channels widened 4 -> 8 as BiomedJourney does.
SD15_UNET = dict(sample_size=32, in_channels=8, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                 norm_num_groups=32, act_fn="silu", center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True,
                 freq_shift=0, mid_block_scale_factor=1)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench(batch: int, steps: int, device: str, precision: str, checkpointing: bool, tokens: int,
          optimizer: str = "adamw", mode: str = "train") -> dict:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).to(device)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train(mode == "train")
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4) if optimizer == "adamw" and mode == "train" else None
    if mode == "sample":
        unet.requires_grad_(False)
        batch *= 3  # the guided step's three branches run as one batch
    x = torch.randn(batch, 8, 32, 32, device=device)
    states = torch.randn(batch, tokens, 768, device=device)
    target = torch.randn(batch, 4, 32, 32, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp32": None}[precision]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = rss_mib()
    times = []
    for i in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None), \
                torch.set_grad_enabled(mode == "train"):
            pred = unet(x, t, encoder_hidden_states=states).sample
        if mode == "train":
            torch.nn.functional.mse_loss(pred.float(), target).backward()
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)
            else:
                unet.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up (allocator, kernels)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    if mode == "sample":
        batch //= 3
    out = {"batch": batch, "step_s_median": round(med, 3), "images_per_s": round(batch / med, 2), "steps": steps,
           "params_M": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1)}
    if device == "cuda":
        out["peak_gpu_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        out["peak_rss_MiB"] = round(rss_mib(), 0)
        out["rss_growth_MiB"] = round(rss_mib() - rss0, 0)
    del unet, opt
    return out


def machine(device: str) -> dict:
    m = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
         "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()}
    import diffusers

    m["diffusers"] = diffusers.__version__
    if device == "cuda":
        m["gpu"] = torch.cuda.get_device_name()
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (as model=sd15 trains)")
    p.add_argument("--tokens", type=int, default=77, help="text tokens (77 CLIP, 256 BiomedCLIP)")
    p.add_argument("--optimizer", choices=["adamw", "none"], default="adamw",
                   help="none: forward + backward only (AdamW adds 2 fp32 copies of the 860M weights, ~6.4 GiB)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--mode", choices=["train", "sample"], default="train",
                   help="sample: one dual-guidance sampler step (no grad, 3x batch); images/s is per sampler step")
    p.add_argument("--note", default="")
    a = p.parse_args()
    rows = []
    for b in sorted(a.batches):
        rows.append(bench(b, a.steps, a.device, a.precision, a.checkpointing, a.tokens, a.optimizer, a.mode))
        print(json.dumps(rows[-1]), flush=True)
    name = f"unet_memory_{a.device}" + ("_sample" if a.mode == "sample" else "")
    cmd = "python " + " ".join(shlex.quote(x) for x in sys.argv)
    result = {"command": cmd, "machine": machine(a.device), "precision": a.precision, "checkpointing": a.checkpointing,
              "optimizer": a.optimizer, "mode": a.mode, "tokens": a.tokens, "resolution_px": 256, "latent": [4, 32, 32], "rows": rows, "note": a.note}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    mem_col = "peak GPU mem (GiB)" if a.device == "cuda" else "peak RSS (MiB)"
    what = "dual-guidance sampler step" if a.mode == "sample" else "training step"
    lines = [f"# SD1.5-size UNet {what} at 256 px ({a.device}, {a.precision}"
             f"{', gradient checkpointing' if a.checkpointing else ''}"
             f"{', optimizer ' + a.optimizer if a.mode == 'train' else ''})", "",
             f"Command: `{cmd}`", "", f"Machine: {json.dumps(result['machine'])}", "",
             f"| batch | step time (median of {a.steps}, s) | images/s | {mem_col} |", "|---|---|---|---|"]
    for r in rows:
        mem = r.get("peak_gpu_mem_GiB", r.get("peak_rss_MiB"))
        lines.append(f"| {r['batch']} | {r['step_s_median']} | {r['images_per_s']} | {mem} |")
    if a.note:
        lines += ["", a.note]
    (a.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out / name}.md")


if __name__ == "__main__":
    main()
