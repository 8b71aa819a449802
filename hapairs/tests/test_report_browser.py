"""The health report's HTML as a mail client's engine draws it: Debian's Chromium driven by
Playwright, with the e-mail's HTML alone (no portal CSS, no scripts). Written to
var/screenshots/report.png; MSEPORTAL_SCREENSHOTS_TO_DOCS=1 refreshes the README's copy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright import sync_api as playwright_sync

from hapairs import reports
from hapairs.tests.browser import orm_beside_playwright  # noqa: F401  (an autouse fixture)
from hapairs.tests.e2e import REPO
from hapairs.tests.reportfleet import build_fleet

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

SHOTS = Path(os.environ.get("MSEPORTAL_SCREENSHOT_DIR", REPO / "var" / "screenshots"))


@pytest.fixture
def report_html(make_appliance, operator_user):
    """Built before the browser starts: once Playwright's event loop runs in this thread,
    Django would hand the ORM another connection, outside the test's transaction."""
    fleet = build_fleet(make_appliance, operator_user)
    return fleet["switchover"].pk, reports.render_html(reports.report_build(period_days=1))


def test_the_html_report_drawn_by_chromium(report_html, browser):
    expect = playwright_sync.expect
    switchover_job, html = report_html
    context = browser.new_context(viewport={"width": 740, "height": 900}, java_script_enabled=False)
    page = context.new_page()
    page.route("**/*", lambda route: route.abort())  # a mail client loads nothing from outside
    page.set_content(html)

    expect(page.get_by_text("Health report — the last 24 hours")).to_be_visible()
    expect(page.get_by_text("Needs attention")).to_be_visible()
    expect(page.get_by_text(f"requested by operator1 (job #{switchover_job})")).to_be_visible()
    expect(page.get_by_text("12 days left")).to_be_visible()
    assert page.locator("style, link, script, svg").count() == 0  # inline styles only
    # the chart is drawn: 12 bars per pair, the tallest 40 px high, inside the 680 px mail body
    heights = page.eval_on_selector_all("td[title] > div", "els => els.map(e => e.getBoundingClientRect().height)")
    assert sum(1 for h in heights if h >= 2) == 24 and max(heights) == 40
    body = page.locator("table[width='680']").bounding_box()
    assert 600 <= body["width"] <= 680

    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "report.png"), full_page=True)
    context.close()
    assert (SHOTS / "report.png").stat().st_size > 20_000
    if os.environ.get("MSEPORTAL_SCREENSHOTS_TO_DOCS"):
        shutil.copy(SHOTS / "report.png", REPO / "docs" / "screenshots" / "health-report.png")
