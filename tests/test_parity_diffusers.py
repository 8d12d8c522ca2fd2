"""Parity with diffusers: bjexp loads SD-format weights through the same builders users run (model=sd15
encoder=clip, a tiny random diffusers folder saved with save_pretrained), and its dual-guidance sampler + VAE
decode reproduce StableDiffusionInstructPix2PixPipeline; the widened UNet equals the original; training's CFG
dropout / null conditioning are the sampler's."""
from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

from conftest import compose

from bjexp.models import guidance
from bjexp.models.build import build_encoder, build_scheme, build_unet, build_vae
from bjexp.models.diffusion import noise_scheduler
from bjexp.models.fake_assets import write_tiny_sd
from bjexp.sample import make_scheduler

PROMPTS = ["new moderate left pleural effusion", "resolved right pneumothorax; stable cardiomegaly"]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    assets = tmp_path_factory.mktemp("assets")
    folder = write_tiny_sd(assets / "stable-diffusion-v1-5", seed=0)
    cfg = compose(["model=sd15", "encoder=clip", f"paths.assets_dir={assets}"])
    vae = build_vae(cfg)
    enc = build_encoder(cfg, None)
    scheme = build_scheme(cfg)
    torch.manual_seed(0)
    unet = build_unet(cfg, scheme, vae.config.latent_channels, enc.width, 16)
    return dict(cfg=cfg, folder=folder, vae=vae, enc=enc, scheme=scheme, unet=unet.eval())


def test_clip_sd15_specialisation_points_at_the_sd_folder(sd):
    cfg, enc = sd["cfg"], sd["enc"]
    assert cfg.encoder.family == "hf_clip" and cfg.encoder.path == str(sd["folder"])
    assert (enc.max_length, enc.masked) == (77, False)
    assert tuple(enc.tokenize(["a"]).shape) == (1, 77)


