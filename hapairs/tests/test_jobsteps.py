"""The steps of each job kind, called one by one against real agents on loopback.

Each test builds a JobContext from a real Job row (claimed the way the runner claims it)
and calls the step functions of ``hapairs.jobsteps`` directly; the agents are real
``nodeagent farm`` processes. A scripted loopback agent stands in only where the point is
the portal's handling of one reply the real agent never gives (a 5xx, an install reply
without an id).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from hapairs import agent_client, jobs, jobsteps, services
from hapairs.choices import JobKind, JobStatus, LicenseStatus
from hapairs.models import Appliance, AuditEntry, HAEvent, HAPair, Job, License, LicenseFile
from hapairs.tests.e2e import AgentFarm, node_toml, wait_for
from hapairs.tests.loopback import Reply, ScriptedAgent, fresh_subnet
from nodeagent import protocol, tlsid

pytestmark = pytest.mark.django_db

WORKER = "test-jobsteps"
PATH_LICENSES = protocol.PATH_LICENSES


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def subnet(settings):
    settings.AGENT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.JOB_STEP_RETRIES = 3
    settings.HA_SYNC_TIMEOUT_SECONDS = 30
    settings.HA_SWITCH_TIMEOUT_SECONDS = 30
    net = fresh_subnet(72, settings.AGENT_PORT)
    # the agents push their events here once told to; nothing listens, so nothing is ingested
    settings.INGEST_URL = f"http://{net}.200:8000/api/v1/ingest/events"
    return net


@pytest.fixture
def agent_farm(tmp_path, settings):
    """``agent_farm(nodes_toml)`` starts one real agent process serving those nodes."""
    farms = []

    def start(nodes: str) -> AgentFarm:
        workdir = tmp_path / f"farm{len(farms)}"
        workdir.mkdir()
        farm = AgentFarm(workdir, nodes, port=settings.AGENT_PORT).start()
        farms.append(farm)
        return farm

    yield start
    for farm in farms:
        farm.stop()


def _pair_rows(make_appliance, net: str) -> HAPair:
    primary = make_appliance(name="mse-p", hm_ip=f"{net}.2", vip=f"{net}.1", vip_prefixlen=24, password="pw-p")
    secondary = make_appliance(name="mse-s", hm_ip=f"{net}.3", password="pw-s")
    return services.ha_pair_create(primary=primary, secondary=secondary, failover_wait=10)


def _nodes(net: str) -> str:
    return node_toml("mse-p", "3355", "primary", f"{net}.2", "pw-p", vip=f"{net}.1") + node_toml(
        "mse-s", "3355", "secondary", f"{net}.3", "pw-s"
    )


@pytest.fixture
def new_ha_pair(subnet, agent_farm, make_appliance) -> HAPair:
    """A pair just recorded by the portal; its two agents run but know nothing of each other."""
    agent_farm(_nodes(subnet))
    return _pair_rows(make_appliance, subnet)


def _declared_pair(stabilisation_seconds: int) -> str:
    return (
        '[[pair]]\nprimary = "mse-p"\nsecondary = "mse-s"\nfailover_type = "Manual"\n'
        f'failback_type = "Manual"\nfailover_wait = 10\nstabilisation_seconds = {stabilisation_seconds}\n'
    )


@pytest.fixture
def ha_pair(subnet, agent_farm, make_appliance) -> HAPair:
    """A pair whose agents are paired and Active (declared in their fleet file)."""
    agent_farm(_nodes(subnet) + _declared_pair(1800))
    return _until_active(_pair_rows(make_appliance, subnet))


@pytest.fixture
def ha_pair_short_window(subnet, agent_farm, make_appliance) -> HAPair:
    """The same, with a one-second stabilisation window, so it can switch over and back at once."""
    agent_farm(_nodes(subnet) + _declared_pair(1))
    return _until_active(_pair_rows(make_appliance, subnet))


def _until_active(pair: HAPair) -> HAPair:
    """The declared pair once both agents say it is Active with its data replicated (on a busy
    machine that takes a moment; a switchover asked before would be refused)."""

    def active() -> bool:
        p, s = (ha_info(node)["peers"] for node in (pair.primary, pair.secondary))
        return bool(p and s) and (p[0]["state"], s[0]["state"], s[0]["data_replication"]) == (
            "PRIMARY_ACTIVE",
            "SECONDARY_ACTIVE",
            "Up",
        )

    wait_for(active, timeout=30, what="the declared pair Active")
    return pair


@pytest.fixture
def license_file(make_appliance):
    """``license_file(appliance)``: a stored file with one VERIFIED line, as an upload leaves it."""
    made = []

    def make(appliance, *, count=100) -> LicenseFile:
        text = f"INCREMENT CAS_ELEMENTS 7.0 permanent {count} HOSTID=ANY SIGN=test-{appliance.pk}-{len(made)}\n"
        stored = LicenseFile.objects.create(
            filename=f"{appliance.name}.lic",
            sha256=f"{appliance.pk:032d}{len(made):032d}",
            content=text,
            appliance=appliance,
        )
        License.objects.create(
            source_file=stored,
            feature="CAS_ELEMENTS",
            sku="L-CAS-ELEMENTS",
            version="7.0",
            count=count,
            host_udi="ANY",
            status=LicenseStatus.VERIFIED,
        )
        made.append(stored)
        return stored

    return make


def make_job(kind: str, *, pair: HAPair | None = None, appliance=None, **params) -> Job:
    return Job.objects.create(kind=kind, pair=pair, appliance=appliance, params=params)


def step_context(job: Job, step_name: str) -> jobs.JobContext:
    """The context the runner would give this step: the job claimed by WORKER, the registered step."""
    claimed = jobs.claim(job.pk, WORKER) or Job.objects.get(pk=job.pk)
    step = next(step for step in jobs.REGISTRY[job.kind] if step.name == step_name)
    return jobs.JobContext(job=claimed, step=step, worker=WORKER, progress_floor=0, progress_span=100)


def ha_info(appliance) -> dict:
    return agent_client.call(agent_client.target_for(appliance), "GET", protocol.PATH_HA_INFO)


def switch_over_at_the_agent(pair: HAPair) -> None:
    """What another manager (or an operator at the console) would do: fail over, then wait."""
    agent_client.call(
        agent_client.target_for(pair.secondary),
        "POST",
        protocol.PATH_FAILOVER,
        body={"peer": pair.primary.hm_ip},
        idempotency_key=f"not-this-portal-{time.monotonic_ns()}",
    )
    wait_for(
        lambda: ha_info(pair.secondary)["peers"][0]["state"] == "FAILOVER_ACTIVE",
        timeout=20,
        what="the secondary to be FAILOVER_ACTIVE",
    )


def held_licenses(appliance) -> list[dict]:
    reply = agent_client.call(agent_client.target_for(appliance), "GET", PATH_LICENSES)
    return reply["licenses"]


# --- configure ----------------------------------------------------------------------------------
def test_the_configure_steps_pair_two_fresh_agents_until_the_pair_is_active(new_ha_pair, license_file, settings):
    # Given a pair just recorded, a license uploaded for its primary but not installed yet,
    # and its configure job
    pending = license_file(new_ha_pair.primary)
    job = make_job(JobKind.CONFIGURE_HA, pair=new_ha_pair)

    # When each step of the job runs in order
    for name, step in [
        ("install_licenses", jobsteps.install_pending_licenses),
        ("configure_secondary", jobsteps.configure_secondary),
        ("configure_primary", jobsteps.configure_primary),
        ("trap_destinations", jobsteps.set_trap_destinations),
        ("wait_active", jobsteps.wait_until_active),
    ]:
        step(step_context(job, name))

    # Then the pending license reached the primary's agent and is recorded installed there
    assert [lic["features"] for lic in held_licenses(new_ha_pair.primary)] == [{"CAS Elements": 100}]
    assert set(pending.licenses.values_list("status", "installed_on")) == {
        (LicenseStatus.INSTALLED, new_ha_pair.primary_id)
    }
    # and the agents are paired with the portal's parameters, pushing their events to the portal
    pair = HAPair.objects.get(pk=new_ha_pair.pk)
    assert (pair.primary_state, pair.secondary_state, pair.heartbeat, pair.replication, pair.sync_percent) == (
        "PRIMARY_ACTIVE",
        "SECONDARY_ACTIVE",
        "up",
        "up",
        100,
    )
    [peer] = ha_info(pair.secondary)["peers"]
    assert (peer["hm_ip"], peer["failover_type"], peer["failover_wait"]) == (pair.primary.hm_ip, "Manual", 10)
    for node in (pair.primary, pair.secondary):
        destinations = agent_client.call(agent_client.target_for(node), "GET", protocol.PATH_TRAP_DESTINATIONS)
        assert [d["url"] for d in destinations["destinations"]] == [settings.INGEST_URL]
    assert Job.objects.get(pk=job.pk).progress == 99  # the waiting step reported its progress


def test_a_configure_step_sends_its_job_step_key_so_a_rerun_gets_the_first_answer(new_ha_pair):
    # Given the secondary configured by the job's step
    job = make_job(JobKind.CONFIGURE_HA, pair=new_ha_pair)
    jobsteps.configure_secondary(step_context(job, "configure_secondary"))

    # When a new worker re-runs the same step (the first died before recording it done)
    context = step_context(job, "configure_secondary")
    jobsteps.configure_secondary(context)

    # Then the agent holds one pairing, and it has the step's key on record: the same key
    # with any other request is refused
    assert len(ha_info(new_ha_pair.secondary)["peers"]) == 1
    with pytest.raises(agent_client.AgentRejected) as reused:
        agent_client.call(
            agent_client.target_for(new_ha_pair.secondary),
            "POST",
            protocol.PATH_HA_CONFIGURE,
            body={"role": "secondary"},
            idempotency_key=f"mseportal-job-{job.pk}:configure_secondary",
        )
    assert reused.value.status == 422 and "was used for a different request" in reused.value.message
    assert context.idempotency_key == f"mseportal-job-{job.pk}:configure_secondary"


def test_the_trap_step_makes_the_portal_a_destination_even_of_an_agent_with_eight_already(
    new_ha_pair, subnet, settings
):
    # Given agents that already push their events to eight other receivers
    others = [f"http://{subnet}.{210 + n}:9000/traps" for n in range(8)]
    for node in (new_ha_pair.primary, new_ha_pair.secondary):
        agent_client.call(
            agent_client.target_for(node),
            "PUT",
            protocol.PATH_TRAP_DESTINATIONS,
            body={"urls": others},
            idempotency_key=f"setup-{node.pk}",
        )
    job = make_job(JobKind.CONFIGURE_HA, pair=new_ha_pair)

    # When the configure job's trap step runs
    jobsteps.set_trap_destinations(step_context(job, "trap_destinations"))

    # Then both agents push to the portal first, and what made way for it is recorded
    for node in (new_ha_pair.primary, new_ha_pair.secondary):
        listed = agent_client.call(agent_client.target_for(node), "GET", protocol.PATH_TRAP_DESTINATIONS)
        urls = [d["url"] for d in listed["destinations"]]
        assert urls == [settings.INGEST_URL, *others[:7]]
        [noted] = HAEvent.objects.filter(job=job, appliance=node)
        assert others[7] in noted.remarks and settings.INGEST_URL in noted.remarks


# --- switchover / failback ----------------------------------------------------------------------
def test_the_switchover_steps_put_the_secondary_in_charge(ha_pair):
    # Given an Active pair and a switchover requested at its generation
    job = make_job(JobKind.SWITCHOVER, pair=ha_pair, generation=1)

    # When the job's steps run
    jobsteps.check_generation(step_context(job, "check_generation"))
    jobsteps.switchover_invoke(step_context(job, "switchover_invoke"))
    jobsteps.wait_failover_active(step_context(job, "wait_failover_active"))

    # Then the secondary holds the VIP under a new generation, as the portal records it
    pair = HAPair.objects.get(pk=ha_pair.pk)
    assert (pair.secondary_state, pair.secondary_in_charge, pair.primary_in_charge) == ("FAILOVER_ACTIVE", True, False)
    assert pair.generation == 2


def test_a_switchover_requested_before_the_pair_changed_hands_is_refused(ha_pair):
    # Given a switchover requested at generation 1, and the secondary taking over meanwhile
    job = make_job(JobKind.SWITCHOVER, pair=ha_pair, generation=1)
    switch_over_at_the_agent(ha_pair)

    # When the job's fencing step runs
    with pytest.raises(jobs.StepFailed) as refused:
        jobsteps.check_generation(step_context(job, "check_generation"))

    # Then it refuses, naming both generations, after recording what the agents now say
    assert "changed hands since this was requested (generation 1 → 2)" in refused.value.message
    assert HAPair.objects.get(pk=ha_pair.pk).secondary_state == "FAILOVER_ACTIVE"


def test_the_switchover_command_carries_the_generation_it_was_requested_at(ha_pair_short_window):
    # Given a switchover requested at generation 1, and meanwhile the pair switched over and
    # back at the agents (generation 3, Active again)
    pair = ha_pair_short_window
    job = make_job(JobKind.SWITCHOVER, pair=pair, generation=1)
    switch_over_at_the_agent(pair)
    agent_client.call(
        agent_client.target_for(pair.primary),
        "POST",
        protocol.PATH_SERVICES_START,
        body={},
        idempotency_key="not-this-portal-2",
    )
    wait_for(lambda: ha_info(pair.primary)["peers"][0]["state"] == "TERMINATED", timeout=20, what="TERMINATED")
    wait_for(lambda: _failback_accepted(pair), timeout=20, what="the failback to be accepted")
    wait_for(
        lambda: (
            [ha_info(node)["peers"][0]["state"] for node in (pair.primary, pair.secondary)]
            == ["PRIMARY_ACTIVE", "SECONDARY_ACTIVE"]
        ),
        timeout=30,
        what="the pair Active again",
    )
    assert ha_info(pair.secondary)["peers"][0]["generation"] == 3
    wait_for(lambda: _window_over(pair), timeout=10, what="the stabilisation window to end")

    # When the job's command reaches the secondary (the check having passed a moment earlier)
    # Then the agent refuses a command from an older generation, and nothing changes hands
    with pytest.raises(agent_client.AgentRejected) as refused:
        jobsteps.switchover_invoke(step_context(job, "switchover_invoke"))
    assert refused.value.status == 409 and "stale request" in refused.value.message
    assert ha_info(pair.secondary)["peers"][0]["state"] == "SECONDARY_ACTIVE"


def _window_over(pair: HAPair) -> bool:
    """The agents' stabilisation window has ended (they say when to the second, rounded down)."""
    allowed = ha_info(pair.secondary)["peers"][0]["allowed_switch_at"]
    return allowed is None or datetime.fromisoformat(allowed) + timedelta(seconds=1) <= datetime.now(UTC)


