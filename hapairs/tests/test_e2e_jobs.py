"""End to end: real agent processes, a real Celery worker, the REST API, the test database.

add → configure HA → Active; switchover → FAILOVER_ACTIVE; failback refused inside the
stabilisation window and allowed after it; 2:1 on a 3355; a worker killed mid-job; a pair
configured with a real witness.
"""

from __future__ import annotations

import json
import time

import pytest

from hapairs import agent_client, selectors
from hapairs.models import HAEvent, HAPair, Job
from hapairs.tests.e2e import (
    AgentFarm,
    WitnessProcess,
    Worker,
    add,
    farm_per_node,
    node_toml,
    pair_through_api,
    wait_for,
    wait_job,
)
from nodeagent import protocol

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def portal_metrics() -> dict[tuple[str, tuple], float]:
    """One scrape of the portal's metrics (hapairs.metrics; GET /metrics serves the same),
    parsed by prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    from hapairs import metrics

    body, _ = metrics.exposition()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_pair_switch_over_and_fail_back_a_3355_pair(tmp_path, subnet, worker, api):
    # Given two 3355 agents, as in the seed's direct-connect scenario
    p_ip, s_ip, vip = f"{subnet}.15", f"{subnet}.16", f"{subnet}.14"
    farm = AgentFarm(
        tmp_path,
        node_toml("mse3355-1", "3355", "primary", p_ip, "pw-primary", vip=vip)
        + node_toml("mse3355-2", "3355", "secondary", s_ip, "pw-secondary"),
        port=8001,
    ).start()
    try:
        # When the operator adds the primary (the portal discovers it)
        found = add(api, "mse3355-1", p_ip, "pw-primary")
        assert (found["device_type"], found["version"], found["vip"]) == ("3355", "7.2.103.0", vip)

        # and configures HA with the secondary's name, IP and password
        response = api(
            "post",
            "/appliances/mse3355-1/ha",
            {
                "secondary_name": "mse3355-2",
                "secondary_ip": s_ip,
                "secondary_password": "pw-secondary",
                "failover_type": "manual",
                "failback_type": "manual",
                "long_failover_wait": 10,
            },
        )
        assert response.status_code == 202, response.content
        wait_job(api, response.json()["id"], worker=worker)

        # Then the pair is Active, with the seed's events in the seed's order
        status = api("get", "/appliances/mse3355-1/ha").json()
        assert status["status"] == "Active", status
        assert (status["primary_state"], status["secondary_state"]) == ("PRIMARY_ACTIVE", "SECONDARY_ACTIVE")
        assert status["heartbeats"] == "Up" and status["data_replication"] == "Up"
        assert status["mean_heartbeat_response_ms"] is not None
        pair = HAPair.objects.get()
        before = portal_metrics()
        # When the operator switches over
        response = api("post", "/appliances/mse3355-1/ha/switchover", {"reason": "maintenance test"})
        assert response.status_code == 202, response.content
        wait_job(api, response.json()["id"], worker=worker)
        status = api("get", "/appliances/mse3355-1/ha").json()
        # Then the secondary is in charge
        assert status["secondary_state"] == "FAILOVER_ACTIVE"
        assert status["status"] == "Instance is in failover active state"
        assert status["generation"] >= 2
        # and the portal's metrics say so: one failover more, the operator's, and its job
        after = wait_for(
            lambda: (m := portal_metrics())[("mseportal_failovers_total", (("cause", "operator"),))] == 1 and m,
            timeout=20, what="the failover in the metrics",
        )  # fmt: skip
        assert before[("mseportal_failovers_total", (("cause", "operator"),))] == 0
        assert after[("mseportal_jobs_total", (("kind", "switchover"), ("status", "succeeded")))] == 1
        assert after[("mseportal_pair_secondary_states", (("state", "FAILOVER_ACTIVE"),))] == 1
        assert before[("mseportal_pair_secondary_states", (("state", "SECONDARY_ACTIVE"),))] == 1

        # When the operator brings the primary back up, it is TERMINATED (the secondary keeps charge)
        response = api("post", "/appliances/mse3355-1/services/start", {"reason": "primary repaired"})
        assert response.status_code == 202, response.content
        wait_job(api, response.json()["id"], worker=worker)
        wait_for(
            lambda: api("get", "/appliances/mse3355-1/ha").json()["primary_state"] == "TERMINATED",
            timeout=30,
            what="the primary to come back as TERMINATED",
        )

        # And a failback right away is refused, saying when it will be allowed
        response = api("post", "/appliances/mse3355-1/ha/failback", {"reason": "too early"})
        assert response.status_code == 409
        assert "allowed from" in response.json()["detail"]

        # After the window, failback brings the primary back in charge
        allowed_at = HAPair.objects.get().switch_allowed_at
        time.sleep(max(0.0, (allowed_at.timestamp() - time.time())) + 1.5)  # the agents report whole seconds
        response = api("post", "/appliances/mse3355-1/ha/failback", {"reason": "back to normal"})
        assert response.status_code == 202, response.content
        wait_job(api, response.json()["id"], worker=worker)
        wait_for(
            lambda: (lambda s: s["primary_state"] == "PRIMARY_ACTIVE" and s["secondary_state"] == "SECONDARY_ACTIVE")(
                api("get", "/appliances/mse3355-1/ha").json()
            ),
            timeout=60,
            what="PRIMARY_ACTIVE / SECONDARY_ACTIVE after failback",
        )

        # And each node's events of the pairing came in the seed's order
        seed_order = [
            "Configuration successfully created",
            "Primary and secondary server synchronization in progress",
            "Heartbeats have been setup successfully",
            "Active",
        ]
        for node in ("mse3355-1", "mse3355-2"):
            descriptions = list(
                HAEvent.objects.filter(pair=pair, appliance__name=node, seq__isnull=False)
                .order_by("seq")
                .values_list("description", flat=True)
            )
            seen = [text for text in descriptions if text in seed_order]
            assert list(dict.fromkeys(seen)) == seed_order, (node, descriptions)

    finally:
        farm.stop()


def test_2_to_1_on_a_3355(tmp_path, subnet, worker, api):
    s_ip = f"{subnet}.16"
    farm = AgentFarm(
        tmp_path,
        node_toml("mse3310", "3310", "primary", f"{subnet}.17", "pw-3310", vip=f"{subnet}.18")
        + node_toml("mse3350", "3350", "primary", f"{subnet}.22", "pw-3350", vip=f"{subnet}.21")
        + node_toml("mse3355-2", "3355", "secondary", s_ip, "pw-3355"),
        port=8001,
    ).start()
    try:
        add(api, "mse3310", f"{subnet}.17", "pw-3310")
        add(api, "mse3350", f"{subnet}.22", "pw-3350")
        jobs = []
        for primary in ("mse3310", "mse3350"):
            response = api(
                "post",
                f"/appliances/{primary}/ha",
                {
                    "secondary_name": "mse3355-2",
                    "secondary_ip": s_ip,
                    "secondary_password": "pw-3355",
                },
            )
            assert response.status_code == 202, response.content
            jobs.append(response.json()["id"])
        for job_id in jobs:
            wait_job(api, job_id, worker=worker)
        pairs = {p.primary.name: p for p in HAPair.objects.select_related("primary")}
        assert pairs["mse3310"].instance_db_name == "mseos3" and pairs["mse3350"].instance_db_name == "mseos4"
        for primary in ("mse3310", "mse3350"):
            status = api("get", f"/appliances/{primary}/ha").json()
            assert status["status"] == "Active", status
        # the secondary's gethainfo, through the portal, shows both instances as in the seed
        text = api("get", "/appliances/mse3355-2/hainfo").content.decode()
        assert "Health Monitor is running. Retrieving HA related information" in text
        assert "Server role: Secondary" in text and "Number of paired peers: 2" in text
        assert "Instance database name: mseos3" in text and "Instance database name: mseos4" in text
        assert text.count("Current state: SECONDARY_ACTIVE") == 2
        server = api("get", "/appliances/mse3355-2/serverinfo").content.decode()
        assert "DORMANT" in server
        # a third primary is refused by the rules before any agent is touched
        response = api(
            "post",
            "/appliances/mse3310/ha",
            {
                "secondary_name": "mse3355-2",
                "secondary_ip": s_ip,
                "secondary_password": "pw-3355",
            },
        )
        # refused for the state things are in (409: mse3310 is paired already), not as a bad request
        assert response.status_code == 409 and "already paired" in response.json()["detail"]
    finally:
        farm.stop()


@pytest.fixture
def stalling_worker(tmp_path, live_server):
    """A worker that stalls after the switchover's invoke step has reached the agent."""
    started = Worker(
        tmp_path,
        {
            "MSEPORTAL_INGEST_URL": f"{live_server.url}/api/v1/ingest/events",
            "MSEPORTAL_JOB_LEASE_SECONDS": "3",
            "MSEPORTAL_RESUME_SECONDS": "1",
            "MSEPORTAL_POLL_SECONDS": "2",
            "MSEPORTAL_FAULT_PAUSE_AFTER_STEP": "switchover_invoke",
        },
    ).start()
    yield started
    started.stop()