def test_widened_unet_with_zero_extra_channels_equals_the_4_channel_unet(sd):
    unet8 = sd["unet"]
    unet4 = UNet2DConditionModel.from_pretrained(sd["folder"], subfolder="unet").eval()
    assert unet8.conv_in.in_channels == 8 and unet8.config.in_channels == 8
    torch.testing.assert_close(unet8.conv_in.bias, unet4.conv_in.bias, rtol=0, atol=0)
    g = torch.Generator().manual_seed(1)
    x, prior = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g)
    states = sd["enc"].encode(PROMPTS).states
    with torch.no_grad():
        e8 = unet8(torch.cat([x, prior], 1), 500, encoder_hidden_states=states).sample
        e4 = unet4(x, 500, encoder_hidden_states=states).sample
    torch.testing.assert_close(e8, e4, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sampler", ["euler_ancestral", "ddim", "dpmpp"])
def test_sampler_reproduces_instructpix2pix_pipeline(sd, sampler):
    cfg = compose(["model=sd15", "encoder=clip", f"sampler={sampler}", f"paths.assets_dir={sd['folder'].parent}"])
    vae, enc, unet, scheme = sd["vae"], sd["enc"], sd["unet"], sd["scheme"]
    with torch.no_grad():  # a trained-looking conv_in: the prior channels must matter for the test to mean much
        unet.conv_in.weight[:, 4:].copy_(0.3 * torch.randn_like(unet.conv_in.weight[:, 4:]))
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 32, 32, generator=g)  # [0, 1], what the pipeline takes
    steps, s_i, s_t = 8, 1.5, 7.5
    with torch.no_grad():
        prior = vae.encode(image * 2 - 1).latent_dist.mode()
        text, null = enc.encode(PROMPTS[:1]), enc.encode([""])
        lat = guidance.sample(unet, make_scheduler(cfg.sampler, noise_scheduler()), scheme, prior, text, null,
                              steps=steps, image_guidance=s_i, text_guidance=s_t,
                              generators=[torch.Generator().manual_seed(3)], latent_channels=4)
        ours = (vae.decode(lat / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    pipe = StableDiffusionInstructPix2PixPipeline(vae=vae, text_encoder=enc.text, tokenizer=enc.tokenizer, unet=unet,
                                                  scheduler=make_scheduler(cfg.sampler, noise_scheduler()),
                                                  safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(PROMPTS[0], image=image, num_inference_steps=steps, guidance_scale=s_t, image_guidance_scale=s_i,
               generator=torch.Generator().manual_seed(3), output_type="pt").images
    assert ours.shape == ref.shape == (1, 3, 32, 32)
    diff = (ours - ref).abs().max().item()
    print(f"instructpix2pix parity, {sampler}: max abs diff {diff:.2e}")
    assert diff <= 1e-4
    # ... and the comparison can fail: another seed gives another image.
    with torch.no_grad():
        other = guidance.sample(unet, make_scheduler(cfg.sampler, noise_scheduler()), scheme, prior, text, null,
                                steps=steps, image_guidance=s_i, text_guidance=s_t,
                                generators=[torch.Generator().manual_seed(4)], latent_channels=4)
    assert (other - lat).abs().max() > 1e-2


def test_sdedit_start_matches_img2img_pipeline(sd):
    """conditioning=sdedit: a 4-channel text-conditioned UNet; sampling from the noised prior latent equals
    diffusers' StableDiffusionImg2ImgPipeline (there, guidance is single-scale CFG: the image branch is inert)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    cfg = compose(["model=sd15", "encoder=clip", "conditioning=sdedit", "conditioning.kwargs.strength=0.5",
                   f"paths.assets_dir={sd['folder'].parent}"])
    vae, enc = sd["vae"], sd["enc"]
    scheme = build_scheme(cfg)
    assert scheme.strength == 0.5 and scheme.in_channels(4) == 4
    torch.manual_seed(0)
    unet = build_unet(cfg, scheme, 4, enc.width, 16).eval()
    g = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 32, 32, generator=g)
    steps = 10
    with torch.no_grad():
        init = vae.encode(image * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
        text, null = enc.encode(PROMPTS[1:]), enc.encode([""])
        lat = guidance.sample(unet, make_scheduler(cfg.sampler, noise_scheduler()), scheme, init, text, null,
                              steps=steps, image_guidance=1.5, text_guidance=7.5, latent_channels=4,
                              generators=[torch.Generator().manual_seed(6)], init=init, strength=scheme.strength)
        ours = (vae.decode(lat / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=enc.text, tokenizer=enc.tokenizer, unet=unet,
                                          scheduler=make_scheduler(cfg.sampler, noise_scheduler()),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(PROMPTS[1], image=init, strength=0.5, num_inference_steps=steps, guidance_scale=7.5,
               generator=torch.Generator().manual_seed(6), output_type="pt").images  # 4-channel image = latents
    diff = (ours - ref).abs().max().item()
    print(f"img2img (sdedit) parity: max abs diff {diff:.2e}")
    assert diff <= 1e-4


def test_training_dropout_and_null_conditioning_are_the_samplers(sd):
    """One definition: the 3-way dropout draws 5/5/5 %, and a fully dropped training input is exactly the
    (∅, ∅) branch the sampler feeds the UNet."""
    from types import SimpleNamespace

    rates = SimpleNamespace(text=0.05, both=0.05, image=0.05)
    dt, di = guidance.dropout_masks(200_000, rates, torch.Generator().manual_seed(0))
    freq = {k: float(v.float().mean()) for k, v in
            {"text_only": dt & ~di, "both": dt & di, "image_only": ~dt & di, "none": ~dt & ~di}.items()}
    assert freq == pytest.approx({"text_only": 0.05, "both": 0.05, "image_only": 0.05, "none": 0.85}, abs=0.003)

    enc, scheme = sd["enc"], sd["scheme"]
    null, text = enc.encode([""]), enc.encode(PROMPTS)
    prior = torch.randn(2, 4, 16, 16)
    p_drop, t_drop = guidance.apply_dropout(prior, text, null, torch.tensor([True, False]), torch.tensor([True, False]))
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, encoder_hidden_states, encoder_attention_mask=None):
            calls.append((x, encoder_hidden_states))
            return SimpleNamespace(sample=torch.zeros(x.shape[0], 4, *x.shape[2:]))
    x = torch.randn(2, 4, 16, 16)
    guidance.guided_eps(Spy(), scheme, x, 10, prior, text, null, 1.5, 7.5)
    inp, states = calls[0]
    uncond_inp, uncond_states = inp[4:6], states[4:6]  # the (∅, ∅) third of the batched call
    torch.testing.assert_close(scheme.unet_input(x, p_drop)[0], uncond_inp[0], rtol=0, atol=0)
    torch.testing.assert_close(t_drop.states[0], uncond_states[0], rtol=0, atol=0)
    torch.testing.assert_close(t_drop.states[1], text.states[1], rtol=0, atol=0)  # kept sample untouched
    torch.testing.assert_close(p_drop[1], prior[1], rtol=0, atol=0)
