"""End to end: "who asked for this failover, and why" is a fact on every event it causes.

A switchover asked through the API with a reason: the job's command carries its
idempotency key (and requester and reason); both agents echo it on every event the
switchover causes; the portal stores the job on those events, so its events log, its API
and the health report name the requester and the reason without matching times.
"""

from __future__ import annotations

import pytest

from hapairs import agent_client, reports
from hapairs.jobkeys import job_step_key
from hapairs.models import HAEvent, HAPair, Job
from hapairs.tests.e2e import AgentFarm, node_toml, pair_through_api, wait_for, wait_job
from nodeagent import protocol

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REASON = "Firmware upgrade of the primary, change CHG-2001"
# what a switchover makes each node record (both nodes' views of the one failover)
SWITCHOVER_CODES = {
    "secondary": {
        protocol.EventCode.FAILOVER_SHUTTING_DOWN_PRIMARY,
        protocol.EventCode.FAILOVER_RECONFIGURING_DB,
        protocol.EventCode.FAILOVER_STARTING_INSTANCE,
        protocol.EventCode.FAILOVER_ACTIVE,
        protocol.EventCode.VIP_TAKEN,
    },
    "primary": {protocol.EventCode.FAILOVER_SHUTTING_DOWN_PRIMARY, protocol.EventCode.VIP_RELEASED},
}


def agent_events(name: str, host: str, password: str) -> list[dict]:
    """The agent's own event log, read with the portal's signed client."""
    target = agent_client.AgentTarget(name=name, host=host, password=password)
    return agent_client.call(target, "GET", f"{protocol.PATH_EVENTS}?since=0&limit=1000")["events"]


def test_a_switchover_asked_through_the_api_is_named_on_every_event_it_causes(
    tmp_path,
    subnet,
    worker,
    api,
    operator_user,
    client,
):
    # Given a pair made through the API, Active
    p_ip, s_ip, vip = f"{subnet}.15", f"{subnet}.16", f"{subnet}.14"
    farm = AgentFarm(
        tmp_path,
        node_toml("cause-p", "3355", "primary", p_ip, "pw-primary", vip=vip)
        + node_toml("cause-s", "3355", "secondary", s_ip, "pw-secondary"),
        port=8001,
    ).start()
    try:
        pair_through_api(api, worker, ("cause-p", p_ip, "pw-primary"), ("cause-s", s_ip, "pw-secondary"))
        before = {
            name: max((e["seq"] for e in agent_events(name, ip, pw)), default=0)
            for name, ip, pw in (("cause-p", p_ip, "pw-primary"), ("cause-s", s_ip, "pw-secondary"))
        }

        # When an operator asks for a switchover through the API, with a reason
        response = api("post", "/appliances/cause-p/ha/switchover", {"reason": REASON})
        assert response.status_code == 202, response.content
        job = Job.objects.get(pk=response.json()["id"])
        wait_job(api, job.pk, worker=worker)
        key = job_step_key(job.pk, "switchover_invoke")

        # Then every event the switchover caused on both agents carries the job's key, requester and reason
        for role, (name, ip, pw) in {
            "primary": ("cause-p", p_ip, "pw-primary"),
            "secondary": ("cause-s", s_ip, "pw-secondary"),
        }.items():
            caused = [
                e for e in agent_events(name, ip, pw) if e["seq"] > before[name] and e["code"] in SWITCHOVER_CODES[role]
            ]
            assert {e["code"] for e in caused} == SWITCHOVER_CODES[role], (name, caused)
            assert all(e["cause"] == {"key": key, "by": operator_user.username, "reason": REASON} for e in caused), (
                caused
            )

        # And the portal stored the job on each of them (pushed or polled): no time window involved
        pair = HAPair.objects.get()

        def stored():
            rows = [
                row
                for row in HAEvent.objects.filter(pair=pair, seq__isnull=False).select_related("appliance")
                if row.seq > before[row.appliance.name]
                and row.code in SWITCHOVER_CODES["primary" if row.appliance.name == "cause-p" else "secondary"]
            ]
            return rows if len(rows) >= sum(len(c) for c in SWITCHOVER_CODES.values()) else None

        rows = wait_for(stored, timeout=20, what="the switchover's events in the portal")
        assert {(row.job_id, row.cause_key) for row in rows} == {(job.pk, key)}

        # And the API's events log names the requester and the reason
        logged = api("get", "/appliances/cause-p/ha?events=200").json()["events"]
        failover = [e for e in logged if e["code"] == protocol.EventCode.FAILOVER_ACTIVE]
        assert failover and all(
            (e["requested_by"], e["reason"], e["job_id"]) == (operator_user.username, REASON, job.pk) for e in failover
        ), failover

        # And the status screen's Events Log names them beside those events
        client.force_login(operator_user)
        page = client.get("/mse/cause-p/ha/").content.decode()
        row = next(r for r in page.split("<tr") if 'data-code="failover_active"' in r)
        assert operator_user.username in row and REASON in row and f"/jobs/{job.pk}/" in row

        # And the health report says the operator switched over, and why
        [pair_report] = reports.report_build(period_days=1).pairs
        [switch] = [s for s in pair_report.switches if s.kind == "failover"]
        assert (switch.actor.kind, switch.actor.name, switch.actor.reason, switch.actor.job_id) == (
            "operator",
            operator_user.username,
            REASON,
            job.pk,
        )
    finally:
        farm.stop()
