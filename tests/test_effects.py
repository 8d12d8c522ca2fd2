"""Table 2's effects from a sweep folder: a synthetic 2x2x2 x 2-seed sweep with known effects, built the way
`bjexp.evaluate` writes runs (results.json, run.json, bootstrap.npz)."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from bjexp import report
from bjexp.errors import ConfigError
from bjexp.eval.draws import write_draws

INFO = {"cmig": {"description": "CMIG", "direction": "higher", "headline": True, "bootstrap": True, "unit": "%"},
        "fid": {"description": "FID", "direction": "lower", "headline": True, "bootstrap": False}}
REG, CUR, DES, INTER = 4.0, -2.0, -0.5, 3.0  # planted: registration, curriculum, describer, registration x curriculum


def _truth(reg: int, cur: int, des: int, seed: int) -> float:
    """Cell means with the planted effects (+-1/2 coding) plus a seed offset."""
    r, c, d = reg - 0.5, cur - 0.5, des - 0.5
    return 60 + REG * r + CUR * c + DES * d + INTER * r * c * 2 + (0.6 if seed else -0.6)


def _sweep(root, aligned: bool = True, n_res: int = 400):
    """16 runs. Each run's draws = its value + a patient-resample effect shared by every run (same resamples)
    + a little run-specific noise: the paired CI is much narrower than the per-run CIs."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 3.0, n_res)  # resample i: the same patients in every run
    for i, (reg, cur, des, seed) in enumerate(itertools.product((0, 1), (0, 1), (0, 1), (0, 1))):
        d = root / str(i)
        d.mkdir(parents=True)
        v = _truth(reg, cur, des, seed)
        draws = v + shared + rng.normal(0, 0.2, n_res)
        lo, hi = np.quantile(draws, [0.025, 0.975])
        results = {"metrics": {"test/cmig": {"value": v, "lo": lo, "hi": hi, "n_valid": n_res},
                               "test/fid": {"value": 10.0 + reg, "lo": float("nan"), "hi": float("nan"), "n_valid": 0}},
                   "metric_info": INFO,
                   "bootstrap": {"seed": 0 if aligned else seed, "n_resamples": n_res, "unit": "patient", "rows_hash": "x"}}
        (d / "results.json").write_text(json.dumps(results))
        choices = {"registration": ["none", "affine_ecc"][reg], "curriculum": ["one_stage", "two_stage"][cur],
                   "describer": ["labels", "impression"][des], "encoder": "biomedclip"}
        (d / "run.json").write_text(json.dumps({"choices": choices, "seed": seed}))
        write_draws(d / "bootstrap.npz", {"test/cmig": draws})
    return root


BASE = {"registration": "none", "curriculum": "one_stage", "describer": "labels"}


def test_effects_recover_the_planted_truth_with_paired_cis(tmp_path):
    out = report.write(_sweep(tmp_path), baselines=BASE)
    eff = pd.read_csv(out["effects"]).set_index("effect")
    simple = eff[eff["kind"] == "simple"]
    eff = eff[eff["kind"] != "simple"]
    assert list(eff.index) == ["curriculum: two_stage - one_stage", "describer: impression - labels",
                               "registration: affine_ecc - none", "curriculum x describer",
                               "curriculum x registration", "describer x registration"]
    assert len(simple) == 12  # each factor within each level of each other factor
    # the curriculum effect within each registration level (+-1/2 coding: CUR -+ INTER); they differ by the interaction
    for level, truth in (("none", CUR - INTER), ("affine_ecc", CUR + INTER)):
        row = simple.loc[f"curriculum: two_stage - one_stage at registration={level}"]
        assert row["value"] == pytest.approx(truth, abs=1e-9) and row["lo"] <= truth <= row["hi"]
    assert simple.loc["registration: affine_ecc - none at describer=impression", "value"] == pytest.approx(REG)
    assert set(eff["metric"]) == {"cmig"}  # FID is set-level: no draws, no effect CI
    want = {"registration: affine_ecc - none": REG, "curriculum: two_stage - one_stage": CUR,
            "describer: impression - labels": DES, "curriculum x registration": 2 * INTER,
            "curriculum x describer": 0.0, "describer x registration": 0.0}
    for label, truth in want.items():
        row = eff.loc[label]
        assert row["value"] == pytest.approx(truth, abs=1e-9)
        assert row["lo"] <= truth <= row["hi"], label
        # paired: the patient noise shared by all runs (sd 3, per-run CIs ~12 wide) cancels; seeds' spread remains
        assert row["hi"] - row["lo"] < 4.0
    md = out["markdown"].read_text()
    assert "## Effects" in md and "+4.000 [" in md and "-2.000 [" in md and "registration=none" in md
    assert "effect" in out["html"].read_text()


