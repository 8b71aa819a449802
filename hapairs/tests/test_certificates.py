"""TLS pinning, the portal's side (``services/certificates.py`` and where it shows): the pin
taken at add (trust on first use), shown on the Add and MSE pages, sent to each peer at
configure; a changed certificate recorded by the poller and a job, never as a mere outage;
an Admin's trust, checked against what the agent presents; the upgrade path.

The agents here are ``ScriptedAgent``s: real TLS servers, each with its own certificate."""

from __future__ import annotations

import pytest

from hapairs import agent_client, polling, services
from hapairs.choices import EventCode, JobKind, JobStatus
from hapairs.jobs import JobContext, Step, StepFailed, _run_step_with_retries
from hapairs.jobsteps._common import _configure_body
from hapairs.models import Appliance, HAEvent, Job
from hapairs.tests.loopback import Reply, ScriptedAgent, fresh_subnet
from nodeagent import protocol

pytestmark = pytest.mark.django_db

OTHER = ":".join(["AB"] * 32)  # a well-formed fingerprint no agent here presents


@pytest.fixture
def subnet(settings):
    settings.AGENT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.AGENT_TIMEOUT = 2.0
    return fresh_subnet(76, settings.AGENT_PORT)


@pytest.fixture
def agents(settings):
    started = []

    def start(host, password, replies):
        agent = ScriptedAgent(host, settings.AGENT_PORT, password, replies).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def server_info(ip: str) -> dict:
    return {"node": "mse-new", "device_type": "3355", "version": "8.0.110.0", "udi": "UDI-1", "role": "none",
            "hm_ip": ip, "services": []}  # fmt: skip


def ha_info(name: str = "mse-new") -> dict:
    return {"node": name, "running": True, "peers": [], "last_seq": 0, "events": []}


def answering(ip: str) -> dict:
    return {
        ("GET", protocol.PATH_SERVER_INFO): [Reply(200, server_info(ip))],
        ("GET", protocol.PATH_HA_INFO): [Reply(200, ha_info())],
    }


def events_of(appliance, code) -> list[HAEvent]:
    return list(HAEvent.objects.filter(appliance=appliance, code=code))


# --- at add: trust on first use, shown ------------------------------------------------------
def test_add_pins_the_certificate_the_agent_answered_over(subnet, agents, admin_user_):
    # Given an agent with its own certificate
    ip = f"{subnet}.2"
    agent = agents(ip, "pw-new", answering(ip))
    # When an Admin adds it
    appliance = services.appliance_add(name="mse-new", ip=ip, password="pw-new", by=admin_user_)
    # Then its fingerprint is the pin, and the add's event names it
    assert appliance.tls_fingerprint == agent.fingerprint and len(agent.fingerprint) == 95
    assert Appliance.objects.get(pk=appliance.pk).tls_fingerprint == agent.fingerprint
    assert agent.fingerprint in events_of(appliance, EventCode.APPLIANCE_ADDED)[0].remarks
    # and later calls go to that certificate only
    assert agent_client.target_for(appliance).fingerprint == agent.fingerprint


def test_the_add_pages_and_the_mse_page_show_the_fingerprint_and_what_it_is(subnet, agents, client, admin_user_):
    ip = f"{subnet}.3"
    agent = agents(ip, "pw-new", answering(ip))
    client.force_login(admin_user_)
    response = client.post("/mse/add/", {"name": "mse-new", "ip": ip, "username": "admin", "password": "pw-new"})
    assert response.status_code == 302, response.content.decode()[-2000:]
    for url in ("/mse/mse-new/add/licenses/", "/mse/mse-new/add/done/", "/mse/mse-new/"):
        page = client.get(url).content.decode()
        assert agent.fingerprint in page, url
        assert "openssl x509 -noout -fingerprint -sha256 -in /var/lib/mse-agent/tls/cert.pem" in page, url


# --- configure: each peer pins the other -----------------------------------------------------
def test_the_configure_body_carries_the_other_nodes_fingerprint(make_appliance):
    p_fp, s_fp = ":".join(["0A"] * 32), ":".join(["0B"] * 32)
    primary = make_appliance(name="cp", hm_ip="127.30.0.2", vip="127.30.0.1", vip_prefixlen=24, tls_fingerprint=p_fp)
    secondary = make_appliance(name="cs", hm_ip="127.30.0.3", tls_fingerprint=s_fp)
    pair = services.ha_pair_create(primary=primary, secondary=secondary)
    assert _configure_body(pair, "primary")["peer"]["fingerprint"] == s_fp
    assert _configure_body(pair, "secondary")["peer"]["fingerprint"] == p_fp


