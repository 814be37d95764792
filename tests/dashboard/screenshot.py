"""Take the README picture: the "Any two recommenders" view of the fixture reports.

    .venv/bin/python tests/dashboard/screenshot.py [OUT.png]   (default: docs/dashboard.png)

Runs the real app (``streamlit run``) and headless Chromium, like ``test_browser.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import browser_support as bs
from report_fixtures import write_fixture_reports

WIDTH, HEIGHT = 1440, 1500


def take(out: Path) -> Path:
    """Write the screenshot to ``out`` and return it."""
    missing = bs.missing_browser()
    if missing:
        raise SystemExit(missing)
    with tempfile.TemporaryDirectory(prefix="recaudit-shot-") as tmp:
        reports = write_fixture_reports(Path(tmp) / "reports")
        with bs.streamlit_server(reports, Path(tmp) / "streamlit.log") as url, \
                bs.chromium(WIDTH, HEIGHT) as driver:
            bs.open_view(driver, url, view="Any two recommenders")
            bs.wait_for_text(driver, "do not overlap")
            bs.wait_for_chart(driver)
            bs.settle(driver)
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else bs.REPO / "docs" / "dashboard.png"
    sys.stdout.write(f"{take(target)}\n")
