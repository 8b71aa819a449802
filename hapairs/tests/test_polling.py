"""The fleet poller against real agents on loopback (and, for replies a real agent never
gives, a scripted one): what a round writes, and what it refuses to write."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from hapairs import agent_client, polling, services
from hapairs.models import Appliance, HAEvent, HAPair
from hapairs.tests.e2e import AgentFarm, node_toml, wait_for
from hapairs.tests.loopback import Reply, ScriptedAgent, fresh_subnet
from nodeagent import protocol

pytestmark = pytest.mark.django_db


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def subnet(settings):
    settings.AGENT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    settings.AGENT_TIMEOUT = 2.0
    return fresh_subnet(74, settings.AGENT_PORT)


@pytest.fixture
def agent_farm(tmp_path, subnet, settings):
    """One real agent process serving mse-p (primary, VIP .1) and mse-s, paired and Active."""
    farm = AgentFarm(
        tmp_path,
        node_toml("mse-p", "3355", "primary", f"{subnet}.2", "pw-p", vip=f"{subnet}.1")
        + node_toml("mse-s", "3355", "secondary", f"{subnet}.3", "pw-s")
        + '[[pair]]\nprimary = "mse-p"\nsecondary = "mse-s"\nfailover_type = "Manual"\n'
        'failback_type = "Manual"\nfailover_wait = 10\nstabilisation_seconds = 1800\n',
        port=settings.AGENT_PORT,
    ).start()
    yield farm
    farm.stop()


@pytest.fixture
def ha_pair(agent_farm, subnet, make_appliance) -> HAPair:
    """The declared pair, once both agents say it is Active with its data replicated (their
    heartbeats take a moment to start on a busy machine)."""
    primary = make_appliance(name="mse-p", hm_ip=f"{subnet}.2", vip=f"{subnet}.1", vip_prefixlen=24, password="pw-p")
    secondary = make_appliance(name="mse-s", hm_ip=f"{subnet}.3", password="pw-s")

    def active() -> bool:
        p, s = (agent_client.call(agent_client.target_for(node), "GET", protocol.PATH_HA_INFO)["peers"]
                for node in (primary, secondary))  # fmt: skip
        return bool(p and s) and (p[0]["state"], s[0]["state"], s[0]["data_replication"]) == (
            "PRIMARY_ACTIVE",
            "SECONDARY_ACTIVE",
            "Up",
        )

    wait_for(active, timeout=30, what="the declared pair Active")
    return services.ha_pair_create(primary=primary, secondary=secondary)


@pytest.fixture
def scripted_agent(settings):
    """``scripted_agent(appliance, password, replies)``: a scripted agent at the appliance's address."""
    started = []

    def start(appliance, password, replies, **options):
        agent = ScriptedAgent(appliance.hm_ip, settings.AGENT_PORT, password, replies, **options).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def agent_last_seq(appliance) -> int:
    return agent_client.call(agent_client.target_for(appliance), "GET", protocol.PATH_HA_INFO)["last_seq"]


def stored_seqs(appliance) -> list[int]:
    return sorted(HAEvent.objects.filter(appliance=appliance, seq__isnull=False).values_list("seq", flat=True))