def _just_after_a_heartbeat(pair: HAPair) -> None:
    """Return right after the secondary's next heartbeat (its mean response time moves)."""
    before = ha_info(pair.secondary)["peers"][0]["mean_heartbeat_ms"]
    wait_for(
        lambda: ha_info(pair.secondary)["peers"][0]["mean_heartbeat_ms"] != before,
        timeout=5,
        every=0.01,
        what="a heartbeat",
    )


def _failback_accepted(pair: HAPair) -> bool:
    try:
        agent_client.call(
            agent_client.target_for(pair.secondary),
            "POST",
            protocol.PATH_FAILBACK,
            body={"peer": pair.primary.hm_ip},
            idempotency_key=f"not-this-portal-{time.monotonic()}",
        )
    except agent_client.AgentRejected:  # still inside the one-second window
        return False
    return True


def test_a_failback_the_agent_refuses_fails_the_job_with_the_agents_words(ha_pair):
    # Given a pair just switched over (so inside the agents' stabilisation window)
    switch_over_at_the_agent(ha_pair)
    job = make_job(JobKind.FAILBACK, pair=ha_pair, generation=2)

    # When the runner runs the failback job
    status = jobs.run(job.pk, worker=WORKER)

    # Then the primary's services were started (it is back as TERMINATED), the check passed,
    # and the agent's refusal is the job's error, shown to the operator as the agent put it
    job.refresh_from_db()
    assert status == JobStatus.FAILED == job.status
    assert job.steps_done == ["start_primary", "check_generation"]
    assert job.error.startswith("mse-s: Failback is not allowed until ")
    assert "stabilise" in job.error
    assert HAPair.objects.get(pk=ha_pair.pk).primary_state == "TERMINATED"
    assert HAEvent.objects.filter(job=job, severity="warning", remarks=job.error).exists()


