"""Parity with diffusers: bjexp loads SD-format weights through the same builders users run (model=sd15
encoder=clip, a tiny random diffusers folder saved with save_pretrained), and its dual-guidance sampler + VAE
decode reproduce StableDiffusionInstructPix2PixPipeline; the widened UNet equals the original; training's CFG
dropout / null conditioning are the sampler's."""
from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

from compose_util import compose

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
    vae = build_vae(cfg, None, None, None)
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
    assert (ours - ref).abs().max().item() <= 1e-4
    # ... and the comparison can fail: another seed gives another image.
    with torch.no_grad():
        other = guidance.sample(unet, make_scheduler(cfg.sampler, noise_scheduler()), scheme, prior, text, null,
                                steps=steps, image_guidance=s_i, text_guidance=s_t,
                                generators=[torch.Generator().manual_seed(4)], latent_channels=4)
    assert (other - lat).abs().max() > 1e-2