def test_a_worker_killed_mid_switchover_finishes_the_job_once(tmp_path, subnet, stalling_worker, api, live_server):
    worker = stalling_worker
    p_ip, s_ip, vip = f"{subnet}.15", f"{subnet}.16", f"{subnet}.14"
    farm = AgentFarm(
        tmp_path,
        node_toml("p1", "3355", "primary", p_ip, "pw-p", vip=vip) + node_toml("s1", "3355", "secondary", s_ip, "pw-s"),
        port=8001,
    ).start()
    try:
        add(api, "p1", p_ip, "pw-p")
        response = api(
            "post", "/appliances/p1/ha", {"secondary_name": "s1", "secondary_ip": s_ip, "secondary_password": "pw-s"}
        )
        wait_job(api, response.json()["id"], worker=worker)

        # When the worker is killed with SIGKILL once the switchover has been invoked
        response = api("post", "/appliances/p1/ha/switchover", {"reason": "crash test"})
        job_id = response.json()["id"]
        wait_for(
            lambda: "pausing after step switchover_invoke" in worker.tail(),
            timeout=30,
            every=0.05,
            what="the invoke step to reach the agent",
        )
        worker.kill()
        job = Job.objects.get(pk=job_id)
        assert job.status == "running" and job.steps_done == ["check_generation"]

        # Then a restarted worker resumes it and it finishes
        env = {k: v for k, v in worker.env.items() if k.startswith("MSEPORTAL_") and "FAULT" not in k}
        env["MSEPORTAL_FAULT_PAUSE_AFTER_STEP"] = ""
        restarted = Worker(tmp_path, env).start()
        try:
            body = wait_job(api, job_id, worker=restarted, timeout=90)
        finally:
            restarted.stop()
        assert body["steps_done"] == ["check_generation", "switchover_invoke", "wait_failover_active"]
        assert Job.objects.get(pk=job_id).attempts == 2
        # the agent acted once: one failover in its event log, no duplicate events stored
        invoked = HAEvent.objects.filter(code="failover_shutting_down_primary")
        assert invoked.filter(appliance__name="s1").count() == 1
        seqs = list(HAEvent.objects.filter(seq__isnull=False).values_list("appliance_id", "seq"))
        assert len(seqs) == len(set(seqs))
    finally:
        farm.stop()