def test_a_failback_job_brings_the_primary_back_in_charge(ha_pair_short_window):
    # Given a pair switched over, the primary's services stopped, the stabilisation window
    # (one second here) over
    pair = ha_pair_short_window
    switch_over_at_the_agent(pair)
    wait_for(lambda: _window_over(pair), timeout=10, what="the stabilisation window to end")
    job = make_job(JobKind.FAILBACK, pair=pair, generation=2)

    # When the runner runs the failback job just after a heartbeat (the next one is a second
    # away, so the secondary hears of the primary's start only if the job waits for it)
    _just_after_a_heartbeat(pair)
    status = jobs.run(job.pk, worker=WORKER)

    # Then every step ran, and the primary is in charge again under a new generation
    job.refresh_from_db()
    assert status == JobStatus.SUCCEEDED, job.error
    assert job.steps_done == ["start_primary", "check_generation", "failback_invoke", "wait_failback"]
    back = HAPair.objects.get(pk=pair.pk)
    assert back.primary_state in ("PRIMARY_ACTIVE", "FAILBACK_COMPLETE") and back.generation == 3
    assert back.secondary_state in ("SECONDARY_ACTIVE", "SECONDARY_ALONE")


def test_a_job_whose_pair_is_gone_fails_its_step_saying_so(db):
    # Given a switchover job whose pair was deleted meanwhile
    job = make_job(JobKind.SWITCHOVER, pair=None, generation=1)

    # When its first step runs
    with pytest.raises(jobs.StepFailed) as failed:
        jobsteps.check_generation(step_context(job, "check_generation"))

    # Then the step fails with a sentence for the operator
    assert failed.value.message == "The HA pair of this job no longer exists."


