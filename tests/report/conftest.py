"""Journals for the report tests (written through the real sequencer), and a page as
headless Chromium renders it, with the check that a figure is painted as embedded."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageChops

from clearing.demo import SimConfig, Simulator
from clearing.sequencer import Sequencer


def journal_of(
    lines: list[bytes], directory: Path, batch: int = 400, rules_version: int = 1
) -> Path:
    """A local journal of ``lines`` (one input each), as the sequencer writes it."""
    sequencer, _ = Sequencer.open_local(str(directory), None, rules_version=rules_version)
    try:
        for start in range(0, len(lines), batch):
            chunk = lines[start : start + batch]
            sequencer.submit([(f"test:{start + i + 1}", raw) for i, raw in enumerate(chunk)])
    finally:
        sequencer.close(snapshot=False)
    return directory


# About 5k inputs of the demo's markets, crash and the fund's top-up included.
SIZE = SimConfig(seed=1, accounts=1000, duration_s=900.0)


@pytest.fixture(scope="package")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 5k inputs of the demo's market, crash and the fund's top-up included."""
    lines = list(Simulator(SIZE))
    return journal_of(lines, tmp_path_factory.mktemp("report") / "journal")


@pytest.fixture(scope="package")
def journal_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same simulation written for rules version 2 (SPEC §9), as ``clearing demo``
    runs it: ADL, partial steps, funding and the fee split all happen."""
    lines = list(Simulator(dataclasses.replace(SIZE, rules_version=2)))
    return journal_of(lines, tmp_path_factory.mktemp("report-v2") / "journal", rules_version=2)


WINDOW_WIDTH_PX = 1400
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
_PROBE = """<script>window.addEventListener("load", () => {
  const rects = [...document.querySelectorAll("figure img")].map((img) => {
    const r = img.getBoundingClientRect();
    return {id: img.alt, x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,
            natural_w: img.naturalWidth, natural_h: img.naturalHeight};
  });
  const out = document.createElement("pre");
  out.id = "layout";
  out.textContent = JSON.stringify({rects, height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});</script>"""


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.fail("no headless Chromium on PATH: run tools/install_chromium.sh", pytrace=False)


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root, where the sandbox refuses to start
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",  # one CSS pixel = one screenshot pixel
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done


def render_in_chromium(page: str, where: Path) -> dict[str, Any]:
    """``page`` as headless Chromium shows it, in two passes: a copy with a probe script
    dumps where each figure landed (``layout``: rects and page height), then a screenshot
    of the page's whole height (``shot``); with the PNGs the page embeds (``embedded``,
    by figure id), to compare with what is on screen. Without a browser: fails, saying
    how to get one."""
    browser = _browser()
    report = where / "report.html"
    report.write_text(page, encoding="utf-8")
    probe = where / "probe.html"
    probe.write_text(page.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    dom = _chromium(
        browser, where / "profile", f"--window-size={WINDOW_WIDTH_PX},1000", "--dump-dom",
        probe.as_uri(),
    ).stdout  # fmt: skip
    found = re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run: no layout in the dumped page"
    layout = json.loads(found.group(1).replace("&quot;", '"'))
    shot = where / "report.png"
    _chromium(
        browser, where / "profile", f"--window-size={WINDOW_WIDTH_PX},{layout['height']}",
        f"--screenshot={shot}", report.as_uri(),
    )  # fmt: skip
    embedded = {
        fig_id: Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
        for fig_id, data in re.findall(
            r'<figure id="fig-([a-z-]+)"[^>]*><img alt="[^"]*" src="data:image/png;base64,'
            r'([^"]+)"',
            page,
        )
    }
    return {"layout": layout, "shot": Image.open(shot).convert("RGB"), "embedded": embedded}


def assert_painted(shot: Image.Image, rect: dict[str, Any], embedded: Image.Image) -> None:
    """The figure at ``rect`` (its probed layout) shows ``embedded`` on ``shot``, and what
    it shows is a plot: lines, fills and text, not a flat area."""
    # Inside the 1 px border: the plot as the browser painted it. Layout positions are
    # fractional and the browser snaps them to pixels: allow one either way.
    left = rect["x"] + (rect["w"] - embedded.width) / 2
    top = rect["y"] + (rect["h"] - embedded.height) / 2
    off = min(
        _differing_share(shot, embedded, math.floor(left) + dx, math.floor(top) + dy)
        for dx in (0, 1)
        for dy in (0, 1)
    )
    assert off < 0.01, f"{rect['id']}: {off:.1%} of the plot differs on screen"
    colours = embedded.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) >= 8, f"{rect['id']}: a nearly flat picture"


def _differing_share(shot: Image.Image, embedded: Image.Image, left: int, top: int) -> float:
    painted = shot.crop((left, top, left + embedded.width, top + embedded.height))
    difference = np.asarray(ImageChops.difference(painted, embedded).convert("L"))
    return float((difference >= 16).mean())
