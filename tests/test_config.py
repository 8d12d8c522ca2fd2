"""Every option of every group and every experiment composes; typos fail at compose time, naming the key."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import REPO, compose

from bjexp.schema.strict import unknown_keys

# Specializing groups are selected by other choices (e.g. model_overrides=${model}), not on their own.
SKIP_GROUPS = {"hydra", "experiment", "local", "model_overrides", "encoder_model", "method_model"}


def _options():
    for group_dir in sorted(p for p in (REPO / "conf").iterdir() if p.is_dir() and p.name not in SKIP_GROUPS):
        for f in sorted(group_dir.glob("*.yaml")):
            yield group_dir.name, f.stem


def _resolve_all_but_runtime(cfg):
    c = OmegaConf.to_container(cfg, resolve=False)
    c.pop("hydra", None)
    c["paths"]["run_dir"] = "/tmp/x"
    return OmegaConf.to_container(OmegaConf.create(c), resolve=True)


@pytest.mark.parametrize("group,option", list(_options()))
def test_every_group_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    assert cfg[group] is not None
    assert unknown_keys(cfg) == []  # every key of every option is declared by its schema
    _resolve_all_but_runtime(cfg)


EXPERIMENTS = sorted(p.relative_to(REPO / "conf" / "experiment").with_suffix("").as_posix()
                     for p in (REPO / "conf" / "experiment").rglob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    cfg = compose([f"experiment={name}"])
    assert unknown_keys(cfg) == []
    _resolve_all_but_runtime(cfg)


def test_experiment_configs_exist():
    assert EXPERIMENTS, "conf/experiment/ should hold the named studies"


@pytest.mark.parametrize("override,needle", [
    ("model.optim.lrr=1", "lrr"),
    ("trainer.max_stepz=3", "max_stepz"),
    ("encoder=biomedclipp", "biomedclipp"),
    ("model.optim.lr=fast", "lr"),
])
def test_typos_fail_at_compose_time_naming_the_key(override, needle):
    with pytest.raises(ConfigCompositionException) as e:
        compose([override])
    assert needle in str(e.value) + str(e.value.__cause__)


def test_default_is_the_paper_method_on_the_miniature_world():
    cfg = compose()
    choices = cfg.hydra.runtime.choices
    assert (choices.data, choices.model, choices.method, choices.conditioning) == ("synthetic", "tiny", "biomedjourney", "concat")
    assert cfg.method.cfg_dropout.text == cfg.method.cfg_dropout.both == cfg.method.cfg_dropout.image == 0.05
    assert cfg.sampler.image_guidance == 1.5 and cfg.sampler.text_guidance == 7.5


def _sweep_jobs(experiment: str) -> list[list[str]]:
    """The jobs `python -m bjexp.train -m experiment=<experiment>` launches, expanded by Hydra's own sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = compose([f"experiment={experiment}"]).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


@pytest.mark.parametrize("experiment,describers,seeds", [
    ("table2_miniature", {"labels", "impression"}, {0, 1}),
    ("table2", {"llm", "impression"}, {0}),
])
def test_table2_sweeps_the_full_factorial_on_the_same_pairs(experiment, describers, seeds):
    """Every cell of describer x registration x curriculum (x seed) is one job; each composes with that arm and
    with the settings that make the arms comparable (same pairs, the same bootstrap resamples)."""
    cells = set()
    for job in _sweep_jobs(experiment):
        cfg = compose([f"experiment={experiment}", *job])
        choices = cfg.hydra.runtime.choices
        cells.add((choices.describer, choices.registration, choices.curriculum, int(cfg.seed)))
        assert list(cfg.registration.same_pairs_as) == ["none", "affine_ecc"] and cfg.eval.bootstrap_seed == 0
    want = {(d, r, c, s) for d in describers for r in ("none", "affine_ecc") for c in ("one_stage", "two_stage")
            for s in seeds}
    assert cells == want


def test_table2_miniature_planted_effects_name_effects_its_sweep_has():
    """The report checks `report.planted` by effect label and metric: each must be one the sweep's factors
    (with `report.reference_levels`) and its metric registry produce, or the report refuses to run."""
    from types import SimpleNamespace

    from bjexp.tracking import effects

    base = compose(["experiment=table2_miniature"])
    refs = {**{g: str(c) for g, c in base.hydra.runtime.choices.items()}, **base.report.reference_levels}
    runs = []
    for job in _sweep_jobs("table2_miniature"):
        ch = compose(["experiment=table2_miniature", *job]).hydra.runtime.choices
        runs.append(SimpleNamespace(choices={g: ch[g] for g in ("describer", "registration", "curriculum")}))
    factors = effects.factors_of(runs, refs)
    assert factors["registration"] == ("none", "affine_ecc")
    labels = {label for label, _, _ in effects._contrasts(factors, sorted({tuple(r.choices[g] for g in factors) for r in runs}))}
    assert base.report.planted and {p.effect for p in base.report.planted} <= labels
    assert {p.metric for p in base.report.planted} <= set(base.eval.metrics)
