"""End to end on a real network: the portal on the LAN of test hosts in network namespaces.

The portal (this test process, its live server and a real Celery worker, in the root
namespace) sits on the lab's bridge as 198.18.N.1 (``Lab(portal=True)``). It adds two real
agents (iproute VIP driver, a direct-connect cable between them) and pairs them with a real
witness, as an operator would through the API. Then the network fails under it:

* the direct cable pulled: a heartbeat-path event and alert in the portal, no takeover;
* the two nodes cut from each other on the LAN too (both still reach the witness and the
  portal): the secondary's takeover is refused by the witness, the portal raises a
  partition alert with the remedy, never two owners of the VIP;
* the status screen's Network block, in Chromium, shows every path, the witness's verdict
  and portal↔node reachability (screenshot ``ha-status-network``).

Needs root, CAP_NET_ADMIN and Debian's arping (skipped otherwise, saying what is missing;
CI must run it). Addresses only in 198.18.0.0/15, removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
from django.conf import settings
from django.db import connections
from playwright import sync_api as playwright_sync

from hapairs.choices import AlertKind
from hapairs.models import Alert, HAEvent, HAPair
from hapairs.tests.browser import CHROMIUM, CHROMIUM_ARGS, orm_beside_playwright  # noqa: F401 - autouse fixture
from hapairs.tests.e2e import REPO, Worker, wait_for, wait_job
from hapairs.tests.test_browser import SHOTS, log_in, shot
from nodeagent.tests import netns
from nodeagent.tests.agentutil import node_toml
from nodeagent.tests.netns import PRIMARY, SECONDARY, WITNESS, Lab
from nodeagent.tests.test_netns import IPROUTE_KEYS, PW, WITNESS_PORT, WITNESS_PW, Agent, WitnessProc

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.serial, pytest.mark.django_db(transaction=True)]

WAIT = 10  # the portal's shortest Long Failover Wait
NETWORKS = "127.0.0.0/8,198.18.0.0/15"  # the portal may call agents on loopback and the lab


@pytest.fixture(autouse=True)
def lab_networks(settings):
    """The portal calls agents only inside MSEPORTAL_AGENT_NETWORKS: here, the lab's too."""
    settings.AGENT_ALLOWED_NETWORKS = NETWORKS.split(",")


@pytest.fixture
def worker(tmp_path, live_server):
    started = Worker(
        tmp_path,
        {
            "MSEPORTAL_INGEST_URL": f"{live_server.url}/api/v1/ingest/events",  # not reachable from the lab:
            # the agents' pushes fail there, and the portal's polls bring their events in
            "MSEPORTAL_AGENT_NETWORKS": NETWORKS,
            "MSEPORTAL_HA_STABILISATION_SECONDS": "900",
            "MSEPORTAL_POLL_SECONDS": "1",
            "MSEPORTAL_RESUME_SECONDS": "1",
            "MSEPORTAL_HA_SYNC_TIMEOUT_SECONDS": "90",
        },
    ).start()
    yield started
    started.stop_checked()


@pytest.fixture
def lab():
    netns.require()
    lab = Lab(direct=True, portal=True)
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()


def refreshed(name: str) -> HAPair:
    return HAPair.objects.select_related("primary", "secondary").get(primary__name=name)


def summary(pair: HAPair) -> dict:
    """What a failure message shows of the pair's row."""
    keep = ("primary_state", "secondary_state", "primary_paths", "secondary_paths", "primary_witnesses",
            "secondary_witnesses", "primary_reachable", "secondary_reachable", "heartbeat")  # fmt: skip
    return {k: getattr(pair, k, None) for k in keep}


