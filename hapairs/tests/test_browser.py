"""An operator's day in a real browser (Debian's Chromium driven by Playwright) against the
live portal, real agent processes on loopback and a real Celery worker.

Log in, add two VAs through the wizard, activate the primary on the Licenses page, open
"N/A (Click here to configure)", fill the form by its labels (activating the secondary
with its license), save, confirm, watch "Active", switch over and see "Instance is in
failover active state", be refused a failback inside the stabilisation window with the
reason shown. A Monitor sees no action buttons and the server refuses the actions too.

Each screen is written to var/screenshots/ (MSEPORTAL_SCREENSHOT_DIR); the README shows
some of them.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from playwright import sync_api as playwright_sync

from hapairs import licenses
from hapairs.models import Appliance
from hapairs.tests.browser import log_in, orm_beside_playwright  # noqa: F401  (an autouse fixture)
from hapairs.tests.e2e import REPO, AgentFarm, Worker, node_toml
from hapairs.tests.loopback import third_octet

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SHOTS = Path(os.environ.get("MSEPORTAL_SCREENSHOT_DIR", REPO / "var" / "screenshots"))
SUBNET = f"127.62.{third_octet(itertools.count(os.getpid()))}"  # per process (and xdist worker): no collisions
# Tests run with DEBUG off, where the development key is refused: sign with a key of our own.
LICENSE_KEY = Ed25519PrivateKey.generate()
LICENSE_PUBLIC = licenses.public_key_b64(LICENSE_KEY.public_key())


@pytest.fixture(autouse=True)
def trusted_license_key(settings):
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = LICENSE_PUBLIC


@pytest.fixture
def agents(tmp_path):
    farm = AgentFarm(
        tmp_path,
        node_toml("mse1", "VA-High", "primary", f"{SUBNET}.12", "pw-mse1", vip=f"{SUBNET}.11")
        + node_toml("mse2", "VA-High", "secondary", f"{SUBNET}.13", "pw-mse2"),
        port=settings.AGENT_PORT,
    ).start()
    yield farm
    farm.stop()


@pytest.fixture
def worker(tmp_path, live_server):
    started = Worker(
        tmp_path,
        {
            "MSEPORTAL_INGEST_URL": f"{live_server.url}/api/v1/ingest/events",
            "MSEPORTAL_HA_STABILISATION_SECONDS": "900",
            "MSEPORTAL_POLL_SECONDS": "2",
            "MSEPORTAL_RESUME_SECONDS": "2",
            "MSEPORTAL_HA_SYNC_TIMEOUT_SECONDS": "90",
            "MSEPORTAL_LICENSE_PUBLIC_KEYS": LICENSE_PUBLIC,
        },
    ).start()
    yield started
    started.stop_checked()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def activation_license(tmp_path: Path, appliance: str) -> Path:
    """An activation license (L-MSE-7.0-K9) bound to the appliance's UDI."""
    udi = Appliance.objects.get(name=appliance).udi
    text = licenses.render_license_file(
        [licenses.LicenseSpec(feature=licenses.ACTIVATION_FEATURE, count=1, host_udi=udi)],
        LICENSE_KEY,
        comment=f"activation for {appliance}",
    )
    path = tmp_path / f"{appliance}-activation.lic"
    path.write_text(text)
    return path


def add_appliance(page, base: str, name: str, ip: str, password: str) -> None:
    page.goto(f"{base}/mse/")
    page.get_by_role("link", name="Add Mobility Services Engine").click()
    page.get_by_label("Device Name").fill(name)
    page.get_by_label("IP Address").fill(ip)
    page.get_by_label("Contact Name").fill("NOC Seoul")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Save").click()
    expect = playwright_sync.expect
    expect(page.get_by_role("heading", name=re.compile(f"License summary — {name}"))).to_be_visible()
    expect(page.get_by_role("columnheader", name="Platform Limit")).to_be_visible()
    if name == "mse1":
        shot(page, "02-add-license-summary")
    page.get_by_role("link", name="Next").click()
    expect(page.get_by_role("heading", name=f"Services on {name}")).to_be_visible()
    page.get_by_role("link", name="Next").click()
    expect(page.get_by_role("heading", name=f"{name} is added")).to_be_visible()