def test_an_automatic_failover_by_the_agents_reaches_the_portal_with_its_time(tmp_path, subnet, worker, api):
    # Given a pair whose nodes run in separate processes, with automatic failover after 3 s
    p_ip, s_ip, vip = f"{subnet}.15", f"{subnet}.16", f"{subnet}.14"
    primary, secondary = ("auto-p", p_ip, "pw-p", vip), ("auto-s", s_ip, "pw-s")
    primary_farm, secondary_farm = farm_per_node(tmp_path, primary, secondary)
    try:
        pair_through_api(api, worker, primary, secondary, failover="automatic", wait=3)

        # When the primary dies
        killed_at = time.time()
        primary_farm.process.kill()
        primary_farm.process.wait(timeout=10)

        # Then the portal learns of the failover from the secondary, timed when it happened
        event = wait_for(
            lambda: HAEvent.objects.filter(appliance__name="auto-s", code="failover_active").first(),
            timeout=30,
            what="the failover event from the secondary",
        )
        assert killed_at + 2 <= event.timestamp.timestamp() <= killed_at + 15
        wait_for(
            lambda: api("get", "/appliances/auto-p/ha").json()["secondary_state"] == "FAILOVER_ACTIVE",
            timeout=20,
            what="the portal to record FAILOVER_ACTIVE",
        )
        status = api("get", "/appliances/auto-p/ha").json()
        assert any(e["description"] == "Instance is in failover active state" for e in status["events"])
        wait_for(lambda: HAPair.objects.get().primary_reachable is False, timeout=20, what="the primary unreachable")

        # and it says why: the agent's rule and what it saw, the portal's for the node it lost
        takeover = HAEvent.objects.get(appliance__name="auto-s", code="failover_shutting_down_primary")
        assert takeover.job_id is None and takeover.why["rule"] == "takeover.silence", takeover.why
        assert takeover.why["inputs"]["failover_wait_s"] == 3.0
        assert 3.0 <= takeover.why["inputs"]["silence_s"] < 6.0
        assert takeover.why["text"].startswith("Takeover after ") and "the wait is 3 s" in takeover.why["text"]
        lost = HAEvent.objects.filter(appliance__name="auto-s", code="heartbeats_lost").first()
        assert lost is not None
        assert lost.why["rule"] == "heartbeat.down" and lost.why["inputs"]["paths"] == "hm"
        unreachable = HAEvent.objects.get(appliance__name="auto-p", code="node_unreachable")
        assert unreachable.why["rule"] == "poll.no_answer" and unreachable.why["inputs"]["lost_this_round"] == 1
        log = api("get", "/appliances/auto-p/ha/events?code=failover_shutting_down_primary").json()["events"]
        assert [e["why"]["rule"] for e in log] == ["takeover.silence"]
        assert log[0]["why"]["text"] == takeover.why["text"]
    finally:
        primary_farm.stop()
        secondary_farm.stop()


