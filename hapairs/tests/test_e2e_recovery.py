"""End to end, one agent process per node (so one can be stopped or wiped alone): HA
recovery mode, and maintenance mode pausing the automatic failover.

HA recovery mode (spec §3). A paired primary loses its configuration; set
up again in recovery mode, it does not claim the VIP; the portal's recover job makes the
secondary take charge and restores the primary behind it (TERMINATED); a failback then
brings every element written before the loss back to the primary.

Real agent processes (one farm per node, so the primary can be wiped alone), a real
Celery worker, the REST API, the test database.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
import urllib.error
import urllib.request

import pytest

from hapairs.models import Appliance, HAEvent, HAPair, Job
from hapairs.tests.e2e import AgentFarm, farm_per_node, node_toml, pair_through_api, wait_for, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ELEMENTS = "/api/contextaware/v1/elements"


def vip_call(vip: str, password: str, method: str = "GET", body: dict | None = None):
    request = urllib.request.Request(
        f"http://{vip}:8001{ELEMENTS}" + ("?limit=1000" if method == "GET" else ""),
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={
            "Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode(),
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return None, None  # nobody serves the VIP


def test_a_primary_that_lost_its_configuration_is_recovered_behind_the_secondary(tmp_path, subnet, worker, api):
    p_ip, s_ip, vip = f"{subnet}.15", f"{subnet}.16", f"{subnet}.14"
    primary_toml = node_toml("mse-p", "3355", "primary", p_ip, "pw-primary", vip=vip)
    farm_p, farm_s = farm_per_node(tmp_path, ("mse-p", p_ip, "pw-primary", vip), ("mse-s", s_ip, "pw-secondary"))
    try:
        # Given a healthy pair holding some data
        pair_through_api(api, worker, ("mse-p", p_ip, "pw-primary"), ("mse-s", s_ip, "pw-secondary"))
        written = {f"02:00:00:00:00:{n:02x}" for n in range(5)}
        for mac in written:
            assert vip_call(vip, "pw-primary", "POST", {"mac": mac, "x": 1, "y": 2, "floor": 3})[0] in (200, 201)

        # Nothing to recover while the primary has its configuration
        refused = api("post", "/appliances/mse-p/ha/recover", {"reason": "too soon"})
        assert refused.status_code == 409 and "nothing to recover" in refused.json()["detail"]

        # When the primary loses its configuration and is set up again in recovery mode
        farm_p.stop()
        shutil.rmtree(tmp_path / "p" / "state")
        farm_p = AgentFarm(tmp_path / "p", primary_toml + "recovery = true\n", port=8001).start()
        # rebuilt, it made a new TLS certificate: refused until an Admin trusts it
        presented = wait_for(
            lambda: api("get", "/appliances/mse-p").json()["tls_presented"],
            timeout=30,
            what="the portal to refuse the rebuilt primary's new certificate",
        )
        trusted = api("post", "/appliances/mse-p/certificate/trust", {"fingerprint": presented}, as_="admin")
        assert trusted.status_code == 200, trusted.content
        # and the job that gives the secondary the primary's new certificate is done
        repin = Job.objects.get(kind="update_ha", params__repin=Appliance.objects.get(name="mse-p").pk)
        wait_job(api, repin.pk, worker=worker)
        status = wait_for(
            lambda: (lambda s: s if s["primary_state"] == "UNKNOWN" and s["primary_reachable"] else None)(
                api("get", "/appliances/mse-p/ha").json()
            ),
            timeout=30,
            what="the portal to see the primary without its configuration",
        )
        assert status["secondary_state"] != "FAILOVER_ACTIVE"
        assert vip_call(vip, "pw-primary")[0] is None  # it does not claim the VIP on its own

        # the recover job makes the secondary take charge and restores the primary behind it
        response = api("post", "/appliances/mse-p/ha/recover", {"reason": "mse-p rebuilt after a disk failure"})
        assert response.status_code == 202, response.content
        wait_job(api, response.json()["id"], worker=worker)
        status = api("get", "/appliances/mse-p/ha").json()
        assert (status["primary_state"], status["secondary_state"]) == ("TERMINATED", "FAILOVER_ACTIVE")
        code, data = vip_call(vip, "pw-primary")
        assert code == 200 and {e["mac"] for e in data["elements"]} == written
        assert HAEvent.objects.filter(description="Primary mse-p recovered from mse-s").count() == 1
        assert HAEvent.objects.filter(appliance__name="mse-p", code="config_restored").exists()

        # and, once the window allows, a failback brings the data and the VIP back to the primary
        allowed_at = HAPair.objects.get().switch_allowed_at
        time.sleep(max(0.0, allowed_at.timestamp() - time.time()) + 1.5)
        response = api("post", "/appliances/mse-p/ha/failback", {"reason": "back to normal"})
        assert response.status_code == 202, response.content
        wait_job(api, response.json()["id"], worker=worker)
        wait_for(
            lambda: (lambda s: (s["primary_state"], s["secondary_state"]) == ("PRIMARY_ACTIVE", "SECONDARY_ACTIVE"))(
                api("get", "/appliances/mse-p/ha").json()
            ),
            timeout=60,
            what="PRIMARY_ACTIVE / SECONDARY_ACTIVE",
        )
        code, data = vip_call(vip, "pw-primary")
        assert code == 200 and data["served_by"] == "mse-p" and {e["mac"] for e in data["elements"]} == written
        assert Job.objects.filter(kind="recover_primary", status="succeeded").count() == 1
    finally:
        farm_p.stop()
        farm_s.stop()


def test_maintenance_mode_pauses_the_agents_automatic_failover(tmp_path, subnet, worker, api):
    """Maintenance is not only a banner: the secondary stops deciding by itself."""
    p_ip, s_ip, vip = f"{subnet}.25", f"{subnet}.26", f"{subnet}.24"
    primary, secondary = ("mnt-p", p_ip, "pw-primary", vip), ("mnt-s", s_ip, "pw-secondary")
    farm_p, farm_s = farm_per_node(tmp_path, primary, secondary)
    try:
        pair_through_api(api, worker, primary, secondary, failover="automatic", wait=2)

        # maintenance on: a job tells the agents
        response = api("post", "/appliances/mnt-p/ha/maintenance", {"on": True, "reason": "replacing the PSU"})
        assert response.status_code == 200, response.content
        job = Job.objects.get(kind="set_maintenance")
        wait_job(api, job.pk, worker=worker)
        assert api("get", "/appliances/mnt-p/ha").json()["maintenance"]["by"] == "operator1"

        # the primary fails (SIGKILL, not a deliberate stop): with maintenance on, nobody takes over
        farm_p.kill()
        time.sleep(2 * 3 + 1)  # three times the wait
        status = api("get", "/appliances/mnt-s/ha").json()
        assert status["secondary_state"] != "FAILOVER_ACTIVE"
        assert vip_call(vip, "pw-primary")[0] is None

        # maintenance off (the primary is still down: told to the secondary, noted for the primary)
        response = api("post", "/appliances/mnt-p/ha/maintenance", {"on": False, "reason": "PSU replaced"})
        assert response.status_code == 200, response.content
        wait_job(api, Job.objects.filter(kind="set_maintenance").order_by("-pk").first().pk, worker=worker)
        assert HAEvent.objects.filter(code="maintenance_not_told").exists()
        wait_for(
            lambda: api("get", "/appliances/mnt-s/ha").json()["secondary_state"] == "FAILOVER_ACTIVE",
            timeout=30,
            what="the secondary to take over once maintenance ended",
        )
        assert vip_call(vip, "pw-primary")[0] == 200
    finally:
        farm_p.stop()
        farm_s.stop()