def test_the_portal_on_the_lan_pairs_real_hosts_with_a_witness_and_shows_each_partition(
    lab, tmp_path, worker, api, live_server, make_user
):
    assert settings.AGENT_PORT == 8001, "the agents in the lab listen on the portal's agent port"
    hp, hs = lab.host(PRIMARY), lab.host(SECONDARY)
    direct = 'direct_interface = "eth1"\n'
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        node_toml("nico", "3355", "primary", hp.ip, PW["nico"], vip=lab.vip, direct_connect=hp.direct_ip)
        + IPROUTE_KEYS
        + direct
        + node_toml("nico2", "3355", "secondary", hs.ip, PW["nico2"], direct_connect=hs.direct_ip)
        + IPROUTE_KEYS
        + direct
    )
    witness = WitnessProc(lab, tmp_path)
    witness.start()
    agents = [Agent(lab, PRIMARY, "nico", fleet, tmp_path), Agent(lab, SECONDARY, "nico2", fleet, tmp_path)]
    for agent in agents:
        agent.start()
    owners: list[tuple[float, bool, bool]] = []
    try:
        # Given both appliances added and paired through the API, across the LAN, with the witness
        def answers():
            return all(netns.sh(["ping", "-n", "-q", "-c", "1", "-W", "1", h.ip], check=False).returncode == 0
                       for h in (hp, hs))  # fmt: skip

        assert wait_for(answers, timeout=10, what="the hosts on the portal's LAN")
        for name, host in (("nico", hp), ("nico2", hs)):
            # an add the agent cannot answer yet (still starting) is refused and records nothing
            body = {"name": name, "ip": host.ip, "password": PW[name]}
            wait_for(lambda b=body: api("post", "/appliances", b, as_="admin").status_code == 201, timeout=20,
                     what=f"{name} added across the LAN")  # fmt: skip
        response = api(
            "post",
            "/appliances/nico/ha",
            {
                "secondary_name": "nico2",
                "secondary_ip": hs.ip,
                "secondary_password": PW["nico2"],
                "failover_type": "automatic",
                "failback_type": "manual",
                "long_failover_wait": WAIT,
                "witnesses": [f"{lab.ip(WITNESS)}:{WITNESS_PORT}"],
                "witness_password": WITNESS_PW,
            },
        )
        assert response.status_code == 202, response.content
        wait_job(api, response.json()["id"], worker=worker)

        def active_on_every_path():
            pair = refreshed("nico")
            ok = (
                pair.primary_state == "PRIMARY_ACTIVE"
                and pair.secondary_state == "SECONDARY_ACTIVE"
                and {k: v.lower() for k, v in pair.secondary_paths.items()} == {"hm": "up", "direct": "up"}
                and pair.primary_witnesses  # the primary holds its lease (a secondary asks only to take over)
                and all(w["ok"] for w in pair.primary_witnesses)
                and pair.primary_reachable
                and pair.secondary_reachable
            )
            return pair if ok else None

        try:
            pair = wait_for(active_on_every_path, timeout=60, what="the pair Active on both paths, witnessed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {summary(refreshed('nico'))}\n{worker.tail()}") from None
        assert lab.has_addr(PRIMARY, lab.vip) and not lab.has_addr(SECONDARY, lab.vip)

        # When the direct cable is pulled (the LAN fine)
        lab.pull_direct()
        t_pull = time.monotonic()

        # Then the portal shows the path down, records the event and raises the heartbeat-path alert
        def path_alert():
            return Alert.objects.filter(kind=AlertKind.HEARTBEAT_PATH).first()

        alert = wait_for(path_alert, timeout=30, what="a heartbeat-path alert")
        event = HAEvent.objects.filter(code="heartbeat_path_down").first()
        assert event is not None and "direct-connect link" in event.remarks and "no failover" in event.remarks
        print(f"\n[netns portal] direct cable pulled: heartbeat-path alert after {time.monotonic() - t_pull:.1f} s")
        pair = refreshed("nico")
        assert (pair.primary_state, pair.secondary_state) == ("PRIMARY_ACTIVE", "SECONDARY_ACTIVE")

        # When the two nodes are also cut from each other on the LAN (both still reach the
        # witness, the clients and the portal): every path between them is down
        lab.cut_pair()
        t_cut = time.monotonic()

        # Then the witness, which still sees the primary, refuses the secondary's takeover, and the
        # portal raises a partition alert with the remedy; one owner of the VIP all along
        def partition_alert():
            owners.append((time.monotonic(), lab.has_addr(PRIMARY, lab.vip), lab.has_addr(SECONDARY, lab.vip)))
            return Alert.objects.filter(kind=AlertKind.PARTITION).first()

        partition = wait_for(partition_alert, timeout=WAIT + 30, what="a partition alert")
        refused = HAEvent.objects.filter(code="takeover_refused").first()
        assert refused is not None and "witness sees the primary" in refused.remarks, refused and refused.remarks
        print(
            f"[netns portal] pair cut on every path: partition alert after {time.monotonic() - t_cut:.1f} s"
            f" (wait {WAIT} s); VIP on both hosts in {sum(a and b for _, a, b in owners)} of {len(owners)} samples"
        )

        def matrix_shows_it():
            pair = refreshed("nico")
            paths = {k: v.lower() for k, v in pair.secondary_paths.items()}
            return pair if paths == {"hm": "down", "direct": "down"} and pair.secondary_witnesses else None

        pair = wait_for(matrix_shows_it, timeout=20, what="both heartbeat paths shown down")
        assert pair.primary_state == "PRIMARY_ACTIVE" and pair.secondary_state != "FAILOVER_ACTIVE"

        # and the status screen shows it all, in a real browser
        make_user("Monitor", username="watcher", password="pw-watcher-1")
        # (Chromium only now: Playwright's loop in this thread would stop the portal's own agent calls above)
        with playwright_sync.sync_playwright() as pw:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                _look_at_the_network_block(chromium.new_page(viewport={"width": 1280, "height": 900}), lab, live_server)
            finally:
                chromium.close()
                connections.close_all()  # the connection Django opened in Playwright's context
        if os.environ.get("MSEPORTAL_SCREENSHOTS_TO_DOCS"):
            shutil.copy(SHOTS / "ha-status-network.png", REPO / "docs" / "screenshots" / "ha-status-network.png")

        # and the alerts are the pair's (their remedies: test_alerts)
        assert alert.pair_id == pair.pk and "Heartbeat path down" in alert.title, alert.title
        assert partition.pair_id == pair.pk and "Partition" in partition.title, partition.title

        # When the network heals, the pair is Active again on both paths
        lab.heal_pair()
        lab.plug_direct()
        t_heal = time.monotonic()
        try:
            wait_for(active_on_every_path, timeout=30, what="the pair Active again on both paths")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {summary(refreshed('nico'))}") from None
        print(
            f"[netns portal] healed: the portal shows the pair Active on both paths after {time.monotonic() - t_heal:.1f} s"
        )
    finally:
        for agent in agents:
            if agent.alive():
                agent.kill()
    assert not [x for x in owners if x[1] and x[2]], "never two owners of the VIP"


def _look_at_the_network_block(page, lab: Lab, live_server) -> None:
    log_in(page, live_server.url, "watcher", "pw-watcher-1")
    page.goto(f"{live_server.url}/mse/nico/ha/")
    network = page.locator("table.network")
    expect = playwright_sync.expect
    expect(page.get_by_role("heading", name="Network")).to_be_visible()
    expect(network.locator("tr", has_text="Health Monitor network")).to_contain_text("Down")
    expect(network.locator("tr", has_text="direct connect")).to_contain_text("Down")
    expect(network.locator("tr", has_text=f"nico ↔ witness {lab.ip(WITNESS)}")).to_contain_text("Up")
    expect(network.locator("tr", has_text=f"nico2 ↔ witness {lab.ip(WITNESS)}")).to_contain_text("Up")  # it refused
    expect(network.locator("tr", has_text="portal ↔ nico2")).to_contain_text("Up")
    expect(page.locator("#witness-verdict")).to_contain_text("witness sees the primary")
    expect(page.locator("#no-witness-risk")).to_have_count(0)
    shot(page, "ha-status-network")