def test_cli_effects_equal_the_cell_means_by_hand(tmp_path):
    """`python -m bjexp.report` on the sweep folder (reference levels = the config defaults): the interaction is
    (curriculum effect with registration) - (curriculum effect without), computed here from the cell means."""
    import subprocess
    import sys

    from conftest import REPO

    subprocess.run([sys.executable, "-m", "bjexp.report", f"run={_sweep(tmp_path)}", "hydra.run.dir=" + str(tmp_path / "h")],
                   cwd=REPO, check=True, capture_output=True)
    eff = pd.read_csv(tmp_path / "effects.csv").set_index("effect")["value"]
    cells = {(r, c, d): np.mean([_truth(r, c, d, s) for s in (0, 1)]) for r, c, d in itertools.product((0, 1), repeat=3)}
    with_reg = np.mean([cells[1, 1, d] - cells[1, 0, d] for d in (0, 1)])
    without = np.mean([cells[0, 1, d] - cells[0, 0, d] for d in (0, 1)])
    # The default registration is affine_ecc: it is the reference level, so both effects are taken against it.
    assert eff["curriculum x registration"] == pytest.approx(without - with_reg)
    assert eff["registration: none - affine_ecc"] == pytest.approx(
        np.mean([cells[0, c, d] for c in (0, 1) for d in (0, 1)]) - np.mean([cells[1, c, d] for c in (0, 1) for d in (0, 1)]))


def test_misaligned_draws_give_point_effects_and_say_why(tmp_path):
    out = report.write(_sweep(tmp_path, aligned=False), baselines=BASE)
    eff = pd.read_csv(out["effects"])
    assert eff["lo"].isna().all() and eff["value"].notna().all()
    assert "No CIs" in out["markdown"].read_text() and "eval.bootstrap_seed=0" in out["markdown"].read_text()


def test_no_effects_for_a_sweep_that_is_not_a_two_level_factorial(tmp_path):
    for i, method in enumerate(("biomedjourney", "identity", "roentgen")):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "results.json").write_text(json.dumps({"metrics": {"test/cmig": {"value": 50.0 + i, "lo": 40, "hi": 60}}}))
        (d / "run.json").write_text(json.dumps({"choices": {"method": method}, "seed": 0}))
    out = report.write(tmp_path)
    assert "effects" not in out and "## Effects" not in out["markdown"].read_text()


def test_planted_effects_get_a_verdict_from_their_ci(tmp_path):
    """report.planted: the registration effect (+4, CI well clear of 0) is recovered as planted and contradicted
    when planted the other way; the null curriculum x describer interaction is not shown; report.reference_levels
    turns the registration effect around."""
    from omegaconf import OmegaConf

    from bjexp.schema.core import ReportConfig

    planted = [{"effect": "registration: affine_ecc - none", "metric": "cmig", "sign": "+", "why": "pose"},
               {"effect": "registration: affine_ecc - none", "metric": "cmig", "sign": "-"},
               {"effect": "curriculum x describer", "metric": "cmig", "sign": "+"}]
    rcfg = OmegaConf.structured(ReportConfig(planted=planted, reference_levels={"registration": "none"}))
    out = report.write(_sweep(tmp_path), rcfg, baselines={**BASE, "registration": "affine_ecc"})
    check = pd.read_csv(out["planted"])
    assert list(check["verdict"]) == ["recovered", "contradicted", "not shown (CI holds 0)"]
    assert check["measured"][0].startswith("+4.000 [")
    md = out["markdown"].read_text()
    assert "## Planted by construction" in md and "| registration: affine_ecc - none | cmig | + | +4.000 [" in md
    assert "Planted by construction" in out["html"].read_text()

    bad = OmegaConf.structured(ReportConfig(planted=[{"effect": "registration: on - off", "metric": "cmig", "sign": "+"}]))
    with pytest.raises(ConfigError, match=r"no effect 'registration: on - off'.*registration: affine_ecc - none / cmig"):
        report.write(tmp_path, bad, baselines=BASE)


def test_planted_without_cis_reads_the_sign_only(tmp_path):
    from omegaconf import OmegaConf

    from bjexp.schema.core import ReportConfig

    rcfg = OmegaConf.structured(ReportConfig(planted=[
        {"effect": "curriculum: two_stage - one_stage", "metric": "cmig", "sign": "-"}]))
    check = pd.read_csv(report.write(_sweep(tmp_path, aligned=False), rcfg, baselines=BASE)["planted"])
    assert list(check["verdict"]) == ["sign only (no CI): as planted"]
