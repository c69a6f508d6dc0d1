"""The report as a person sees it: rendered by headless Chromium, then the picture checked.

Two passes over the same page. First Chromium loads a copy with a probe script and dumps
where each figure landed (``--dump-dom``); then it screenshots the page itself, as one
picture of the page's whole height. The picture must be a page, not a blank or a broken
one: ink on it, the report's colours, and every figure on screen at full size, showing the
same pixels as the PNG the report embeds.

Chromium comes from ``tools/install_chromium.sh`` (CI runs it); this test is never
skipped: without a browser it fails and says how to get one.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clearing.report import FIGURE_IDS, FIGURE_IDS_V2, collect_journal, render_html
from tests.report.conftest import WINDOW_WIDTH_PX, assert_painted, render_in_chromium

# The report's own colours: market lines, the fund, clawbacks, bad debt.
REPORT_COLOURS = {
    "blue": (0x1F, 0x77, 0xB4),
    "orange": (0xFF, 0x7F, 0x0E),
    "green": (0x2C, 0xA0, 0x2C),
    "red": (0xD6, 0x27, 0x28),
}


@pytest.fixture(scope="module", params=["journal", "journal_v2"])
def rendered(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The report of a small demo journal, its layout in Chromium and its screenshot: once
    under rules version 1, once under version 2 (whose page adds its own figures)."""
    journal: Path = request.getfixturevalue(request.param)
    where = tmp_path_factory.mktemp("rendered")
    data = collect_journal(str(journal))
    page = render_html(data)
    figure_ids = list(FIGURE_IDS) + (list(FIGURE_IDS_V2) if data.rules_v2 is not None else [])
    return {**render_in_chromium(page, where), "figure_ids": figure_ids}


def test_the_page_is_not_blank_and_has_the_report_colours(rendered: dict[str, Any]) -> None:
    shot: Image.Image = rendered["shot"]
    assert shot.size == (WINDOW_WIDTH_PX, rendered["layout"]["height"])
    pixels = np.asarray(shot).reshape(-1, 3).astype(np.int32)
    ink = float((pixels.min(axis=1) < 235).mean())
    assert ink > 0.03, f"only {ink:.1%} of the page is not white"
    coarse = Counter(((pixels >> 4) @ np.array([256, 16, 1])).tolist())
    assert sum(1 for n in coarse.values() if n >= 200) >= 12, "fewer than 12 distinct colours"
    for name, colour in REPORT_COLOURS.items():
        seen = int((np.abs(pixels - np.array(colour)).max(axis=1) <= 24).sum())
        assert seen >= 1_000, f"the report's {name} ({seen} pixels) is missing from the page"


def test_every_figure_is_on_screen_at_full_size(rendered: dict[str, Any]) -> None:
    rects = {r["id"]: r for r in rendered["layout"]["rects"]}
    figure_ids = rendered["figure_ids"]
    assert list(rects) == figure_ids
    tops = [rects[fig_id]["y"] for fig_id in figure_ids]
    assert tops == sorted(tops), "figures out of order"
    for fig_id, rect in rects.items():
        # Drawn at its own size (10 in at 100 dpi), never scaled down, and not overlapping
        # the next one.
        assert (rect["natural_w"], rect["natural_h"]) == rendered["embedded"][fig_id].size
        assert rect["natural_w"] == 1000 and rect["natural_h"] >= 150, rect
        assert rect["w"] >= rect["natural_w"] and rect["h"] >= rect["natural_h"], rect
        assert rect["x"] >= 0 and rect["x"] + rect["w"] <= WINDOW_WIDTH_PX, rect
    for upper, lower in itertools.pairwise(figure_ids):
        assert rects[upper]["y"] + rects[upper]["h"] <= rects[lower]["y"]


def test_the_screen_shows_the_embedded_plots(rendered: dict[str, Any]) -> None:
    shot: Image.Image = rendered["shot"]
    for rect in rendered["layout"]["rects"]:
        assert_painted(shot, rect, rendered["embedded"][rect["id"]])
