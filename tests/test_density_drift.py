"""benchmarks/density_drift.py: the per-level density error of a run's scored pairs, against hand-made images whose
means are known, on the split the run's results.json names."""
import json
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REPO


def test_density_error_per_race_level_on_the_scored_split(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from density_drift import drift

    run, world = tmp_path / "run", tmp_path / "world"
    (run / "samples").mkdir(parents=True)
    (world / "images").mkdir(parents=True)
    rows, offset = [], {0: 12, 1: 0, 2: -8}  # grey levels added to the current in the generated image
    for i, (split, race) in enumerate([("val", 0), ("val", 1), ("val", 2), ("val", 0), ("test", 2)]):
        cur = np.full((8, 8), 100 + 10 * i, np.uint8)
        Image.fromarray(cur).save(world / "images" / f"c{i}.png")
        Image.fromarray((cur.astype(int) + offset[race]).astype(np.uint8)).save(run / "samples" / f"p{i}.png")
        rows.append({"pair_id": f"p{i}", "split": split, "attr_race": race, "current_path": f"images/c{i}.png"})
    pd.DataFrame(rows).to_csv(world / "manifest.csv", index=False)
    (run / "run.json").write_text(json.dumps({"manifest": str(world / "manifest.csv")}))
    (run / "results.json").write_text(json.dumps({"split": "val", "metrics": {}}))

    d = drift(run)
    assert d["split"] == "val" and d["n"] == 4  # the test pair is not read
    assert {k: v["n"] for k, v in d["levels"].items()} == {0: 2, 1: 1, 2: 1}
    for k, v in d["levels"].items():
        assert v["mean"] == pytest.approx(offset[k] / 255) and v["sd"] == pytest.approx(0, abs=1e-9)
    assert d["spread"] == pytest.approx(20 / 255)