# --- update parameters and maintenance ----------------------------------------------------------
def test_the_update_steps_send_the_new_parameters_and_then_record_them(ha_pair):
    # Given an Active pair and an update job to automatic failover with a longer wait
    job = make_job(
        JobKind.UPDATE_HA,
        pair=ha_pair,
        changes={"failover_type": "automatic", "failover_wait": 20},
        remarks="longer wait for the WAN",
    )

    # When the agent steps run
    jobsteps.update_secondary(step_context(job, "update_secondary"))
    jobsteps.update_primary(step_context(job, "update_primary"))

    # Then both agents run with the new parameters, while the portal's row still says the old ones
    for node in (ha_pair.primary, ha_pair.secondary):
        [peer] = ha_info(node)["peers"]
        assert (peer["failover_type"], peer["failover_wait"]) == ("Automatic", 20)
    assert HAPair.objects.get(pk=ha_pair.pk).failover_wait == 10

    # When the record step runs
    jobsteps.record_parameters(step_context(job, "record"))

    # Then the row has them too, with an event naming the job and the operator's remarks
    pair = HAPair.objects.get(pk=ha_pair.pk)
    assert (pair.failover_type, pair.failover_wait) == ("automatic", 20)
    assert HAEvent.objects.filter(job=job, pair=ha_pair, remarks="longer wait for the WAN").count() == 1
    # and the audit trail has the worker's write, before and after, in the job's name
    (entry,) = AuditEntry.objects.filter(action="pair.parameters")
    assert (entry.source, entry.object_id) == ("worker", str(ha_pair.pk))
    assert entry.before == {"failover_type": "manual", "failover_wait": 10}
    assert entry.after == {"failover_type": "automatic", "failover_wait": 20, "job": job.pk}


