"""Headless Chromium for the page tests: Debian's system `chromium` driven by Playwright (no browser download; never
`playwright install`). A missing browser FAILS the test with the install command (`.ci/run` installs it).

Screenshots are test artefacts: `$BJEXP_TEST_ARTEFACTS/<name>.png` when that variable is set (CI keeps them),
else pytest's temporary folder of the test (printed by `artefact`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = os.environ.get("BJEXP_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCAL = {"localhost", "127.0.0.1", "::1", "[::1]"}


@contextlib.contextmanager
def browser(tmp_path: Path):
    """A fresh browser context (own user-data dir). Requests that would leave the machine are refused and listed
    in `ctx.external` (a page that needs the network is a failure the test can assert on)."""
    exe = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not exe:
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (Debian's package; .ci/run installs "
                    f"it) or set BJEXP_CHROMIUM to the browser's path", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "chromium-profile"), executable_path=exe,
                                                   headless=True, args=ARGS, viewport={"width": 1400, "height": 1000})
        ctx.external = []

        def route(r):
            u = urlparse(r.request.url)
            if u.scheme in ("file", "data", "blob") or u.hostname in LOCAL:
                return r.continue_()
            ctx.external.append(r.request.url)
            return r.abort()
        ctx.route("**/*", route)
        try:
            yield ctx
        finally:
            ctx.close()


def artefact(tmp_path: Path, name: str) -> Path:
    """Where a screenshot goes (see the module docstring)."""
    d = Path(os.environ["BJEXP_TEST_ARTEFACTS"]) if os.environ.get("BJEXP_TEST_ARTEFACTS") else tmp_path
    d.mkdir(parents=True, exist_ok=True)
    print(f"screenshot: {d / name}")
    return d / name


def broken_images(page) -> list[str]:
    """`src`s of <img> elements that did not render (naturalWidth 0), after all have finished loading."""
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    return page.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src.slice(0, 80))")