# --- a changed certificate ---------------------------------------------------------------
def test_a_poll_records_a_changed_certificate_as_such_not_as_an_outage(subnet, agents, make_appliance):
    # Given an appliance pinned to another certificate than its agent presents, last seen reachable
    ip = f"{subnet}.4"
    agent = agents(ip, "pw-x", answering(ip))
    appliance = make_appliance(name="mse-x", hm_ip=ip, password="pw-x", tls_fingerprint=OTHER)
    Appliance.objects.filter(pk=appliance.pk).update(reachability="reachable")
    # When it is polled, twice
    polling.poll([appliance.pk])
    polling.poll([appliance.pk])
    # Then the presented certificate is recorded, once, with the clear message; no outage event
    appliance.refresh_from_db()
    assert appliance.tls_presented == agent.fingerprint and appliance.tls_fingerprint == OTHER
    changed = events_of(appliance, EventCode.CERTIFICATE_CHANGED)
    assert len(changed) == 1 and "an Admin can trust the new one" in changed[0].remarks
    assert agent.fingerprint in changed[0].remarks and OTHER in changed[0].remarks
    assert events_of(appliance, EventCode.NODE_UNREACHABLE) == []
    # and nothing but the TLS handshake reached the agent (refused before anything was sent)
    assert agent.seen == []


def test_a_job_step_meeting_a_changed_certificate_fails_at_once_with_the_message(subnet, agents, make_appliance):
    ip = f"{subnet}.5"
    agent = agents(ip, "pw-j", answering(ip))
    appliance = make_appliance(name="mse-j", hm_ip=ip, password="pw-j", tls_fingerprint=OTHER)
    job = Job.objects.create(kind="start_services", appliance=appliance)
    calls = []

    def step(ctx):
        calls.append(1)
        agent_client.call(agent_client.target_for(appliance), "GET", protocol.PATH_HA_INFO)

    with pytest.raises(StepFailed) as failed:
        _run_step_with_retries(
            JobContext(job=job, step=Step("s", step), worker="w", progress_floor=0, progress_span=100)
        )
    assert len(calls) == 1  # not retried
    assert "presented a different TLS certificate" in failed.value.message
    assert Appliance.objects.get(pk=appliance.pk).tls_presented == agent.fingerprint


# --- the upgrade path ------------------------------------------------------------------------
def test_an_appliance_recorded_before_pinning_is_pinned_at_its_next_poll(subnet, agents, make_appliance):
    ip = f"{subnet}.6"
    agent = agents(ip, "pw-u", {("GET", protocol.PATH_HA_INFO): [Reply(200, ha_info("mse-u"))]})
    appliance = make_appliance(name="mse-u", hm_ip=ip, password="pw-u")  # no pin: stored before this change
    polling.poll([appliance.pk])
    polling.poll([appliance.pk])
    appliance.refresh_from_db()
    assert appliance.tls_fingerprint == agent.fingerprint and appliance.reachability == "reachable"
    pinned = events_of(appliance, EventCode.CERTIFICATE_PINNED)
    assert len(pinned) == 1 and "first contact after upgrade" in pinned[0].remarks


# --- trusting the new certificate ------------------------------------------------------------
def test_trust_requires_the_certificate_the_agent_presents_now(subnet, agents, make_appliance, admin_user_):
    ip = f"{subnet}.7"
    agent = agents(ip, "pw-t", answering(ip))
    appliance = make_appliance(name="mse-t", hm_ip=ip, password="pw-t", tls_fingerprint=OTHER)
    polling.poll([appliance.pk])
    appliance.refresh_from_db()
    # a fingerprint other than the presented one: refused, nothing changed
    wrong = ":".join(["CD"] * 32)
    asked = len(agent.seen)
    with pytest.raises(services.ServiceError) as refused:
        services.appliance_certificate_trust(appliance=appliance, fingerprint=wrong, by=admin_user_)
    assert agent.fingerprint in refused.value.message and "Nothing was changed" in refused.value.message
    assert len(agent.seen) == asked, "the re-check is pinned to the confirmed fingerprint: nothing signed was sent"
    appliance.refresh_from_db()
    assert (appliance.tls_fingerprint, appliance.tls_presented) == (OTHER, agent.fingerprint)
    assert events_of(appliance, EventCode.CERTIFICATE_TRUSTED) == []
    # the presented one (any spelling): pinned, cleared, recorded with both and who
    services.appliance_certificate_trust(
        appliance=appliance, fingerprint=agent.fingerprint.replace(":", "").lower(), by=admin_user_
    )
    appliance.refresh_from_db()
    assert (appliance.tls_fingerprint, appliance.tls_presented) == (agent.fingerprint, "")
    (trusted,) = events_of(appliance, EventCode.CERTIFICATE_TRUSTED)
    assert trusted.remarks == f"{OTHER} → {agent.fingerprint}; trusted by {admin_user_.username}."
    assert trusted.generated_by == admin_user_.username