def test_maintenance_reaches_both_agents(ha_pair):
    # Given an Active pair and a job turning maintenance on
    job = make_job(JobKind.SET_MAINTENANCE, pair=ha_pair, maintenance=True, remarks="cabling")

    # When its steps run
    jobsteps.maintenance_secondary(step_context(job, "maintenance_secondary"))
    jobsteps.maintenance_primary(step_context(job, "maintenance_primary"))

    # Then both agents are in maintenance, and neither step left a "not told" event
    assert [ha_info(node)["peers"][0]["maintenance"] for node in (ha_pair.primary, ha_pair.secondary)] == [True, True]
    assert not HAEvent.objects.filter(job=job).exists()


def test_maintenance_is_recorded_when_the_primary_cannot_be_told(subnet, make_appliance):
    # Given a pair whose primary is down (nothing answers at its address)
    pair = _pair_rows(make_appliance, subnet)
    job = make_job(JobKind.SET_MAINTENANCE, pair=pair, maintenance=True)

    # When the best-effort step for the primary runs
    jobsteps.maintenance_primary(step_context(job, "maintenance_primary"))

    # Then it does not fail the job: an event says the secondary (which decides) has it
    [event] = HAEvent.objects.filter(job=job)
    assert event.pair_id == pair.pk
    assert "mse-p is not answering" in event.remarks and "the secondary" in event.remarks


