"""FLOP counting of a training step (bjexp.flops) against hand counts, and MFU arithmetic."""
import pytest
import torch
import torch.nn.functional as F

from bjexp.flops import count_flops, mfu, peak_tflops


def test_conv_and_linear_step_matches_a_hand_count():
    torch.manual_seed(0)
    n, cin, cout, k, hw, out = 4, 3, 5, 3, 6, 7
    model = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, k, padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(cout * hw * hw, out))
    x = torch.randn(n, cin, hw, hw)  # the input needs no gradient: the conv's backward is its weight gradient only
    conv = 2 * n * cout * hw * hw * cin * k * k  # one multiply-add = 2 FLOPs per weight per output pixel
    linear = 2 * n * (cout * hw * hw) * out
    forward_only = count_flops(lambda: model(x))
    assert forward_only == conv + linear
    assert count_flops(lambda: model(x).sum().backward()) == (conv + conv) + (linear + 2 * linear)


def test_attention_on_cpu_is_counted_like_the_cuda_kernels():
    b, h, lq, lk, d = 2, 4, 16, 12, 8
    q, kk, v = (torch.randn(b, h, n, d, requires_grad=True) for n in (lq, lk, lk))
    fwd = 2 * (2 * b * h * lq * lk * d)  # Q K^T and P V
    assert count_flops(lambda: F.scaled_dot_product_attention(q, kk, v)) == fwd
    # backward: dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q (model FLOPs: no recomputed scores)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, kk, v).sum().backward()) == fwd + 2 * fwd


def test_tiny_unet_step_count_is_positive_stable_and_backend_independent():
    from diffusers import UNet2DConditionModel
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=8, out_channels=4, block_out_channels=(16, 32),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=8, norm_num_groups=8)
    x, t, states = torch.randn(2, 8, 8, 8), torch.tensor([10, 500]), torch.randn(2, 5, 16)

    def step():
        unet(x, t, encoder_hidden_states=states).sample.pow(2).mean().backward()

    counts = [count_flops(step) for _ in range(2)]
    with sdpa_kernel(SDPBackend.MATH):  # attention as explicit matmuls, which the stock counter knows
        math = count_flops(step)
    convs = sum(2 * m.weight.numel() * 64 // (m.stride[0] ** 2) for m in unet.modules()
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and m.in_channels == 16)
    assert counts[0] == counts[1] == math > convs > 0


def test_mfu_and_peaks():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0 and peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert mfu(0.5e12 * 800, 1.0, 989.0) == pytest.approx(0.4044, abs=1e-4)
    with pytest.raises(ValueError, match="--peak-tflops"):
        peak_tflops("Some Future GPU")
