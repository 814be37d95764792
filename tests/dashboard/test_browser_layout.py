"""In headless Chromium: the comparison tables fit their width, so no column ("beyond uncertainty",
"better when", n) is cut off behind a horizontal scroll (issue 30, point 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

import browser_support as bs
from report_fixtures import write_fixture_reports

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTH = 1440
#: per drawn table (glide data grid): [its place on the page, its scrollable width, its visible width]
GRID_WIDTHS = """return Array.from(document.querySelectorAll('[data-testid="stDataFrame"]')).map((d, i) => {
  const s = d.querySelector('.dvn-scroller');
  return s ? [i, s.scrollWidth, s.clientWidth] : null; }).filter(x => x);"""


@pytest.fixture(scope="module")
def browser_ready() -> None:
    bs.require_browser()


@pytest.mark.parametrize("view", ["Any two recommenders", "Run vs run"])
def test_comparison_tables_show_every_column_without_scrolling(browser_ready, tmp_path: Path, view: str) -> None:
    reports = write_fixture_reports(tmp_path / "reports")
    with bs.streamlit_server(reports, tmp_path / "streamlit.log") as url, bs.chromium(WIDTH, 1000) as driver:
        bs.open_view(driver, url, view=view)
        bs.wait_for_text(driver, "do not overlap")  # the caption: the view has drawn
        bs.wait_for_chart(driver)
        bs.settle(driver)
        grids = driver.execute_script(GRID_WIDTHS)
    assert len(grids) >= 2  # the summary and at least one probe's table
    cut = [g for g in grids if g[1] > g[2] + 1]
    assert cut == [], f"tables wider than their place (scroll width > visible width): {cut}"
