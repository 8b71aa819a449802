"""End to end: Add Mobility Services Engine's "Delete synchronized service assignments"
(spec §4), with real agents (one farm process) that a manager had synchronized service
assignments to. Checked (the screen's default), the agent deletes them before anything is
recorded, and an event says how many; unchecked, they stay; the deletion is saved by the
agent (a restart does not bring them back). An agent that cannot delete them leaves nothing
added: test_certificates, with scripted replies."""

from __future__ import annotations

import json

import pytest

from hapairs.models import Appliance, HAEvent
from hapairs.tests.e2e import AgentFarm, node_toml
from nodeagent import protocol

from .test_api import token_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SYNCED = '"Context Aware Service: Campus > Building 1 > Floor 1", "Context Aware Service: Campus > Building 1 > Floor 2", "wIPS: Campus"'


def assignments(farm: AgentFarm, name: str) -> list:
    saved = farm.workdir / "state" / name / "service-assignments.json"
    return json.loads(saved.read_text()) if saved.exists() else None


def test_adding_an_appliance_deletes_its_synchronized_service_assignments_when_asked(
    tmp_path, subnet, client, admin_user_, settings
):
    settings.AGENT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    ips = {name: f"{subnet}.{n}" for n, name in enumerate(("as-1", "as-2", "as-3"), start=2)}
    nodes = "".join(
        node_toml(name, "3355", "secondary", ip, f"pw-{name}") + f"service_assignments = [{SYNCED}]\n\n"
        for name, ip in ips.items()
    )
    farm = AgentFarm(tmp_path, nodes, port=settings.AGENT_PORT).start()
    try:
        client.force_login(admin_user_)
        page = client.get("/mse/add/").content.decode()
        assert 'name="delete_assignments"' in page and 'id="id_delete_assignments" checked' in page  # as the seed shows
        assert "permanently removes all service assignments" in page
        # checked: deleted on the agent, then the appliance is recorded, and the event says how many
        form = {
            "name": "as-1",
            "ip": ips["as-1"],
            "username": "admin",
            "password": "pw-as-1",
            "delete_assignments": "on",
        }
        response = client.post("/mse/add/", form)
        assert response.status_code == 302, response.content.decode()[-3000:]
        assert assignments(farm, "as-1") == []
        event = HAEvent.objects.get(description="Synchronized service assignments deleted on as-1")
        assert event.remarks.startswith("3 deleted as it was added")
        # unchecked: they stay
        form = {"name": "as-2", "ip": ips["as-2"], "username": "admin", "password": "pw-as-2"}
        assert client.post("/mse/add/", form).status_code == 302
        assert assignments(farm, "as-2") is None  # never written: the three from its configuration
        assert not HAEvent.objects.filter(description__contains="assignments deleted on as-2").exists()
        # the API: asked for, the same; the count the agent reports goes to zero
        token = token_for(admin_user_)
        body = {"name": "as-3", "ip": ips["as-3"], "password": "pw-as-3", "delete_service_assignments": True}
        response = client.post(
            "/api/v1/appliances",
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 201, response.content
        assert assignments(farm, "as-3") == []
        assert Appliance.objects.count() == 3
    finally:
        farm.stop()
    # the agent kept the deletion across its restart (saved, not seeded again from its configuration)
    farm.start()
    try:
        from hapairs import agent_client

        kept = agent_client.call(
            agent_client.target_for(Appliance.objects.get(name="as-1")), "GET", protocol.PATH_SERVICE_ASSIGNMENTS
        )
        assert kept == {"assignments": []}
        still = agent_client.call(
            agent_client.target_for(Appliance.objects.get(name="as-2")), "GET", protocol.PATH_SERVICE_ASSIGNMENTS
        )
        assert [a["element"] for a in still["assignments"]] == [
            "Campus > Building 1 > Floor 1",
            "Campus > Building 1 > Floor 2",
            "Campus",
        ]
    finally:
        farm.stop()