# --- delete the secondary, recover a primary ----------------------------------------------------
def test_the_delete_steps_unpair_both_agents_and_a_retried_job_finds_nothing_left_to_do(ha_pair):
    # Given an Active pair and its delete job
    job = make_job(JobKind.DELETE_SECONDARY, pair=ha_pair)

    # When the agent steps run
    jobsteps.delete_on_secondary(step_context(job, "delete_on_secondary"))
    jobsteps.delete_on_primary(step_context(job, "delete_on_primary"))

    # Then neither agent has the pairing any more
    assert ha_info(ha_pair.primary)["peers"] == [] and ha_info(ha_pair.secondary)["peers"] == []

    # When that job ended before its last step and the operator asks again (new job, new keys)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    retry = make_job(JobKind.DELETE_SECONDARY, pair=ha_pair)
    jobsteps.delete_on_secondary(step_context(retry, "delete_on_secondary"))  # the agents' 404: already done
    jobsteps.delete_on_primary(step_context(retry, "delete_on_primary"))
    jobsteps.delete_pair_row(step_context(retry, "delete_record"))
    jobsteps.delete_pair_row(step_context(Job.objects.get(pk=retry.pk), "delete_record"))  # re-run: row gone

    # Then the pair is gone from the portal, with one event, and the job rows stay
    assert not HAPair.objects.filter(pk=ha_pair.pk).exists()
    assert HAEvent.objects.filter(job=retry, appliance=ha_pair.primary).count() == 1
    (entry,) = AuditEntry.objects.filter(action="pair.deleted")  # the worker's delete, audited once
    assert (
        entry.source == "worker"
        and entry.before["primary_id"] == ha_pair.primary_id
        and entry.after == {"job": retry.pk}
    )
    assert Job.objects.get(pk=retry.pk).pair_id is None


def test_recovery_is_refused_for_a_primary_not_set_up_in_recovery_mode(new_ha_pair):
    # Given a primary that answers with no HA configuration, set up normally
    job = make_job(JobKind.RECOVER_PRIMARY, pair=new_ha_pair)

    # When the recovery job's check runs
    with pytest.raises(jobs.StepFailed) as refused:
        jobsteps.recover_check(step_context(job, "recover_check"))

    # Then it says what to do on the appliance
    assert refused.value.message.startswith("mse-p has no high availability configuration")
    assert "Start MSE in recovery mode" in refused.value.message


