"""UNet construction: tiny (miniature world) or SD1.5 from a diffusers folder, with conv_in widened for the
conditioning scheme (new input channels zero-initialised, so a fresh widened UNet equals the original)."""
from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from omegaconf import DictConfig


def tiny_unet(ucfg: DictConfig, in_channels: int, out_channels: int, cross_attention_dim: int,
              sample_size: int) -> UNet2DConditionModel:
    attention = list(ucfg.attention)
    if len(attention) != len(ucfg.block_out_channels) or not any(attention):
        raise ValueError(f"model.unet.attention={attention}: one flag per level of block_out_channels="
                         f"{list(ucfg.block_out_channels)}, at least one true (text enters through cross-attention)")
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    # diffusers' `attention_head_dim` is, for legacy reasons, the number of heads (diffusers issue 2011): passing a
    # width there gave 32 heads of 2 channels each. Per level: heads = width // head_width.
    heads = [max(1, w // ucfg.head_width) for w in ucfg.block_out_channels]
    return UNet2DConditionModel(sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
                                block_out_channels=list(ucfg.block_out_channels), layers_per_block=ucfg.layers_per_block,
                                down_block_types=down, up_block_types=up, cross_attention_dim=cross_attention_dim,
                                attention_head_dim=heads, norm_num_groups=ucfg.norm_num_groups)


@torch.no_grad()
def widen_conv_in(unet: UNet2DConditionModel, in_channels: int) -> UNet2DConditionModel:
    """Grow conv_in to `in_channels`: old weights and bias copied, the extra input channels zero-initialised."""
    old = unet.conv_in
    if old.in_channels == in_channels:
        return unet
    if in_channels < old.in_channels:
        raise ValueError(f"cannot shrink conv_in from {old.in_channels} to {in_channels} channels")
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                          dtype=old.weight.dtype, device=old.weight.device)
    new.weight.zero_()
    new.weight[:, : old.in_channels] = old.weight
    new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")


def tune(unet: UNet2DConditionModel, *, channels_last: bool = False, sdpa_backends=None,
         compile: bool = False) -> UNet2DConditionModel:
    """The speed levers of `model.*` (none changes what the UNet computes, beyond floating-point order)."""
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if sdpa_backends is not None:
        allowed = set(sdpa_backends)
        if not allowed or allowed - set(SDPA_BACKENDS):
            raise ValueError(f"model.sdpa_backends={list(sdpa_backends)}: choose from {list(SDPA_BACKENDS)}")
        torch.backends.cuda.enable_flash_sdp("flash" in allowed)
        torch.backends.cuda.enable_mem_efficient_sdp("efficient" in allowed)
        torch.backends.cuda.enable_cudnn_sdp("cudnn" in allowed)
        torch.backends.cuda.enable_math_sdp("math" in allowed)
    if compile:
        unet.compile()  # in place: parameter names (checkpoints, EMA) stay those of the plain module
    return unet
