"""Headless Chromium for the tests of web pages (the hub's, the tour's report).

The tests drive Debian's chromium (/usr/bin/chromium) with Playwright and never download a browser; they
skip when either is missing, except under CI=true, where .ci/hub-services.sh installs chromium and a skip
would hide a failure. Screenshots land in the test's tmp dir, and are copied to $ZUPU_SCREENSHOTS when
that is set (.ci/run sets it to build/screenshots, which CI keeps).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_or_skip():
    """Playwright's `sync_playwright`, or a skip (a failure under CI=true) naming what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = ("playwright is not installed (pip install -e '.[test]')" if sync_playwright is None else
               None if Path(CHROMIUM).exists() else
               f"{CHROMIUM} is missing (apt-get install chromium; .ci/hub-services.sh does)")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {missing}")
        pytest.skip(missing)
    return sync_playwright


def check_screenshot(png: bytes, path: Path, width: int, height: int, region: tuple[int, int, int, int]) -> None:
    """A real page, not a blank or broken capture: decodes, has the viewport's size, many colours, ink in `region`."""
    from PIL import Image, ImageStat

    path.write_bytes(png)
    if os.environ.get("ZUPU_SCREENSHOTS"):
        out = Path(os.environ["ZUPU_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / path.name)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.size == (width, height), (path, img.size)
    colours = img.getcolors(maxcolors=1 << 20)
    assert len(colours) >= 50, f"{path} has only {len(colours)} colours: blank?"
    crop = img.crop(region).convert("L")
    assert ImageStat.Stat(crop).stddev[0] > 10, f"{path}: the region {region} is uniform"
    assert sum(crop.histogram()[:128]) > 200, f"{path}: no text in {region}"
