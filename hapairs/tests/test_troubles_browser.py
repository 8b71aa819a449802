"""The troubleshooting panel as an operator's Chromium shows it, for each condition it can
raise (the pair's row set as the poller leaves it in each case: the detection itself is
test_troubles and test_e2e_troubleshooting). Screenshots: var/screenshots/trouble-*.png;
MSEPORTAL_SCREENSHOTS_TO_DOCS=1 copies them to docs/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright import sync_api as playwright_sync

from hapairs import services
from hapairs.models import Appliance, HAPair
from hapairs.tests.browser import log_in, orm_beside_playwright  # noqa: F401  (an autouse fixture)
from hapairs.tests.e2e import REPO

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SHOTS = Path(os.environ.get("MSEPORTAL_SCREENSHOT_DIR", REPO / "var" / "screenshots"))
HEALTHY = {
    "primary_state": "PRIMARY_ACTIVE", "secondary_state": "SECONDARY_ACTIVE", "heartbeat": "up", "replication": "up",
    "sync_percent": 100, "primary_reachable": True, "secondary_reachable": True, "primary_services_up": True,
    "secondary_services_up": True, "primary_in_charge": True, "generation": 1, "primary_generation": 1,
    "secondary_generation": 1, "primary_paths": {"hm": "up"}, "secondary_paths": {"hm": "up"},
}  # fmt: skip
AGO = timedelta(minutes=12)
CONDITIONS = {
    "split_brain": (
        {"secondary_state": "FAILOVER_ACTIVE", "secondary_in_charge": True, "secondary_generation": 2,
         "generation": 2, "split_brain": True},
        "split_brain", "Split brain", "Refresh Status",
    ),
    "sync_stuck": (
        {"replication": "setting_up", "sync_percent": 37, "sync_best": 37, "sync_best_at": "ago"},
        None, "Synchronisation stuck at 37 %", "Reset synchronisation…",
    ),
    "secondary_unreachable": (
        {"secondary_reachable": False, "secondary_state": "UNKNOWN"},
        None, "(secondary) unreachable", "Remove the pairing from the primary only…",
    ),
    "primary_unreachable": (
        {"primary_reachable": False, "primary_state": "UNKNOWN", "primary_in_charge": False},
        None, "(primary) unreachable", "Remove the pairing from the secondary only…",
    ),
    "path_down": (
        {"primary_paths": {"hm": "up", "direct": "up"}, "secondary_paths": {"hm": "up", "direct": "down"}},
        "heartbeat_path_down", "Heartbeats down on the direct connect", "Refresh Status",
    ),
    "clock_skew": ({"secondary__clock_offset_ms": 6300}, None, "clock is off", "Refresh Status"),
}  # fmt: skip
SINCE_UNKNOWN = {"clock_skew"}  # measured by each poll, not dated by an event


@pytest.fixture
def pairs(make_appliance):
    """One pair per condition, its row as the poller leaves it when that condition holds."""
    made = {}
    for n, (key, (state, event, _, _)) in enumerate(CONDITIONS.items(), start=1):
        primary = make_appliance(name=f"tp{n}", hm_ip=f"127.66.{n}.2", vip=f"127.66.{n}.1", vip_prefixlen=24)
        secondary = make_appliance(name=f"ts{n}", hm_ip=f"127.66.{n}.3")
        pair = services.ha_pair_create(primary=primary, secondary=secondary)
        values = {k: (timezone.now() - AGO if v == "ago" else v) for k, v in {**HEALTHY, **state}.items()}
        node_values = {
            k.removeprefix("secondary__"): values.pop(k) for k in list(values) if k.startswith("secondary__")
        }
        HAPair.objects.filter(pk=pair.pk).update(status_updated_at=timezone.now(), **values)
        Appliance.objects.filter(pk__in=[primary.pk, secondary.pk]).update(last_seen_at=timezone.now() - AGO)
        Appliance.objects.filter(pk=secondary.pk).update(**node_values)
        if event:
            services.event_record(code=event, generated_by="mseportal", pair=pair, timestamp=timezone.now() - AGO)
        made[key] = primary.name
    return made


def test_the_troubleshooting_panel_for_each_condition(pairs, operator_user, browser, live_server):
    expect = playwright_sync.expect
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log_in(page, live_server.url, "operator1", "pw-for-tests-1")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for key, (_, _, title, action) in CONDITIONS.items():
        page.goto(f"{live_server.url}/mse/{pairs[key]}/ha/")
        panel = page.get_by_role("region", name="Troubleshooting")
        card = panel.locator(f"[data-trouble='{key}']")
        expect(card).to_be_visible()
        assert panel.locator("[data-trouble]").count() == 1, key  # this condition alone
        expect(card.get_by_role("heading")).to_contain_text(title)
        expect(card).to_contain_text("The guide")
        if key not in SINCE_UNKNOWN:
            expect(card).to_contain_text("12 min")  # since when, in words
        control = card.get_by_role("button" if action == "Refresh Status" else "link", name=action)
        expect(control).to_be_visible()
        card.screenshot(path=str(SHOTS / f"trouble-{key}.png"))
        if os.environ.get("MSEPORTAL_SCREENSHOTS_TO_DOCS"):
            shutil.copy(SHOTS / f"trouble-{key}.png", REPO / "docs" / "screenshots" / f"trouble-{key}.png")
    # the offered removal leads to its confirmation
    page.goto(f"{live_server.url}/mse/{pairs['secondary_unreachable']}/ha/")
    page.get_by_role("link", name="Remove the pairing from the primary only…").click()
    expect(page.get_by_role("heading", name="Remove the pairing from the primary only")).to_be_visible()
    expect(page.get_by_label(re.compile("I confirm ts3 is down or will be rebuilt"))).to_be_visible()
    context.close()
