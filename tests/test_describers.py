"""describer=labels and describer=impression on label/report columns (hand-written expectations)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from conftest import compose

from bjexp.data import describe
from bjexp.data.describe.impression import ImpressionDescriber
from bjexp.data.describe.labels import LabelsDescriber
from bjexp.errors import ConfigError

NAN = math.nan


def frame(rows: list[tuple[dict, dict]]) -> pd.DataFrame:
    names = ["Cardiomegaly", "Effusion", "Edema", "No Finding"]
    out = []
    for prior, current in rows:
        r = {}
        for n in names:
            r[f"prior_{n}"] = prior.get(n, NAN)
            r[f"current_{n}"] = current.get(n, NAN)
        out.append(r)
    return pd.DataFrame(out, index=[f"row{i}" for i in range(len(rows))])


ROWS = [
    ({"Effusion": 0.0}, {"Effusion": -1.0}),                  # uncertain new
    ({"Effusion": -1.0}, {"Effusion": 1.0}),                  # uncertain -> definite
    ({"Cardiomegaly": 1.0}, {"Cardiomegaly": NAN, "Edema": 1.0}),  # blank current
    ({"No Finding": 1.0}, {"No Finding": 1.0}),               # nothing present
]


def test_uncertain_policies():
    df = frame(ROWS)
    assert LabelsDescriber(uncertain="uncertain")(df)["text"].tolist() == [
        "new possible pleural effusion", "pleural effusion, previously possible",
        "resolved cardiomegaly; new pulmonary edema", "no acute cardiopulmonary process, unchanged"]
    assert LabelsDescriber(uncertain="positive")(df)["text"].tolist()[:2] == [
        "new pleural effusion", "pleural effusion unchanged"]
    assert LabelsDescriber(uncertain="negative")(df)["text"].tolist()[:2] == [
        "no acute cardiopulmonary process, unchanged", "new pleural effusion"]


def test_blank_policies_and_finding_subset():
    df = frame(ROWS)
    # unknown: cardiomegaly is blank in the current study, so nothing is claimed about it; edema (blank prior) is new
    assert LabelsDescriber(blank="unknown")(df)["text"].iloc[2] == "new pulmonary edema"
    assert LabelsDescriber(findings=["Edema"])(df)["text"].iloc[2] == "new pulmonary edema"
    assert LabelsDescriber(findings=["Edema", "Cardiomegaly"])(df)["text"].iloc[2] == (
        "new pulmonary edema; resolved cardiomegaly")  # the configured order
    with pytest.raises(ValueError, match="unknown finding.*'Effusions'"):
        LabelsDescriber(findings=["Effusions"])
    with pytest.raises(ValueError, match="describer.uncertain='maybe'"):
        LabelsDescriber(uncertain="maybe")


def test_unlabelled_study_is_a_row_failure_not_no_change():
    df = frame([({}, {"Effusion": 1.0}), ({"Effusion": 1.0}, {"Effusion": 1.0})])
    out = LabelsDescriber()(df)
    assert out["text"].tolist() == [None, "pleural effusion unchanged"]
    assert out["text_error"].tolist() == ["no labels for the prior study", None]
    assert list(out.index) == ["row0", "row1"]
    # with the builder's explicit flags, a label row with all cells blank is still a valid (empty) study
    df = df.assign(prior_has_labels=[True, True], current_has_labels=[True, False])
    out = LabelsDescriber()(df)
    assert out["text_error"].tolist() == [None, "no labels for the current study"]
    assert out["text"].iloc[0] == "new pleural effusion"


def test_impression_describer():
    df = pd.DataFrame({"current_impression": ["Small effusion.", "", "", ""],
                       "current_findings": ["x", "Heart normal. Lungs clear.", "", ""],
                       "current_report_found": [True, True, True, False]})
    out = ImpressionDescriber()(df)
    assert out["text"].tolist() == ["Small effusion.", "Heart normal. Lungs clear.", None, None]
    assert out["text_error"].tolist()[2:] == ["current report has no IMPRESSION/FINDINGS", "current report not found"]
    assert ImpressionDescriber(fallback_findings=False)(df)["text"].tolist()[1] is None
    assert ImpressionDescriber(max_chars=14)(df)["text"].iloc[1] == "Heart normal."


@pytest.mark.parametrize("option, cls", [("labels", LabelsDescriber), ("impression", ImpressionDescriber)])
def test_options_compose_with_no_required_fields(option, cls):
    cfg = compose([f"describer={option}"])
    assert isinstance(describe.build(cfg.describer), cls)
    with pytest.raises(Exception, match="uncertan"):
        compose(["describer=labels", "describer.uncertan=positive"])  # typo fails at compose time


class ShoutingDescriber(LabelsDescriber):
    """A user's own describer, plugged in by `_target_` alone (no edit of bjexp)."""

    def __call__(self, pairs):
        out = super().__call__(pairs)
        return out.assign(text=out["text"].str.upper())


def test_a_describer_is_its_target_class_and_a_bad_target_is_named():
    cfg = compose(["describer=labels", f"describer._target_={__name__}.ShoutingDescriber", "describer.blank=unknown"])
    d = describe.build(cfg.describer)
    assert type(d) is ShoutingDescriber and d.blank == "unknown"
    with pytest.raises(ConfigError, match=r"describer._target_='bjexp.nowhere.Describer'"):
        describe.build(compose(["describer=labels", "describer._target_=bjexp.nowhere.Describer"]).describer)
    with pytest.raises(ConfigError, match="describer 'labels' has no _target_"):
        describe.build({"name": "labels"})