def test_the_pairing_job_gives_both_agents_the_portals_witness_and_the_primary_holds_its_lease(
    tmp_path, subnet, worker, api
):
    # Given a real witness and two real agents on loopback, none of them told of the other
    p_ip, s_ip, vip, witness = f"{subnet}.15", f"{subnet}.16", f"{subnet}.14", f"{subnet}.50:8002"
    referee = WitnessProcess(tmp_path / "witness", witness, "pw-witness-e2e").start()
    farm = AgentFarm(
        tmp_path,
        node_toml("wit-p", "3355", "primary", p_ip, "pw-p", vip=vip)
        + node_toml("wit-s", "3355", "secondary", s_ip, "pw-s"),
        port=8001,
    ).start()
    try:
        # When the operator pairs them through the API with that witness (the port left out)
        add(api, "wit-p", p_ip, "pw-p")
        response = api(
            "post",
            "/appliances/wit-p/ha",
            {
                "secondary_name": "wit-s",
                "secondary_ip": s_ip,
                "secondary_password": "pw-s",
                "failover_type": "automatic",
                "witnesses": [f"{subnet}.50"],
                "witness_password": "pw-witness-e2e",
                "witness_mode": "availability",
            },
        )
        assert response.status_code == 202, response.content
        assert "pw-witness-e2e" not in response.content.decode()
        wait_job(api, response.json()["id"], worker=worker)

        # Then both agents keep the portal's witness in their pair's configuration (ha.json)
        for node in ("wit-p", "wit-s"):
            (saved,) = json.loads((tmp_path / "state" / node / "ha.json").read_text())["pairs"]
            got = {k: saved["ha"]["config"][k] for k in ("witnesses", "witness_password", "witness_mode")}
            assert got == {"witnesses": [witness], "witness_password": "pw-witness-e2e", "witness_mode": "availability"}
        pair = HAPair.objects.select_related("primary").get()

        # and the primary's ha-info reports the witness granting its lease (signed with the
        # password the portal decrypted for the request: a wrong one would be refused, 401)
        def primary_witnesses():
            info = agent_client.call(agent_client.target_for(pair.primary), "GET", protocol.PATH_HA_INFO)
            return info["peers"][0]["witnesses"]

        (answer,) = wait_for(lambda: primary_witnesses() or None, timeout=20, what="the primary's witness answer")
        assert (answer["address"], answer["ok"]) == (witness, True), answer
        assert "lease for" in answer["answer"]
        # the witness itself recorded the pair (its state file, written on every lease)
        wait_for(lambda: referee.state_file.exists(), timeout=10, what="the witness's state file")
        assert f"{p_ip}/{s_ip}" in json.loads(referee.state_file.read_text())
        # and the portal's poll records it: the status screen draws the witness link up
        wait_for(
            lambda: [(w["address"], w["ok"]) for w in HAPair.objects.get().primary_witnesses] == [(witness, True)],
            timeout=20,
            what="the portal to record the primary's witness answer",
        )
        page_network = selectors.pair_network(HAPair.objects.select_related("primary", "secondary").get())
        assert page_network.witnessed and (f"wit-p ↔ witness {witness}", "up") in [
            (link.between, link.status) for link in page_network.links
        ]
        status = api("get", "/appliances/wit-p/ha").json()
        assert (status["witnesses"], status["witness_mode"]) == ([witness], "availability")
        assert "pw-witness-e2e" not in json.dumps(status)
    finally:
        farm.stop()
        referee.stop()
