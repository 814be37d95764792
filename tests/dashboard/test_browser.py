"""End to end: ``streamlit run`` on 127.0.0.1, loaded in headless Chromium (Selenium)."""

from __future__ import annotations

from pathlib import Path

import pytest

import browser_support as bs
from audit.data.dataset import Dataset
from pair_reports import read_report, write_pair_run
from report_fixtures import RUN_NEW, RUN_OLD, write_fixture_reports

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = bs.REPO / "test-artifacts"
WIDTH = 1440


@pytest.fixture(scope="module")
def browser_ready() -> None:
    """Fail in CI, skip elsewhere, when Debian's chromium / chromedriver are missing."""
    bs.require_browser()


def test_run_list_and_charts_render_in_a_real_browser(browser_ready, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    reports = write_fixture_reports(tmp_path / "reports")
    ARTIFACTS.mkdir(exist_ok=True)
    with bs.streamlit_server(reports, tmp_path / "streamlit.log") as url, bs.chromium(WIDTH, 1000) as driver:
        bs.open_view(driver, url)
        bs.wait_for_text(driver, RUN_OLD)
        bs.wait_for_text(driver, "Run overview")
        assert bs.wait_for_chart(driver) >= 1
        body = driver.find_element(By.TAG_NAME, "body").text
        assert RUN_NEW in body and "gates failed" in body
        assert "Traceback" not in body
        bs.fit_window_to_page(driver, WIDTH)
        assert driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))

        bs.open_view(driver, url, view="Any two recommenders")
        bs.wait_for_text(driver, "do not overlap")
        assert bs.wait_for_chart(driver) >= 1
        driver.set_window_size(WIDTH, 1000)
        assert driver.save_screenshot(str(ARTIFACTS / "dashboard-compare.png"))
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    assert (ARTIFACTS / "dashboard-compare.png").stat().st_size > 10_000


def test_defended_vs_undefended_shows_the_paired_differences_in_a_real_browser(
        browser_ready, tmp_path: Path, tiny_dataset: Dataset) -> None:
    """The view on a report the real runner wrote (oracle vs reverse declared, oracle+grounding
    derived): the report's paired difference of hr@5 with its CI, its verdict and the forest plots."""
    from selenium.webdriver.common.by import By

    reports = tmp_path / "reports"
    run = write_pair_run(reports, tmp_path / "work", tiny_dataset)
    entry = next(e for e in read_report(run)["pairs"] if (e["b"], e["metric"]) == ("reverse", "hr@5"))
    difference = f"{entry['value']:+.3f} [{entry['ci'][0]:+.3f}, {entry['ci'][1]:+.3f}]"
    ARTIFACTS.mkdir(exist_ok=True)
    with bs.streamlit_server(reports, tmp_path / "streamlit.log") as url, bs.chromium(WIDTH, 1000) as driver:
        bs.open_view(driver, url, view="Defended vs undefended")
        bs.wait_for_text(driver, "reverse vs oracle")
        bs.wait_for_text(driver, difference)
        assert bs.wait_for_chart(driver) >= 2  # one forest plot per pair
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "oracle+grounding vs oracle" in body and "p (Holm)" in body and "p (BH)" in body
        assert "worse" in body and "no detectable difference" in body
        assert "Traceback" not in body
        bs.fit_window_to_page(driver, WIDTH)
        assert driver.save_screenshot(str(ARTIFACTS / "dashboard-pairs.png"))
    assert (ARTIFACTS / "dashboard-pairs.png").stat().st_size > 10_000
