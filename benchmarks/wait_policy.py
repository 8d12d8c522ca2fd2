"""OpenMP's wait policy on the default tiny UNet's training step (16x16x8 input, attention at 4x4, AdamW): each
policy in its own process (libgomp reads OMP_WAIT_POLICY once, at load), 2 threads, and 1 thread for reference.
Median of 12 steps after 2 warm-up steps, per batch size. Run it on an otherwise idle machine.

    python benchmarks/wait_policy.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write  # noqa: E402

STEP = r"""
import json, statistics, sys, time
import torch, torch.nn.functional as F
from diffusers import UNet2DConditionModel
torch.manual_seed(0); torch.set_num_threads(int(sys.argv[1]))
attn = [False, False, True]  # the tiny UNet of 2026-11 (and its 32 heads of 2 channels: see bjexp/models/unet.py)
u = UNet2DConditionModel(sample_size=16, in_channels=8, out_channels=4, block_out_channels=[32, 64, 64],
    layers_per_block=1, down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
    up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)], cross_attention_dim=64,
    attention_head_dim=32, norm_num_groups=16)
opt = torch.optim.AdamW(u.parameters(), 1e-3)
out = {}
for b in (16, 32):
    x, s = torch.randn(b, 8, 16, 16), torch.randn(b, 24, 64)
    m, t = torch.ones(b, 24, dtype=torch.bool), torch.randint(0, 1000, (b,))
    ts = []
    for i in range(14):
        a = time.perf_counter()
        y = u(x, t, encoder_hidden_states=s, encoder_attention_mask=m).sample
        loss = F.mse_loss(y, x[:, :4]); opt.zero_grad(); loss.backward(); opt.step()
        ts.append(time.perf_counter() - a)
    out[b] = statistics.median(ts[2:])
print(json.dumps(out))
"""


def measure(policy: str | None, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    p = subprocess.run([sys.executable, "-c", STEP, str(threads)], env=env, capture_output=True, text=True, check=True)
    return {int(k): v for k, v in json.loads(p.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    rows = {"libgomp default (unset), 2 threads": measure(None, 2), "PASSIVE, 2 threads": measure("PASSIVE", 2),
            "ACTIVE, 2 threads": measure("ACTIVE", 2), "unset, 1 thread": measure(None, 1)}
    base = rows["libgomp default (unset), 2 threads"]
    table = ["| policy | batch 16 s/step | batch 32 s/step | vs default (16 / 32) |", "|---|---|---|---|"]
    for name, r in rows.items():
        table.append(f"| {name} | {r[16]:.3f} | {r[32]:.3f} | {r[16] / base[16]:.2f}x / {r[32] / base[32]:.2f}x |")
    write("wait_policy", {"s_per_step": {k: {str(b): v for b, v in r.items()} for k, r in rows.items()}},
          "\n".join(table))


if __name__ == "__main__":
    main()
