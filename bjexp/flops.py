"""Model FLOPs of a step, counted by PyTorch's `FlopCounterMode` on the step itself (matmuls, convolutions,
attention; forward and backward), and model FLOPs utilisation (MFU) against a chip's dense bf16 peak.

Model FLOPs, as MFU is defined: what the step needs, not what a kernel recomputes (count without gradient
checkpointing; attention's backward as four matmuls whichever kernel runs it). The CPU attention kernel, which the
stock counter does not know, is counted too, so a CPU count equals a GPU count of the same step.
"""
from __future__ import annotations

from typing import Callable

import torch

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets; the first name that occurs in
# torch.cuda.get_device_name() wins (so "H100 PCIe" before "H100").
PEAK_DENSE_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                          ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0))


def peak_tflops(device_name: str) -> float:
    for key, tflops in PEAK_DENSE_BF16_TFLOPS:
        if key in device_name:
            return tflops
    raise ValueError(f"no dense bf16 peak known for GPU {device_name!r} (known: "
                     f"{[k for k, _ in PEAK_DENSE_BF16_TFLOPS]}); give it explicitly (--peak-tflops)")


def _attention_formulas() -> dict:
    """Model FLOPs of attention: forward Q·Kᵀ and P·V; backward four matmuls (dV, dP, dQ, dK), twice the forward.
    (torch's stock formula for the fused kernels' backward adds the scores they recompute: hardware, not model,
    FLOPs.) The CPU kernel, which the stock counter misses, gets the same formula."""
    from torch.utils.flop_counter import sdpa_flop_count

    aten = torch.ops.aten

    def fwd(query, key, value, *args, **kwargs):
        return sdpa_flop_count(query, key, value)

    def bwd(grad_out, query, key, value, *args, **kwargs):
        return 2 * sdpa_flop_count(query, key, value)

    return {aten._scaled_dot_product_flash_attention_for_cpu: fwd,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd,
            aten._scaled_dot_product_flash_attention_backward: bwd,
            aten._scaled_dot_product_efficient_attention_backward: bwd,
            aten._scaled_dot_product_cudnn_attention_backward: bwd}


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs of one call of `step` (e.g. forward + backward of a training step), as FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_attention_formulas()) as counter:
        step()
    return int(counter.get_total_flops())


def mfu(flops_per_step: float, seconds_per_step: float, peak: float) -> float:
    """Achieved FLOP/s over the peak (`peak` in TFLOP/s): 0.4 = 40 % MFU."""
    return flops_per_step / seconds_per_step / (peak * 1e12)
