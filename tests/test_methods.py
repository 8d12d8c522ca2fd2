"""The method registry (`method=` is `_target_` + a small protocol) and the JourneyPipeline every method samples
through."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from conftest import REPO, TINY, compose

from bjexp.methods import build_method

METHODS = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))


@pytest.mark.parametrize("name", METHODS)
def test_every_method_config_builds_an_object_with_the_protocol(name):
    m = build_method(compose([f"method={name}"]))
    assert m.name == name and isinstance(m.trains, bool)
    for attr in ("assets", "check", "build", "restore", "generator"):
        assert callable(getattr(m, attr)), attr


def test_unknown_method_class_fails_at_start_up_naming_it():
    cfg = compose(["method=biomedjourney"])
    with open_dict(cfg):
        cfg.method._target_ = "bjexp.methods.trained.NoSuchMethod"
    with pytest.raises(ValueError, match=r"method=biomedjourney: cannot build bjexp\.methods\.trained\.NoSuchMethod"):
        build_method(cfg)


def test_the_old_kind_switch_is_gone_and_a_typo_fails_at_compose():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="kind"):
        compose(["method.kind=diffusion"])


def test_a_text_only_method_refuses_a_prior_conditioning_before_any_data_work():
    m = build_method(compose(["method=roentgen", "conditioning=concat"]))
    with pytest.raises(ValueError, match="method=roentgen is text-only, but conditioning=concat does"):
        m.check(compose(["method=roentgen", "conditioning=concat"]))
    build_method(compose(["method=roentgen"])).check(compose(["method=roentgen"]))  # its own default is fine


def test_identity_generator_returns_its_input():
    gen = build_method(compose(["method=identity"])).generator(None, None, None)
    x = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    out = gen(x, ["a", "b", "c"], generators=[None] * 3, steps=1, image_guidance=1.0, text_guidance=1.0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


@pytest.fixture(scope="module")
def tiny_module(cache_dir):
    from bjexp.workflow import build_module, load_data

    cfg = compose(TINY + ["paths.run_dir=/unused"])
    data = load_data(cfg)
    return cfg, data, build_module(cfg, data)


def test_pipeline_from_a_trained_module_samples_with_the_ema_weights(tiny_module):
    from bjexp.methods.trained import TrainedDiffusion

    cfg, data, module = tiny_module
    with torch.no_grad():  # make the EMA differ from the raw weights
        for p in module.ema.shadow_params:
            p.add_(0.01)
    raw = [p.detach().clone() for p in module.unet.parameters()]
    pipe = TrainedDiffusion().generator(cfg, data, module)
    for p, e in zip(pipe.unet.parameters(), module.ema.shadow_params):
        assert torch.equal(p, e)
    for p, r in zip(module.unet.parameters(), raw):  # the module keeps its raw weights (a copy samples)
        assert torch.equal(p, r)
    # the miniature world keeps its documented convention: bjexp's own schedule, "linspace" Euler-a (first t 999)
    pipe.scheduler.set_timesteps(cfg.sampler.steps)
    assert pipe.scheduler.config.timestep_spacing == "linspace" and int(pipe.scheduler.timesteps[0]) == 999


def test_pipeline_takes_raw_inputs_or_cached_features_with_the_same_result(tiny_module):
    from bjexp.methods.trained import TrainedDiffusion
    from bjexp.models.guidance import pair_generator
    from bjexp.sample import conditions, scored_rows

    cfg, data, module = tiny_module
    pipe = TrainedDiffusion().generator(cfg, data, module)
    rows = scored_rows(data.df, max_pairs=3)
    kw = dict(steps=2, image_guidance=1.5, text_guidance=7.5)
    gens = lambda: [pair_generator(p, 0) for p in data.df["pair_id"].iloc[rows]]  # noqa: E731
    cached = pipe(**conditions(data, rows), generators=gens(), **kw)
    raw = pipe(**conditions(data, rows, cached=False), generators=gens(), **kw)
    assert cached.shape == (3, cfg.model.image_size, cfg.model.image_size) and cached.dtype == torch.uint8
    # cached states are trimmed to the longest text, raw ones padded to 256 tokens: padding is masked, so equal
    assert (cached.int() - raw.int()).abs().max() <= 1
    with pytest.raises(ValueError, match="one per pair"):
        pipe(**conditions(data, rows), generators=gens()[:2], **kw)


def test_sample_stage_refuses_a_run_without_checkpoint_before_loading_data(tmp_path, monkeypatch):
    import bjexp.workflow as wf
    from bjexp import sample

    called = []
    monkeypatch.setattr(wf, "load_data", lambda cfg: called.append(1))
    cfg = compose(TINY + [f"paths.run_dir={tmp_path}"])
    with open_dict(cfg):
        cfg.run = None
    with pytest.raises(FileNotFoundError, match=str(Path(tmp_path) / "checkpoints" / "last.ckpt")):
        sample.run(cfg)
    assert not called