def test_an_operators_day(browser, agents, worker, live_server, make_user, tmp_path):
    expect = playwright_sync.expect
    expect.set_options(timeout=20_000)
    base = live_server.url
    make_user("Admin", "alice", "alice-pw-1")
    make_user("Monitor", "mona", "mona-pw-1")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()

    # Log in and add two VAs through the wizard
    log_in(page, base, "alice", "alice-pw-1")
    add_appliance(page, base, "mse1", f"{SUBNET}.12", "pw-mse1")
    add_appliance(page, base, "mse2", f"{SUBNET}.13", "pw-mse2")
    page.goto(f"{base}/mse/")
    expect(page.get_by_role("row", name=re.compile("mse2"))).to_contain_text("MSE Virtual Appliance (High)")
    shot(page, "01-mse-list")

    # Pairing a VA needs it activated: the primary's license through the Licenses page
    page.get_by_role("link", name="Licenses").click()
    page.get_by_role("link", name="Upload license file").click()
    page.get_by_label("Appliance").select_option("mse1")
    page.get_by_label("License file").set_input_files(str(activation_license(tmp_path, "mse1")))
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("status")).to_contain_text("verified for mse1 (MSE_ACTIVATION × 1)")

    # Open "N/A (Click here to configure)" and fill the form by its labels
    page.goto(f"{base}/mse/")
    page.get_by_role("row", name=re.compile("mse1")).get_by_role("link", name="N/A (Click here to configure)").click()
    expect(page.get_by_label("Primary Health Monitor IP")).to_have_value(f"{SUBNET}.12")
    page.get_by_label("Secondary Device Name").fill("mse2")
    page.get_by_label("Secondary IP Address").fill(f"{SUBNET}.13")
    page.get_by_label("Secondary Password").fill("pw-mse2")
    page.get_by_label("Failover Type").select_option(label="Manual")
    page.get_by_label("Failback Type").select_option(label="Manual")
    page.get_by_label("Long Failover Wait").fill("10")
    # the rules are checked live: mse2 is not activated yet, and it says so next to the license field
    expect(page.locator("#err-activation_license")).to_contain_text("The virtual appliance mse2 is not activated")
    expect(page.locator("#secondary-activation")).to_have_text("Not Activated")
    expect(page.locator("#secondary-udi")).to_contain_text("AIR-MSE-VA")
    shot(page, "03-configure-rule-check")
    page.get_by_label("Activate Secondary with License").set_input_files(str(activation_license(tmp_path, "mse2")))
    expect(page.locator("#rule-check")).to_contain_text("Every pairing rule passes")
    expect(page.locator("#secondary-activation")).to_have_text("Activated")
    page.get_by_label("Secondary Password").fill("pw-mse2")  # a password is never sent back to the page
    page.get_by_role("button", name="Save").click()

    # Saving asks for confirmation, then "Please Wait…", then the status screen
    expect(page.get_by_role("heading", name="Confirm the High Availability configuration")).to_be_visible()
    assert "pw-mse2" not in page.content()
    shot(page, "04-configure-confirm")
    page.get_by_role("button", name="Confirm").click()
    expect(
        page.get_by_text(
            "Please Wait. High Availability configuration is being created at the Primary and "
            "Secondary servers. This will take a few seconds..."
        )
    ).to_be_visible()
    shot(page, "05-configure-please-wait")
    page.wait_for_url(re.compile(r".*/mse/mse1/ha/$"))
    expect(page.get_by_role("heading", name=re.compile("Current High Availability Status"))).to_be_visible()
    # HTMX keeps it live until the pair is Active
    expect(page.locator("#ha-status-text")).to_have_text(re.compile(r"^\s*Active\s*$"), timeout=90_000)
    expect(page.locator("#ha-status")).to_contain_text("PRIMARY_ACTIVE")
    expect(page.locator("#ha-status")).to_contain_text("Heartbeats have been setup successfully")
    expect(page.locator("#ha-status")).to_have_attribute("data-live", "off", timeout=30_000)
    shot(page, "06-ha-status-active")

    # Switchover: the pre-flight check, a confirmation, then the failover
    page.get_by_role("link", name="Switchover…").click()
    expect(page.get_by_role("heading", name="Pre-flight check")).to_be_visible()
    expect(page.locator("ul.checks")).not_to_contain_text("✘")
    shot(page, "07-switchover-preflight")
    page.get_by_label("Reason").fill("patching mse1")
    page.get_by_role("button", name="Confirm switchover").click()
    expect(page.locator("#ha-status-text")).to_have_text(
        re.compile(r"Instance is in failover active state"), timeout=60_000
    )
    expect(page.locator("#ha-status")).to_contain_text("FAILOVER_ACTIVE")
    expect(page.locator("#ha-status")).to_contain_text("Failover invoked; starting application instance")
    shot(page, "08-ha-status-failover-active")

    # A failback right away is refused, saying why and from when
    page.get_by_role("link", name="Failback…").click()
    expect(page.get_by_role("alert")).to_contain_text("Failback is not possible now.")
    expect(page.get_by_role("alert")).to_contain_text("allowed from")
    expect(page.get_by_role("button", name="Confirm failback")).to_have_count(0)
    shot(page, "09-failback-refused")

    # The list follows the services: the secondary's came out of DORMANT, the primary's stopped
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Mobility Services Engines").click()
    expect(page.get_by_role("row", name=re.compile("^mse2"))).to_contain_text("Context Aware Service: Enabled / Up")
    expect(page.get_by_role("row", name=re.compile("^mse1"))).to_contain_text("Context Aware Service: Enabled / Down")

    # The other screens
    page.get_by_role("link", name="High Availability", exact=True).click()
    expect(page.get_by_role("row", name=re.compile("mse2"))).to_contain_text("mse1")
    shot(page, "10-ha-overview")
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.locator("#job-table")).to_contain_text("Switchover")
    shot(page, "11-jobs")
    page.locator("#job-table").get_by_role("link", name="Switchover").first.click()
    expect(page.locator("#job-progress")).to_contain_text("Succeeded", timeout=30_000)
    shot(page, "12-job-detail")
    page.goto(f"{base}/mse/mse2/")
    expect(page.locator("#hainfo")).to_contain_text("Base high availability configuration for this server")
    expect(page.locator("#hainfo")).to_contain_text("Current state: FAILOVER_ACTIVE")
    expect(page.locator("#serverinfo")).to_contain_text("Server Config")
    shot(page, "13-mse-detail")
    context.close()

    # A Monitor sees no action buttons, and the server refuses the actions anyway
    monitor = browser.new_context(viewport={"width": 1400, "height": 900})
    page = monitor.new_page()
    log_in(page, base, "mona", "mona-pw-1")
    page.goto(f"{base}/mse/mse1/ha/")
    expect(page.locator("#ha-status")).to_contain_text("FAILOVER_ACTIVE")
    for name in ("Switchover…", "Failback…", "Edit parameters", "Start maintenance"):
        expect(page.get_by_role("link", name=name)).to_have_count(0)
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    shot(page, "14-monitor-status")
    csrf = next(c["value"] for c in monitor.cookies() if c["name"] == "csrftoken")
    for path in ("/mse/mse1/ha/failback/", "/mse/mse1/ha/switchover/", "/mse/mse1/ha/maintenance/"):
        response = monitor.request.post(
            f"{base}{path}",
            form={"reason": "not mine to do", "on": "on"},
            headers={"X-CSRFToken": csrf, "Referer": f"{base}/mse/mse1/ha/"},
        )
        assert response.status == 403, path
        assert "Your role (Monitor) may not" in response.text()
    monitor.close()
    if os.environ.get("MSEPORTAL_SCREENSHOTS_TO_DOCS"):  # how the README's pictures are refreshed
        for name in (
            "01-mse-list",
            "03-configure-rule-check",
            "06-ha-status-active",
            "08-ha-status-failover-active",
            "09-failback-refused",
        ):
            shutil.copy(SHOTS / f"{name}.png", REPO / "docs" / "screenshots" / f"{name}.png")