def test_trust_of_a_paired_node_re_pins_it_on_its_peer_and_waits_for_a_running_job(
    subnet, agents, make_appliance, admin_user_
):
    ip = f"{subnet}.8"
    agent = agents(ip, "pw-q", answering(ip))
    node = make_appliance(
        name="mse-q", hm_ip=ip, password="pw-q", tls_fingerprint=OTHER, vip=f"{subnet}.10", vip_prefixlen=24
    )
    peer = make_appliance(name="mse-q2", hm_ip=f"{subnet}.9", password="pw-q2")
    pair = services.ha_pair_create(primary=node, secondary=peer, failover_wait=10)
    # while a job of the pair runs, the trust is refused (its re-pin of the peer would be lost)
    running = Job.objects.create(kind=JobKind.START_SERVICES, pair=pair, status=JobStatus.RUNNING)
    with pytest.raises(services.ServiceError, match="once it has ended"):
        services.appliance_certificate_trust(appliance=node, fingerprint=agent.fingerprint, by=admin_user_)
    node.refresh_from_db()
    assert node.tls_fingerprint == OTHER and not events_of(node, EventCode.CERTIFICATE_TRUSTED)
    # once it has ended: pinned, and a job gives the peer (only) the new certificate
    Job.objects.filter(pk=running.pk).update(status=JobStatus.SUCCEEDED)
    services.appliance_certificate_trust(appliance=node, fingerprint=agent.fingerprint, by=admin_user_)
    node.refresh_from_db()
    assert node.tls_fingerprint == agent.fingerprint
    repin = Job.objects.get(kind=JobKind.UPDATE_HA, pair=pair)
    assert repin.params["repin"] == node.pk and "mse-q2 now pins mse-q's new TLS certificate" in repin.params["remarks"]


def test_the_trust_pages_are_for_admins_only(subnet, agents, client, make_appliance, admin_user_, operator_user):
    ip = f"{subnet}.8"
    agent = agents(ip, "pw-v", answering(ip))
    appliance = make_appliance(name="mse-v", hm_ip=ip, password="pw-v", tls_fingerprint=OTHER)
    polling.poll([appliance.pk])
    # an Operator: no link, 403 on the confirmation page and on the POST
    client.force_login(operator_user)
    page = client.get("/mse/mse-v/").content.decode()
    assert "presented a different TLS certificate" in page and "Trust the new certificate" not in page
    assert client.get("/mse/mse-v/certificate/").status_code == 403
    response = client.post("/mse/mse-v/certificate/trust/", {"fingerprint": agent.fingerprint})
    assert response.status_code == 403 and "may not trust" in response.content.decode()
    assert Appliance.objects.get(pk=appliance.pk).tls_fingerprint == OTHER
    # an Admin: the link, the confirmation page with both fingerprints, then the POST
    client.force_login(admin_user_)
    assert "Trust the new certificate" in client.get("/mse/mse-v/").content.decode()
    confirm = client.get("/mse/mse-v/certificate/").content.decode()
    assert OTHER in confirm and agent.fingerprint in confirm
    response = client.post("/mse/mse-v/certificate/trust/", {"fingerprint": agent.fingerprint})
    assert response.status_code == 302
    assert Appliance.objects.get(pk=appliance.pk).tls_fingerprint == agent.fingerprint
    assert "presented a different TLS certificate" not in client.get("/mse/mse-v/").content.decode()


@pytest.mark.parametrize(
    "reply, words",
    [
        (Reply(503, {"error": "busy"}), "could not delete its synchronized service assignments"),
        (Reply(200, {"deleted": "three"}), "not a count"),
    ],
)
def test_an_agent_that_cannot_delete_its_service_assignments_leaves_nothing_added(subnet, agents, reply, words):
    ip = f"{subnet}.4"
    agents(ip, "pw-new", {**answering(ip), ("DELETE", protocol.PATH_SERVICE_ASSIGNMENTS): [reply] * 4})
    before = (Appliance.objects.count(), HAEvent.objects.count())
    with pytest.raises(services.ServiceError, match=words) as refused:
        services.appliance_add(name="mse-new", ip=ip, password="pw-new", delete_assignments=True)
    assert refused.value.field == "delete_assignments" and "Nothing was added" in refused.value.message
    assert (Appliance.objects.count(), HAEvent.objects.count()) == before