def test_the_recovery_steps_restore_a_primary_set_up_again_behind_the_secondary(subnet, agent_farm, make_appliance):
    # Given a pair configured by the portal, one agent process per node
    primary_toml = node_toml("mse-p", "3355", "primary", f"{subnet}.2", "pw-p", vip=f"{subnet}.1")
    farm_p = agent_farm(primary_toml)
    agent_farm(node_toml("mse-s", "3355", "secondary", f"{subnet}.3", "pw-s"))
    pair = _pair_rows(make_appliance, subnet)
    configure = make_job(JobKind.CONFIGURE_HA, pair=pair)
    for name, step in [
        ("configure_secondary", jobsteps.configure_secondary),
        ("configure_primary", jobsteps.configure_primary),
        ("wait_active", jobsteps.wait_until_active),
    ]:
        step(step_context(configure, name))
    Job.objects.filter(pk=configure.pk).update(status=JobStatus.SUCCEEDED)
    # and the primary rebuilt: a fresh state directory, set up again in recovery mode
    farm_p.stop()
    rebuilt = agent_farm(primary_toml + "recovery = true\n")
    # a rebuilt node has a new TLS certificate: the portal refuses it until an Admin trusts it
    new = tlsid.read_fingerprint(rebuilt.workdir / "state" / "mse-p" / "tls" / "cert.pem")
    assert new != Appliance.objects.get(pk=pair.primary_id).tls_fingerprint
    services.appliance_certificate_trust(appliance=pair.primary, fingerprint=new)
    pair = HAPair.objects.select_related("primary", "secondary").get(pk=pair.pk)
    # which queues a job giving the secondary the new certificate, and only the secondary: a
    # plain configure would turn the rebuilt primary into a fresh pairing
    repin = Job.objects.get(kind=JobKind.UPDATE_HA, pair=pair)
    assert repin.params["repin"] == pair.primary_id
    for name, step in [("update_secondary", jobsteps.update_secondary), ("update_primary", jobsteps.update_primary)]:
        step(step_context(repin, name))
    Job.objects.filter(pk=repin.pk).update(status=JobStatus.SUCCEEDED)
    job = make_job(JobKind.RECOVER_PRIMARY, pair=pair)

    # When the recovery job's steps run
    for name, step in [
        ("recover_check", jobsteps.recover_check),
        ("recover_secondary_in_charge", jobsteps.recover_secondary_in_charge),
        ("recover_pin_primary_on_secondary", jobsteps.recover_pin_primary_on_secondary),
        ("recover_restore_primary", jobsteps.recover_restore_primary),
        ("recover_wait_terminated", jobsteps.recover_wait_terminated),
    ]:
        step(step_context(job, name))

    # Then the secondary serves, the primary is paired again behind it, and the portal says so
    recovered = HAPair.objects.get(pk=pair.pk)
    assert (recovered.primary_state, recovered.secondary_state) == ("TERMINATED", "FAILOVER_ACTIVE")
    assert recovered.secondary_in_charge and not recovered.primary_in_charge
    assert [peer["hm_ip"] for peer in ha_info(pair.primary)["peers"]] == [pair.secondary.hm_ip]
    assert HAEvent.objects.filter(job=job, pair=pair, description__startswith="Primary mse-p recovered").count() == 1


# --- licenses -----------------------------------------------------------------------------------
def test_a_license_is_installed_then_removed_and_each_step_can_run_again(
    subnet, agent_farm, make_appliance, license_file
):
    # Given an appliance's agent and an uploaded license file
    agent_farm(node_toml("mse-l", "3355", "primary", f"{subnet}.5", "pw-l", vip=f"{subnet}.4"))
    appliance = make_appliance(name="mse-l", hm_ip=f"{subnet}.5", vip=f"{subnet}.4", vip_prefixlen=24, password="pw-l")
    stored = license_file(appliance, count=50)
    install = make_job(JobKind.INSTALL_LICENSE, appliance=appliance, license_file=stored.pk)

    # When the install step runs, twice
    jobsteps.install_license(step_context(install, "install_license"))
    jobsteps.install_license(step_context(install, "install_license"))

    # Then the agent holds it once, under the id the portal recorded, and the line is INSTALLED
    [held] = held_licenses(appliance)
    stored.refresh_from_db()
    assert held["features"] == {"CAS Elements": 50} and stored.agent_license_id == held["id"]
    assert list(stored.licenses.values_list("status", "installed_on")) == [(LicenseStatus.INSTALLED, appliance.pk)]
    assert HAEvent.objects.filter(job=install).count() == 1

    # When the removal job's agent step runs, and a second removal job (asked again after the
    # first one's worker died) runs it too, with its own key
    remove = make_job(JobKind.REMOVE_LICENSE, appliance=appliance, license_file=stored.pk)
    jobsteps.remove_license_from_agent(step_context(remove, "remove_license"))
    again = make_job(JobKind.REMOVE_LICENSE, appliance=appliance, license_file=stored.pk)
    jobsteps.remove_license_from_agent(step_context(again, "remove_license"))  # the agent's 404: already gone
    jobsteps.record_license_removed(step_context(again, "record_removed"))

    # Then the agent holds nothing and the line is kept as REMOVED
    assert held_licenses(appliance) == []
    assert list(stored.licenses.values_list("status", flat=True)) == [LicenseStatus.REMOVED]
    (line,) = stored.licenses.all()
    audits = list(AuditEntry.objects.filter(action__in=["license.installed", "license.removed"]).order_by("pk"))
    assert [(a.action, a.before, a.after) for a in audits] == [
        ("license.installed", {"lines": {str(line.pk): "verified"}}, {"lines": {str(line.pk): "installed"}, "job": install.pk}),
        ("license.removed", {"lines": {str(line.pk): "installed"}}, {"lines": {str(line.pk): "removed"}, "job": again.pk}),
    ]  # fmt: skip


