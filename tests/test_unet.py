"""The tiny UNet has the attention it is configured with: `model.unet.head_width` channels per head."""
from omegaconf import OmegaConf

from bjexp.models.unet import tiny_unet
from conftest import compose


def _attentions(unet):
    return {n: m for n, m in unet.named_modules() if type(m).__name__ == "Attention"}


def test_default_tiny_unet_heads_are_head_width_channels_wide():
    cfg = compose()
    u = cfg.model.unet
    unet = tiny_unet(u, 12, 4, 64, 16)
    attn = _attentions(unet)
    # attention at the two coarse levels: their down blocks, their up blocks' two layers each and the mid block,
    # each with a self- and a cross-attention
    assert len(attn) == 2 * (2 + 2 * 2 + 1)
    for name, m in attn.items():
        assert m.inner_dim == 64, name
        assert m.inner_dim // m.heads == u.head_width == 32, name  # not diffusers' "32 heads" (2 channels each)


def test_heads_follow_each_levels_width():
    ucfg = OmegaConf.create({"block_out_channels": [32, 64], "attention": [True, True], "layers_per_block": 1,
                             "head_width": 16, "norm_num_groups": 8})
    heads = {n.split(".")[0] + "." + n.split(".")[1]: (m.heads, m.inner_dim) for n, m in
             _attentions(tiny_unet(ucfg, 8, 4, 24, 8)).items()}
    assert heads["down_blocks.0"] == (2, 32) and heads["down_blocks.1"] == (4, 64)
    assert heads["mid_block.attentions"] == (4, 64) and heads["up_blocks.1"] == (2, 32)
