"""CFG dropout, dual guidance, conv_in widening — the method facts the whole study rests on."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bjexp.models import guidance
from bjexp.models.conditioning import Concat, TextOnly
from bjexp.models.encoders import EncodedText
from bjexp.models.unet import tiny_unet, widen_conv_in

UCFG = OmegaConf.create({"block_out_channels": [32, 32], "attention": [True, False], "layers_per_block": 1,
                         "head_width": 8, "norm_num_groups": 8})


def test_cfg_dropout_rates_within_tolerance():
    rates = OmegaConf.create({"text": 0.05, "both": 0.05, "image": 0.05})
    n = 200_000
    dt, di = guidance.dropout_masks(n, rates, generator=torch.Generator().manual_seed(0))
    text_only = (dt & ~di).float().mean().item()
    both = (dt & di).float().mean().item()
    image_only = (~dt & di).float().mean().item()
    tol = 4 * np.sqrt(0.05 * 0.95 / n)  # 4 binomial standard errors
    for got in (text_only, both, image_only):
        assert abs(got - 0.05) < tol
    assert abs((~dt & ~di).float().mean().item() - 0.85) < tol


def test_apply_dropout_uses_null_text_and_zero_latent():
    prior = torch.randn(4, 4, 8, 8)
    text = EncodedText(torch.randn(4, 5, 16), torch.ones(4, 5, dtype=torch.bool))
    null = EncodedText(torch.full((1, 5, 16), 7.0), torch.tensor([[True, False, False, False, False]]))
    dt = torch.tensor([True, False, True, False])
    di = torch.tensor([False, False, True, True])
    p, t = guidance.apply_dropout(prior, text, null, dt, di)
    assert torch.equal(p[0], prior[0]) and torch.equal(p[1], prior[1])
    assert (p[2] == 0).all() and (p[3] == 0).all()
    assert (t.states[0] == 7).all() and (t.states[2] == 7).all() and torch.equal(t.states[1], text.states[1])
    assert torch.equal(t.mask[0], null.mask[0]) and t.mask[1].all()


def test_tiny_unet_puts_attention_on_the_flagged_levels_only():
    cfg = OmegaConf.merge(UCFG, {"block_out_channels": [16, 32, 32], "attention": [False, True, False]})
    unet = tiny_unet(cfg, 8, 4, 16, 8)
    assert [type(b).__name__ for b in unet.down_blocks] == ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    assert [type(b).__name__ for b in unet.up_blocks] == ["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    for bad in ([True, False], [False, False, False]):
        with pytest.raises(ValueError, match="model.unet.attention"):
            tiny_unet(OmegaConf.merge(cfg, {"attention": bad}), 8, 4, 16, 8)


def _unet(in_ch):
    torch.manual_seed(0)
    return tiny_unet(UCFG, in_ch, 4, 16, 8).eval()


def test_widened_conv_in_leaves_outputs_unchanged():
    u4 = _unet(4)
    x = torch.randn(2, 4, 8, 8)
    s = torch.randn(2, 3, 16)
    with torch.no_grad():
        ref = u4(x, 10, encoder_hidden_states=s).sample
        bias = u4.conv_in.bias.clone()
        u8 = widen_conv_in(u4, 8)
        assert u8.conv_in.in_channels == 8 and u8.config.in_channels == 8
        assert torch.equal(u8.conv_in.bias, bias) and (u8.conv_in.weight[:, 4:] == 0).all()
        out_zero = u8(torch.cat([x, torch.zeros_like(x)], 1), 10, encoder_hidden_states=s).sample
        out_any = u8(torch.cat([x, torch.randn_like(x)], 1), 10, encoder_hidden_states=s).sample
    assert torch.equal(out_zero, ref)
    assert torch.allclose(out_any, ref)  # new channels start at exactly zero weight


@pytest.mark.parametrize("scheme", [Concat(), TextOnly()])
def test_guidance_scales_one_equal_plain_conditional_prediction(scheme):
    unet = _unet(scheme.in_channels(4))
    x, prior = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    text = EncodedText(torch.randn(3, 5, 16), torch.tensor([[1, 1, 1, 0, 0]] * 3, dtype=torch.bool))
    null = EncodedText(torch.randn(1, 5, 16), torch.tensor([[1, 1, 0, 0, 0]], dtype=torch.bool))
    with torch.no_grad():
        got = guidance.guided_eps(unet, scheme, x, 500, prior, text, null, 1.0, 1.0)
        plain = unet(scheme.unet_input(x, prior), 500, encoder_hidden_states=text.states,
                     encoder_attention_mask=text.mask).sample
        # and the formula itself for other scales, from three separate calls
        e_unc = unet(scheme.unet_input(x, torch.zeros_like(prior)), 500, encoder_hidden_states=null.states.expand(3, -1, -1),
                     encoder_attention_mask=null.mask.expand(3, -1)).sample
        e_img = unet(scheme.unet_input(x, prior), 500, encoder_hidden_states=null.states.expand(3, -1, -1),
                     encoder_attention_mask=null.mask.expand(3, -1)).sample
        mixed = guidance.guided_eps(unet, scheme, x, 500, prior, text, null, 1.5, 7.5)
    assert torch.allclose(got, plain, atol=1e-5)
    assert torch.allclose(mixed, e_unc + 1.5 * (e_img - e_unc) + 7.5 * (plain - e_img), atol=1e-4)


def test_sample_with_scales_one_equals_conditional_sampling_loop():
    from diffusers import EulerAncestralDiscreteScheduler

    from bjexp.models.diffusion import noise_scheduler

    unet, scheme = _unet(8), Concat()
    prior = torch.randn(2, 4, 8, 8)
    text = EncodedText(torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool))
    null = EncodedText(torch.zeros(1, 5, 16), torch.ones(1, 5, dtype=torch.bool))
    sched = EulerAncestralDiscreteScheduler.from_config(noise_scheduler().config)
    gens = [guidance.pair_generator(p, 0) for p in ("a", "b")]
    got = guidance.sample(unet, sched, scheme, prior, text, null, steps=4, image_guidance=1.0, text_guidance=1.0,
                          generators=gens)
    # reference loop: plain conditional prediction, same noise streams
    from diffusers.utils.torch_utils import randn_tensor

    gens = [guidance.pair_generator(p, 0) for p in ("a", "b")]
    sched.set_timesteps(4)
    x = randn_tensor(prior.shape, generator=gens) * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            eps = unet(scheme.unet_input(sched.scale_model_input(x, t), prior), t, encoder_hidden_states=text.states,
                       encoder_attention_mask=text.mask).sample
            x = sched.step(eps, t, x, generator=gens).prev_sample
    assert torch.allclose(got, x, atol=1e-4)


def test_pair_noise_is_deterministic_and_distinct():
    a1 = torch.randn(4, generator=guidance.pair_generator("p1__p2", 0))
    a2 = torch.randn(4, generator=guidance.pair_generator("p1__p2", 0))
    b = torch.randn(4, generator=guidance.pair_generator("p1__p3", 0))
    c = torch.randn(4, generator=guidance.pair_generator("p1__p2", 1))
    assert torch.equal(a1, a2) and not torch.equal(a1, b) and not torch.equal(a1, c)
