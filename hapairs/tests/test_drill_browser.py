"""A failover drill on the demo's 3355 pair (mse3355-1 → mse3355-2 of fleet/demo.toml, its
types, UDIs, passwords and direct-connect link, moved onto this test's loopback subnet),
started from the browser by an operator: the status page shows its scorecard, and the
health report e-mail carries the same figures. Real agents, a real worker, Debian's
Chromium. Screenshots: var/screenshots/drill-scorecard.png and drill-report.png."""

from __future__ import annotations

import itertools
import os
import re
import shutil
from pathlib import Path

import pytest
from playwright import sync_api as playwright_sync

from hapairs import drills, reports
from hapairs.models import Drill, HAPair, Job
from hapairs.tests.browser import log_in, orm_beside_playwright  # noqa: F401  (an autouse fixture)
from hapairs.tests.e2e import REPO, AgentFarm, node_toml, pair_through_api, wait_for, wait_job
from hapairs.tests.loopback import third_octet
from nodeagent.config import load_fleet

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SHOTS = Path(os.environ.get("MSEPORTAL_SCREENSHOT_DIR", REPO / "var" / "screenshots"))
SUBNET = f"127.64.{third_octet(itertools.count(os.getpid()))}"


def moved(address: str | None) -> str | None:
    """The demo's 127.10.10.N (and its direct link 127.1.1.N, as .10N) on this test's subnet."""
    if address is None:
        return None
    if address.startswith("127.10.10."):
        return f"{SUBNET}.{address.rsplit('.', 1)[1]}"
    if address.startswith("127.1.1."):
        return f"{SUBNET}.{100 + int(address.rsplit('.', 1)[1])}"
    raise AssertionError(f"the demo fleet has an address this test does not move: {address}")


@pytest.fixture
def demo_3355_pair(tmp_path):
    nodes = load_fleet(str(REPO / "fleet" / "demo.toml")).nodes
    toml = ""
    for name in ("mse3355-1", "mse3355-2"):
        node = nodes[name]
        assert node.device_type == "3355" and node.direct_connect, node
        toml += node_toml(
            node.name, node.device_type, node.role.value, moved(node.hm_ip), node.password,
            vip=moved(node.vip), version=node.version, udi=node.udi,
        ) + f'direct_connect = "{moved(node.direct_connect)}"\n'  # fmt: skip
    farm = AgentFarm(tmp_path, toml, port=8001).start()
    yield {name: nodes[name] for name in ("mse3355-1", "mse3355-2")}
    farm.stop()


@pytest.fixture
def paired(demo_3355_pair, worker, api):
    """Paired through the API before the browser starts (Playwright's event loop in this
    thread would stop the portal's own calls to the agents)."""
    primary, secondary = demo_3355_pair["mse3355-1"], demo_3355_pair["mse3355-2"]
    pair_through_api(
        api,
        worker,
        (primary.name, moved(primary.hm_ip), primary.password, moved(primary.vip)),
        (secondary.name, moved(secondary.hm_ip), secondary.password),
    )
    wait_for(
        lambda: api("get", "/appliances/mse3355-1/ha/preflight?action=switchover").json()["allowed"],
        timeout=60,
        what="the demo's 3355 pair to pass the pre-flight check",
    )
    # both heartbeat paths carry heartbeats (the secondary, discovered by the pairing, got its
    # direct-connect address recorded and sent to the primary)
    wait_for(
        lambda: HAPair.objects.get().secondary_paths == {"hm": "up", "direct": "up"},
        timeout=30,
        what="heartbeats on both paths",
    )


def test_a_drill_on_the_demos_3355_pair_from_the_browser_to_the_report(paired, worker, api, browser, live_server):
    expect = playwright_sync.expect
    expect.set_options(timeout=30_000)

    # The operator opens the drill page from the status page, reads the check, starts it
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    log_in(page, live_server.url, "operator1", "pw-for-tests-1")
    page.goto(f"{live_server.url}/mse/mse3355-1/ha/")
    page.get_by_role("link", name="Failover drill…").click()
    expect(page.get_by_role("heading", name="Failover drill: mse3355-1 / mse3355-2")).to_be_visible()
    expect(page.get_by_text("✔ Data replication in sync")).to_be_visible()
    page.get_by_label("Reason").fill("quarterly failover drill")
    page.get_by_role("button", name="Start the drill").click()
    page.wait_for_url(re.compile(r".*/mse/mse3355-1/ha/$"))
    expect(page.get_by_text("Failover drill started")).to_be_visible()

    # It runs to its end (8 s of stabilisation window here) and the page shows its scorecard
    job = Job.objects.get(kind="drill")
    wait_job(api, job.pk, timeout=180, worker=worker)
    card = Drill.objects.get().scorecard
    assert card["writes_lost"] == 0 and card["writes_acknowledged"] > 100, card
    assert card["served_by"] == ["mse3355-1", "mse3355-2"], card
    page.reload()
    table = page.locator("table.drills")
    expect(table).to_contain_text("quarterly failover drill")
    expect(table).to_contain_text("Succeeded")
    assert table.locator("dd").all_inner_texts() == [value for _, value in drills.scorecard_rows(card)]
    assert table.locator("dd").nth(4).inner_text() == f"{card['outage_s']:g} s"  # the switchover's outage
    page.locator("#drills").scroll_into_view_if_needed()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "drill-scorecard.png"), full_page=True)
    table.screenshot(path=str(SHOTS / "drill-scorecard-table.png"))  # the README's picture

    # And the health report e-mail has the same figures (its HTML as a mail client draws it)
    html = reports.render_html(reports.report_build(period_days=1))
    mail = context.new_page()
    mail.route("**/*", lambda route: route.abort())
    mail.set_content(html)
    expect(mail.get_by_text(f"Drill #{Drill.objects.get().pk}")).to_be_visible()
    expect(mail.get_by_text("Client-visible outage (switchover)")).to_be_visible()
    figures = mail.locator("table[data-scorecard] strong").all_inner_texts()
    assert figures == [value for _, value in drills.scorecard_rows(card)], figures
    mail.screenshot(path=str(SHOTS / "drill-report.png"), full_page=True)
    context.close()
    assert (SHOTS / "drill-scorecard.png").stat().st_size > 20_000
    if os.environ.get("MSEPORTAL_SCREENSHOTS_TO_DOCS"):
        shutil.copy(SHOTS / "drill-scorecard-table.png", REPO / "docs" / "screenshots" / "drill-scorecard.png")
