"""The gradio demo on a finished tiny run: uploads through the image store's readers, clear errors, the run's own
pipeline (a test pair with the run's seed reproduces its sample), gradio_client against the launched app, and the
page in headless Chromium."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from browser import artefact, broken_images, browser
from conftest import REPO

from bjexp.demo import DemoError, difference_map, read_upload, templates

REAL = REPO.parent / "shared" / "data" / "real-cxr" / "singles"


def test_upload_png_jpeg_dicom_read_like_the_image_store(tmp_path):
    from bjexp.data.image_store import preprocess

    img = np.tile(np.arange(96, dtype=np.uint8)[None, :] * 2, (80, 1))  # 96 x 80, a left-to-right ramp
    Image.fromarray(img).save(tmp_path / "p.png")
    Image.fromarray(img).save(tmp_path / "p.jpg", quality=95)
    for name in ("p.png", "p.jpg"):
        out = read_upload(tmp_path / name, 64)
        assert out.shape == (64, 64) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, preprocess(tmp_path / name, 64))
        assert out[:, -1].mean() > out[:, 0].mean() + 100  # never flipped
    dcm = next(REAL.glob("*.dcm"), None)
    if dcm is None:
        pytest.fail(f"real DICOM test data missing in {REAL}")
    assert read_upload(dcm, 64).shape == (64, 64)


def test_upload_errors_are_messages(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(DemoError, match="unreadable image: x.png"):
        read_upload(tmp_path / "x.png", 64)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(DemoError, match="wrong size: small.png is 40x40 px.*at least 64 px"):
        read_upload(tmp_path / "small.png", 64)
    Image.fromarray(np.zeros((64, 300), np.uint8)).save(tmp_path / "wide.png")
    with pytest.raises(DemoError, match="wrong size.*aspect ratio"):
        read_upload(tmp_path / "wide.png", 64)


def test_templates_are_the_describers_wording_and_difference_map_colours():
    t = templates(["Effusion", "Cardiomegaly"])
    assert "new small left pleural effusion" in t and "resolved moderate cardiomegaly" in t
    assert "worsening left pleural effusion, now large" in t and len(t) == len(set(t))
    prior = np.full((4, 4), 100, np.uint8)
    out = prior.copy()
    out[0, 0], out[1, 1] = 228, 0
    d = difference_map(prior, out)
    assert d.shape == (4, 4, 3) and d[0, 0, 0] > d[0, 0, 2] + 50 and d[1, 1, 2] > d[1, 1, 0] + 50  # RdBu_r ends dark
    assert np.abs(d[2, 2].astype(int) - d[2, 2].mean()).max() < 10  # no change: near white/grey


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tiny_run, tmp_path_factory):
    """The demo launched on the tiny run, as a user starts it; yields (url, run dir)."""
    import httpx

    port = _free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BJEXP_PROGRESS": "0"}
    with open(log, "w") as out:
        p = subprocess.Popen([sys.executable, "-m", "bjexp.demo", f"run={tiny_run.dir}", f"demo.port={port}",
                              f"hydra.run.dir={log.parent / 'hydra'}"], cwd=REPO, env=env, stdout=out,
                             stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 900
        while True:
            if p.poll() is not None:
                pytest.fail(f"the demo exited ({p.returncode}):\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the demo did not answer at {url}:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield url, tiny_run.dir, log
    finally:
        p.terminate()
        p.wait(timeout=60)


def _first_pair(run_dir):
    import pandas as pd

    from bjexp.data import manifest as mf
    from bjexp.demo import pair_label
    from bjexp.sample import scored_rows

    df = mf.read(json.loads((run_dir / "run.json").read_text())["manifest"])
    rows = scored_rows(df)
    assert isinstance(df, pd.DataFrame) and len(rows)
    return pair_label(df, rows[0]), df["pair_id"].iat[rows[0]], df["text"].iat[rows[0]]


def test_demo_api_generates_the_runs_own_sample_and_refuses_an_empty_instruction(demo):
    from gradio_client import Client

    url, run_dir, log = demo
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    s = cfg["sampler"]
    label, pid, text = _first_pair(run_dir)
    client = Client(url, verbose=False)
    prior, gen, diff, cur, used, table, seed = client.predict(
        label, None, text, s["text_guidance"], s["image_guidance"], s["steps"], cfg["seed"], False, s["name"],
        api_name="/generate")
    size = cfg["model"]["image_size"]
    out = np.asarray(Image.open(gen).convert("L"))
    assert out.shape == (size, size) and Image.open(diff).size == (size, size)
    assert used["seed"] == cfg["seed"] == seed and used["steps"] == s["steps"] and used["sampler"] == s["name"]
    # The same pipeline as `sample`: the run's seed and settings give the run's own PNG for that pair.
    ref = np.asarray(Image.open(run_dir / "samples" / f"{pid}.png"))
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    assert [r[0] for r in table["data"]][:5] == cfg["eval"]["findings"]
    # Another seed gives another image; an empty instruction is a message, not a traceback.
    other = client.predict(label, None, text, s["text_guidance"], s["image_guidance"], s["steps"], cfg["seed"] + 1,
                           False, s["name"], api_name="/generate")[1]
    assert np.abs(np.asarray(Image.open(other).convert("L")).astype(int) - out).max() > 0
    with pytest.raises(Exception, match="empty instruction"):
        client.predict(label, None, "  ", 7.5, 1.5, 2, 0, False, s["name"], api_name="/generate")
    info = client.view_api(print_info=False, return_format="dict")
    assert {"/generate", "/pick_pair", "/upload_prior", "/use_template"} <= set(info["named_endpoints"])
    # gradio's queue prints the traceback of each gr.Error it turns into a UI message (the empty instructions
    # above); any other traceback is a failure.
    text = log.read_text()
    assert text.count("Traceback") == text.count('gradio.exceptions.Error: "empty instruction'), text[-3000:]


def test_demo_page_in_chromium(demo, tmp_path):
    url, run_dir, _ = demo
    with browser(tmp_path) as ctx:
        page = ctx.new_page()
        page.goto(url, wait_until="networkidle", timeout=300_000)
        page.wait_for_selector("#prior img", timeout=120_000)
        page.click("#generate")
        page.wait_for_function("document.querySelector('#generated img') && "
                               "document.querySelector('#generated img').naturalWidth > 0", timeout=300_000)
        page.wait_for_function("document.querySelector('#difference img') && "
                               "document.querySelector('#difference img').naturalWidth > 0", timeout=60_000)
        assert not broken_images(page)
        page.screenshot(path=artefact(tmp_path, "demo.png"), full_page=True)
        # An empty instruction shows the message in the page.
        page.fill("textarea", "")
        page.click("#generate")
        page.wait_for_selector("text=empty instruction", timeout=120_000)
        page.screenshot(path=artefact(tmp_path, "demo-error.png"), full_page=True)
