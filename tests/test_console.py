"""What a stage prints: each line once, bjexp's own lines on the console and library chatter in the log file only,
progress lines when stdout is not a terminal, and `--help` with the real groups and options."""
import logging
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from bjexp import progress
from bjexp.logs import ConsoleFilter
from conftest import REPO


def _record(name, level, msg="m", **extra):
    r = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    r.__dict__.update(extra)
    return r


def test_console_filter_keeps_bjexp_and_errors_and_drops_library_chatter():
    f = ConsoleFilter(own=["bjexp", "__main__"], others_level="ERROR")
    assert f.filter(_record("bjexp.sample", logging.INFO))
    assert f.filter(_record("__main__", logging.INFO))
    assert not f.filter(_record("root", logging.WARNING, "Model initialized randomly"))  # open_clip logs on root
    assert not f.filter(_record("lightning.pytorch.utilities.rank_zero", logging.INFO, "GPU available: False"))
    assert not f.filter(_record("py.warnings", logging.WARNING, "UserWarning: ..."))
    assert not f.filter(_record("bjexpfoo", logging.INFO))  # a prefix of a name is not the package
    assert f.filter(_record("torch", logging.ERROR))
    assert not f.filter(_record("bjexp.progress", logging.INFO, console=False))  # file-only line


def test_progress_lines_when_not_a_terminal(monkeypatch, caplog):
    monkeypatch.setenv("BJEXP_PROGRESS", "1")
    caplog.set_level(logging.INFO, logger="bjexp.progress")
    with progress.progress(interval_s=0) as bar:
        assert not bar.terminal  # pytest captures stdout
        task = bar.add_task("train", total=4, unit="steps")
        for i in range(4):
            bar.update(task, completed=i + 1, loss=1.0 / (i + 1))
    lines = [r.getMessage() for r in caplog.records if r.name == "bjexp.progress"]
    assert len(lines) == 4 and all(getattr(r, "console") for r in caplog.records)
    assert lines[0].startswith("train: 1/4 steps (25%) · loss 1") and "ETA" in lines[1]
    assert "loss 0.25" in lines[-1] and "steps/s" in lines[-1] and "done in" in lines[-1]


def test_progress_interval_limits_the_lines(monkeypatch, caplog):
    monkeypatch.setenv("BJEXP_PROGRESS", "1")
    caplog.set_level(logging.INFO, logger="bjexp.progress")
    with progress.progress(interval_s=3600) as bar:
        task = bar.add_task("sample", total=50, unit="pairs")
        for _ in range(50):
            bar.advance(task)
    lines = [r.getMessage() for r in caplog.records if r.name == "bjexp.progress"]
    assert lines == [lines[-1]] and lines[-1].startswith("sample: 50/50 pairs (100%)")  # only the end line


def test_progress_off(monkeypatch, caplog):
    monkeypatch.setenv("BJEXP_PROGRESS", "0")
    caplog.set_level(logging.INFO, logger="bjexp.progress")
    with progress.progress(interval_s=0) as bar:
        task = bar.add_task("x", total=2)
        bar.advance(task, 2)
    assert not [r for r in caplog.records if r.name == "bjexp.progress"]


def test_training_console_once_quiet_and_with_step_progress(tiny_run):
    """The tiny main job with stdout a pipe: progress lines in steps, each line once, no library chatter on the
    console, and the chatter still in train.log."""
    out = tiny_run.stdout
    lines = [ln for ln in out.splitlines() if ln.strip()]
    text_only = [ln.split("] ", 1)[-1] for ln in lines]
    progress_line = re.compile(r"^[^:]+: \d+/\d+")  # two loops may legitimately end with equal lines
    dup = [t for t, n in Counter(text_only).items() if n > 1 and not progress_line.match(t)]
    assert not dup, f"printed more than once: {dup}"
    assert "train: 6/6 steps (100%)" in out and "loss" in out and "steps/s" in out
    assert "ETA" in out and "val/loss" in out
    assert "sample (" in out and "pairs" in out
    assert "Epoch" not in out and "initialized randomly" not in out and "GPU available" not in out
    assert "Warning" not in out + tiny_run.stderr, (out + tiny_run.stderr)[-3000:]
    # libraries' own stderr handlers (Lightning's "INFO: GPU available", diffusers' advice) and the rich model
    # summary reach a terminal too: nothing of them on either stream
    for chatter in ("GPU available", "accelerate", "Params", "float32", "INFO:"):
        assert chatter not in out + tiny_run.stderr, (chatter, (out + tiny_run.stderr)[-3000:])
    log = (tiny_run.dir / "train.log").read_text()
    assert "train: 6/6 steps" in log and "GPU available" in log  # Lightning's lines are kept in the file


@pytest.mark.parametrize("stage", ["train", "sample", "report", "demo"])
def test_help_lists_real_groups_and_options(stage):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", f"bjexp.{stage}", "--help"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    assert out.startswith(f"`python -m bjexp.{stage}")  # the stage's own description
    assert "encoder: *biomedclip, clip" in out and "sampler: ddim, dpmpp, *euler_ancestral" in out
    assert "base_" not in out and "powered by Hydra" not in out
    assert "model_overrides" in out.split("== Options")[0].split("chosen by the groups above")[1]
    assert "progress:\n  interval_s: 30.0" in out  # the options: the composed config
