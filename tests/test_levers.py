"""Speed levers as config (model.compile / channels_last / sdpa_backends, model.optim.fused / foreach,
trainer.pin_memory / prefetch_factor): each reaches the object it configures, and none changes the loss."""
import pytest
import torch

from bjexp.models.unet import tune
from bjexp.workflow import datamodule
from conftest import compose
from tiny_fit import OVERRIDES, tiny_data, tiny_module


def _loss(module):
    data = tiny_data()
    batch = next(iter(datamodule(compose(OVERRIDES), data, "triples").train_dataloader()))
    return module._loss(batch, dropout=True, g=torch.Generator().manual_seed(0))


def test_optimizer_levers_reach_adamw():
    data = tiny_data()
    for fused, foreach in ((True, None), (None, False), (None, None)):
        cfg = compose(OVERRIDES + [f"model.optim.fused={str(fused).lower() if fused is not None else 'null'}",
                                   f"model.optim.foreach={str(foreach).lower() if foreach is not None else 'null'}"])
        opt = tiny_module(cfg, data).configure_optimizers()["optimizer"]
        assert isinstance(opt, torch.optim.AdamW)
        assert opt.defaults["fused"] == fused and opt.defaults["foreach"] == foreach


def test_channels_last_keeps_the_loss_and_compile_keeps_the_parameter_names():
    cfg = compose(OVERRIDES)
    data = tiny_data()
    plain, tuned = tiny_module(cfg, data), tiny_module(cfg, data)
    tune(tuned.unet, channels_last=True)
    conv = tuned.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert torch.allclose(_loss(plain), _loss(tuned), atol=1e-6)
    keys = list(tuned.state_dict())
    tune(tuned.unet, compile=True)  # in place (compiles at the first call)
    assert tuned.unet._compiled_call_impl is not None
    assert list(tuned.state_dict()) == keys  # checkpoints and EMA see the same parameter names


def test_sdpa_backends_set_the_process_wide_choice_and_refuse_unknown_names():
    flags = (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
             torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.math_sdp_enabled())
    unet = tiny_module(compose(OVERRIDES), tiny_data()).unet
    try:
        tune(unet, sdpa_backends=["math"])
        assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
        assert not torch.backends.cuda.mem_efficient_sdp_enabled() and not torch.backends.cuda.cudnn_sdp_enabled()
        with pytest.raises(ValueError, match="sdpa_backends"):
            tune(unet, sdpa_backends=["flashy"])
    finally:
        for on, fn in zip(flags, (torch.backends.cuda.enable_flash_sdp, torch.backends.cuda.enable_mem_efficient_sdp,
                                  torch.backends.cuda.enable_cudnn_sdp, torch.backends.cuda.enable_math_sdp)):
            fn(on)


def test_loader_levers_reach_the_dataloaders():
    cfg = compose(OVERRIDES + ["trainer.pin_memory=true", "trainer.num_workers=2", "trainer.prefetch_factor=4"])
    dm = datamodule(cfg, tiny_data(), "triples")
    assert dm.loader_kwargs == {"num_workers": 2, "pin_memory": True, "prefetch_factor": 4}
    plain = datamodule(compose(OVERRIDES + ["trainer.prefetch_factor=4"]), tiny_data(), "triples")
    assert plain.loader_kwargs == {"num_workers": 0, "pin_memory": False}  # prefetching needs workers


def test_ema_every_k_steps_and_foreach_reach_the_ema():
    data = tiny_data()
    m = tiny_module(compose(OVERRIDES + ["model.optim.ema_every=4", "model.optim.ema_foreach=true"]), data)
    plain = tiny_module(compose(OVERRIDES), data)
    assert m.ema_every == 4 and m.ema.foreach and not plain.ema.foreach
    assert m.ema.decay == pytest.approx(plain.ema.decay ** 4)  # the same horizon in steps