def test_an_install_reply_without_an_id_fails_the_job_and_records_nothing(
    subnet, settings, make_appliance, license_file
):
    # Given an agent that answers the install without saying under which id it holds the file
    appliance = make_appliance(name="mse-noid", hm_ip=f"{subnet}.6", password="pw-noid")
    stored = license_file(appliance)
    agent = ScriptedAgent(
        appliance.hm_ip, settings.AGENT_PORT, "pw-noid", {("POST", PATH_LICENSES): [Reply(201, {"installed": True})]}
    ).start()
    job = make_job(JobKind.INSTALL_LICENSE, appliance=appliance, license_file=stored.pk)
    try:
        # When the runner runs the install job
        status = jobs.run(job.pk, worker=WORKER)
    finally:
        agent.stop()

    # Then the job failed, saying so, after one signed request; the line is still only VERIFIED
    job.refresh_from_db()
    assert status == JobStatus.FAILED and job.error == "mse-noid installed the license but did not say under which id."
    assert [seen.signature_error for seen in agent.seen] == [None]
    assert json.loads(agent.seen[0].body)["text"] == stored.content
    stored.refresh_from_db()
    assert stored.agent_license_id == "" and list(stored.licenses.values_list("status", flat=True)) == ["verified"]


# --- start services: a transport failure is retried with the same key ----------------------------
def test_an_agent_5xx_is_retried_with_the_same_key_until_it_answers(subnet, settings, make_appliance):
    # Given an agent that fails once on its side, then starts the services
    appliance = make_appliance(name="mse-flaky", hm_ip=f"{subnet}.7", password="pw-flaky")
    agent = ScriptedAgent(
        appliance.hm_ip,
        settings.AGENT_PORT,
        "pw-flaky",
        {
            ("POST", protocol.PATH_SERVICES_START): [Reply(503, {"error": "busy"}), Reply(200, {"running": True})],
            ("GET", protocol.PATH_HA_INFO): [
                Reply(200, {"node": "mse-flaky", "running": True, "peers": [], "last_seq": 0, "events": []})
            ],
        },
    ).start()
    job = make_job(JobKind.START_SERVICES, appliance=appliance)
    try:
        # When the runner runs the start-services job
        status = jobs.run(job.pk, worker=WORKER)
    finally:
        agent.stop()

    # Then it succeeded on the second attempt, which carried the first one's key
    assert status == JobStatus.SUCCEEDED
    starts = [seen for seen in agent.seen if seen.path_qs == protocol.PATH_SERVICES_START]
    assert [seen.idempotency_key for seen in starts] == [f"mseportal-job-{job.pk}:start_services"] * 2
    assert all(seen.signature_error is None for seen in agent.seen)
    appliance.refresh_from_db()
    assert appliance.reachability == "reachable"


def test_a_switchover_the_witnesses_refused_fails_the_job_at_once_in_their_words(ha_pair):
    # Given a switchover job whose command the secondary's witnesses refused (the agent's
    # takeover_refused event carries the job's key, so the portal stored it with the job)
    job = make_job(JobKind.SWITCHOVER, pair=ha_pair, generation=1)
    words = "Switchover not carried out: 0 of 1 witnesses confirm (a majority is 1): takeover refused: witness sees the primary"
    HAEvent.objects.create(pair=ha_pair, appliance=ha_pair.secondary, job=job, code="takeover_refused",
                           description="Takeover refused by the witnesses", remarks=words,
                           generated_by="Secondary", timestamp=timezone.now())  # fmt: skip
    # When the step waits for FAILOVER_ACTIVE, the secondary still standing by
    started = time.monotonic()
    with pytest.raises(jobs.StepFailed) as failed:
        jobsteps.wait_failover_active(step_context(job, "wait_failover_active"))
    # Then it fails at once (not at the switch timeout), saying what the witnesses said
    assert time.monotonic() - started < 5
    assert str(failed.value) == f"mse-s did not take over: {words}"