def connections_from_here(host: str, port: int) -> list[int]:
    """The local ports of this process's established TCP connections to ``host:port`` (/proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    remote = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    ports = []
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            if fields[2] == remote and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                ports.append(int(fields[1].split(":")[1], 16))
    return sorted(ports)


def wire_event(seq: int, code: protocol.EventCode = protocol.EventCode.CONFIG_CREATED) -> dict:
    return {
        "seq": seq,
        "code": code.value,
        "description": code.text,
        "generated_by": "Primary",
        "timestamp": (timezone.now() - timedelta(seconds=10 - seq)).isoformat(),
        "remarks": "",
        "generation": 1,
        "peer": None,
        "cause": None,
    }


# --- a round --------------------------------------------------------------------------------
def test_a_round_records_both_nodes_states_and_every_event_once(ha_pair):
    # Given an Active pair the portal has never polled
    assert HAPair.objects.get(pk=ha_pair.pk).status_updated_at is None

    # When the poller runs a round, and another
    figures = polling.poll()
    polling.poll([ha_pair.primary_id, ha_pair.secondary_id])

    # Then the pair's status is what the agents say
    pair = HAPair.objects.get(pk=ha_pair.pk)
    assert (figures["appliances"], figures["unreachable"]) == (2, 0)
    assert (pair.primary_state, pair.secondary_state, pair.heartbeat, pair.replication, pair.sync_percent) == (
        "PRIMARY_ACTIVE",
        "SECONDARY_ACTIVE",
        "up",
        "up",
        100,
    )
    assert pair.primary_in_charge and not pair.secondary_in_charge and pair.status_updated_at is not None
    # and each node's events are stored once each, numbered from 1 without a gap, linked to the pair
    for node in (pair.primary, pair.secondary):
        node.refresh_from_db()
        assert node.reachability == "reachable" and node.last_seen_at is not None
        assert node.services and {"name", "admin_status", "service_status"} <= set(node.services[0])
        assert stored_seqs(node) == list(range(1, node.last_event_seq + 1))
        assert node.last_event_seq >= 1 and node.last_event_seq <= agent_last_seq(node)
        assert not HAEvent.objects.filter(appliance=node, seq__isnull=False, pair__isnull=True).exists()


def test_rounds_reuse_the_tls_connections_the_first_one_opened(ha_pair, subnet, settings):
    # Given a round that opened a connection to each agent, over its pinned certificate (the
    # first contact, unpinned, went over another connection: it pinned them)
    hosts = [f"{subnet}.2", f"{subnet}.3"]
    polling.poll()
    assert all(
        Appliance.objects.filter(pk__in=[ha_pair.primary_id, ha_pair.secondary_id]).values_list(
            "tls_fingerprint", flat=True
        )
    )
    before = {host: connections_from_here(host, settings.AGENT_PORT) for host in hosts}
    polling.poll()
    opened = {host: sorted(set(connections_from_here(host, settings.AGENT_PORT)) - set(before[host])) for host in hosts}
    assert all(len(ports) == 1 for ports in opened.values()), opened
    opened = {host: connections_from_here(host, settings.AGENT_PORT) for host in hosts}

    # When two more rounds and a refresh run
    polling.poll()
    polling.poll()
    polling.poll([ha_pair.primary_id])

    # Then they all went over the same connections: no new TLS handshake
    assert {host: connections_from_here(host, settings.AGENT_PORT) for host in hosts} == opened

    # When this process's connections are closed (a worker stopping), they are gone; the next
    # round opens new ones
    polling.close()
    assert all(connections_from_here(host, settings.AGENT_PORT) == [] for host in hosts)
    assert polling.poll()["unreachable"] == 0
    reopened = {host: connections_from_here(host, settings.AGENT_PORT) for host in hosts}
    assert all(len(ports) == 1 for ports in reopened.values()) and reopened != opened
    polling.poll()
    assert {host: connections_from_here(host, settings.AGENT_PORT) for host in hosts} == reopened


def test_a_node_that_stops_answering_is_marked_unreachable_and_reported_once(ha_pair, agent_farm):
    # Given a pair the portal polled while it answered
    polling.poll()

    # When its agents crash, and the poller runs two more rounds
    agent_farm.kill()
    figures = polling.poll()
    polling.poll()

    # Then both nodes are unreachable, the pair's states unknown
    pair = HAPair.objects.get(pk=ha_pair.pk)
    assert figures["unreachable"] == 2
    assert (pair.primary_reachable, pair.secondary_reachable, pair.primary_state, pair.primary_in_charge) == (
        False,
        False,
        "UNKNOWN",
        False,
    )
    # and each node's loss is one warning, saying what the poll ran into
    for node in (pair.primary, pair.secondary):
        assert Appliance.objects.get(pk=node.pk).reachability == "unreachable"
        [lost] = HAEvent.objects.filter(appliance=node, seq__isnull=True, severity="warning")
        assert lost.description == f"{node.name} is not answering the portal" and lost.pair_id == pair.pk
        assert "refused the connection or is unreachable" in lost.remarks


def test_a_malformed_reply_stores_nothing_from_it_and_is_reported(subnet, make_appliance, scripted_agent):
    # Given a node last seen PRIMARY_ACTIVE at generation 4, whose agent now answers with an
    # unknown state (and an event the portal has not stored yet)
    appliance = make_appliance(name="mse-odd", hm_ip=f"{subnet}.5", password="pw-odd")
    Appliance.objects.filter(pk=appliance.pk).update(reachability="reachable", ha_state="PRIMARY_ACTIVE", generation=4)
    scripted_agent(
        appliance,
        "pw-odd",
        {
            ("GET", protocol.PATH_HA_INFO): [
                Reply(
                    200,
                    {
                        "node": "mse-odd",
                        "running": True,
                        "last_seq": 1,
                        "events": [wire_event(1)],
                        "peers": [{"hm_ip": f"{subnet}.6", "state": "EXPLODED", "generation": 9}],
                    },
                )
            ]
        },
    )

    # When the poller runs a round
    figures = polling.poll([appliance.pk])

    # Then nothing the reply said was stored: no event, same state, same generation, same log position
    appliance.refresh_from_db()
    assert figures["unreachable"] == 1
    assert (appliance.ha_state, appliance.generation, appliance.last_event_seq) == ("PRIMARY_ACTIVE", 4, 0)
    assert stored_seqs(appliance) == []
    # and the operator is told what was wrong with it
    [reported] = HAEvent.objects.filter(appliance=appliance, severity="warning")
    assert "mse-odd" in reported.remarks and "state 'EXPLODED' is not an HA state" in reported.remarks


def test_a_node_whose_event_log_restarted_keeps_its_old_events_and_is_read_from_the_start(ha_pair):
    # Given the portal holding 500 events of the primary, the last three of them still numbered,
    # while the primary's agent (reinstalled) numbers its log from 1 again
    primary = ha_pair.primary
    for seq in (498, 499, 500):
        HAEvent.objects.create(
            appliance=primary,
            pair=ha_pair,
            seq=seq,
            description=f"old {seq}",
            generated_by="Primary",
            timestamp=timezone.now() - timedelta(days=1),
        )
    Appliance.objects.filter(pk=primary.pk).update(last_event_seq=500)

    # When the poller runs a round
    polling.poll()

    # Then the old events are kept, unnumbered; the restart is a warning; the log is read anew
    primary.refresh_from_db()
    assert list(HAEvent.objects.filter(description__startswith="old ").values_list("seq", flat=True)) == [None] * 3
    [restart] = HAEvent.objects.filter(appliance=primary, description__contains="restarted")
    assert restart.severity == "warning" and "where the portal had 500" in restart.remarks
    assert primary.last_event_seq == 0 and stored_seqs(primary) == []

    # When the next round runs
    polling.poll()

    # Then the agent's events are stored from 1, as the agent numbers them now
    primary.refresh_from_db()
    assert primary.last_event_seq >= 1 and stored_seqs(primary) == list(range(1, primary.last_event_seq + 1))


def test_events_an_agent_does_not_inline_are_fetched_after_the_last_one_stored(subnet, make_appliance, scripted_agent):
    # Given the portal holding event 1 of a node whose agent has three, but does not carry
    # them in its ha-info
    appliance = make_appliance(name="mse-page", hm_ip=f"{subnet}.7", password="pw-page")
    Appliance.objects.filter(pk=appliance.pk).update(last_event_seq=1)
    agent = scripted_agent(
        appliance,
        "pw-page",
        {
            ("GET", protocol.PATH_HA_INFO): [
                Reply(200, {"node": "mse-page", "running": True, "peers": [], "last_seq": 3})
            ],
            ("GET", protocol.PATH_EVENTS): [
                Reply(
                    200,
                    {
                        "node": "mse-page",
                        "last_seq": 3,
                        "events": [wire_event(2), wire_event(3, protocol.EventCode.SERVICES_STARTED)],
                    },
                )
            ],
        },
    )

    # When the poller runs a round
    polling.poll([appliance.pk])

    # Then both requests asked for what follows event 1, and the two new events are stored
    assert [seen.path_qs.split("?")[0] for seen in agent.seen] == [protocol.PATH_HA_INFO, protocol.PATH_EVENTS]
    assert "events_since=1&" in agent.seen[0].path_qs and "since=1&" in agent.seen[1].path_qs
    assert all(seen.signature_error is None for seen in agent.seen)
    appliance.refresh_from_db()
    assert appliance.last_event_seq == 3 and stored_seqs(appliance) == [2, 3]
    assert HAEvent.objects.get(appliance=appliance, seq=3).description == protocol.EventCode.SERVICES_STARTED.text


def test_a_node_whose_password_cannot_be_read_is_not_called_and_counts_as_unreachable(
    subnet, make_appliance, scripted_agent
):
    # Given an appliance whose stored password no key of the portal can decrypt
    appliance = make_appliance(name="mse-lost", hm_ip=f"{subnet}.8", password="pw-lost")
    agent = scripted_agent(appliance, "pw-lost", {("GET", protocol.PATH_HA_INFO): [Reply(200, {"peers": []})]})
    Appliance.objects.filter(pk=appliance.pk).update(password_ciphertext="gAAAAAB-not-a-token")

    # When the poller runs a round
    figures = polling.poll([appliance.pk])

    # Then it was not called, and it is recorded unreachable
    assert agent.seen == []
    assert (figures["appliances"], figures["unreachable"]) == (1, 1)
    assert Appliance.objects.get(pk=appliance.pk).reachability == "unreachable"
