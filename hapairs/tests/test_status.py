"""Status records: states per node, pair-wide figures, split brain, unreachable nodes."""

from __future__ import annotations

import pytest

from hapairs import services
from hapairs.agent_replies import HAInfo, PeerStatus
from hapairs.models import HAEvent, HAPair
from hapairs.services.status import PollResult, status_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair(make_appliance):
    primary = make_appliance(name="p", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24)
    secondary = make_appliance(name="s", hm_ip="127.10.10.16")
    return services.ha_pair_create(primary=primary, secondary=secondary)


def info(peer_ip, state, *, in_charge, generation=1, sync=100, heartbeat="up", replication="up", status="Active"):
    return HAInfo(
        node="n",
        running=True,
        role="",
        generation=generation,
        peers=[
            PeerStatus(
                peer_hm_ip=peer_ip,
                state=state,
                running=True,
                heartbeat=heartbeat,
                replication=replication,
                sync_percent=sync,
                mean_heartbeat_ms=0.7,
                generation=generation,
                in_charge=in_charge,
                status=status,
                allowed_switch_at=None,
                instance_db_name="mseos3",
            )
        ],
    )


def test_a_healthy_pair_is_recorded(pair):
    status_record(
        [
            PollResult(pair.primary_id, info("127.10.10.16", "PRIMARY_ACTIVE", in_charge=True)),
            PollResult(pair.secondary_id, info("127.10.10.15", "SECONDARY_ACTIVE", in_charge=False)),
        ]
    )
    pair.refresh_from_db()
    assert (pair.primary_state, pair.secondary_state, pair.heartbeat, pair.replication) == (
        "PRIMARY_ACTIVE",
        "SECONDARY_ACTIVE",
        "up",
        "up",
    )
    assert pair.mean_heartbeat_ms == 0.7 and not pair.split_brain
    pair.primary.refresh_from_db()
    assert pair.primary.reachability == "reachable"


def test_both_nodes_in_charge_is_a_split_brain_raised_once_with_the_remedy(pair):
    both = [
        PollResult(pair.primary_id, info("127.10.10.16", "PRIMARY_ACTIVE", in_charge=True)),
        PollResult(pair.secondary_id, info("127.10.10.15", "FAILOVER_ACTIVE", in_charge=True, generation=2)),
    ]
    status_record(both)
    status_record(both)
    pair.refresh_from_db()
    assert pair.split_brain
    alerts = HAEvent.objects.filter(pair=pair, severity="critical")
    assert alerts.count() == 1
    assert "take the VIP down on the secondary" in alerts.get().remarks
    # resolved: one in charge again
    status_record([PollResult(pair.secondary_id, info("127.10.10.15", "SECONDARY_ACTIVE", in_charge=False))])
    pair.refresh_from_db()
    assert not pair.split_brain


def test_an_unreachable_node_is_recorded_as_such(pair):
    status_record([PollResult(pair.primary_id, None, error="refused")])
    pair.refresh_from_db()
    pair.primary.refresh_from_db()
    assert pair.primary.reachability == "unreachable"
    assert not pair.primary_reachable and pair.primary_state == "UNKNOWN"


def test_the_generation_only_grows(pair):
    status_record(
        [PollResult(pair.secondary_id, info("127.10.10.15", "FAILOVER_ACTIVE", in_charge=True, generation=5))]
    )
    status_record([PollResult(pair.primary_id, info("127.10.10.16", "TERMINATED", in_charge=False, generation=4))])
    assert HAPair.objects.get(pk=pair.pk).generation == 5


def test_a_node_whose_event_log_restarted_gets_its_new_events_stored(pair):
    from django.utils import timezone

    from hapairs.agent_replies import AgentEvent
    from hapairs.models import Appliance

    def event(seq, text):
        return AgentEvent(
            seq=seq,
            code="note",
            description=text,
            generated_by="Primary",
            timestamp=timezone.now(),
            remarks="",
            generation=1,
            peer_hm_ip="127.10.10.16",
        )

    healthy = info("127.10.10.16", "PRIMARY_ACTIVE", in_charge=True)
    status_record([PollResult(pair.primary_id, healthy, events=[event(1, "old one"), event(2, "old two")], last_seq=2)])
    assert Appliance.objects.get(pk=pair.primary_id).last_event_seq == 2
    # the node lost its state: its log now says 1
    status_record([PollResult(pair.primary_id, healthy, events=[], last_seq=1)])
    primary = Appliance.objects.get(pk=pair.primary_id)
    assert primary.last_event_seq == 0
    assert HAEvent.objects.filter(appliance=primary, description__startswith="old", seq__isnull=True).count() == 2
    assert HAEvent.objects.filter(description="Event log of p restarted", pair=pair).count() == 1
    status_record([PollResult(pair.primary_id, healthy, events=[event(1, "new one")], last_seq=1)])
    assert HAEvent.objects.get(appliance=primary, seq=1).description == "new one"
    # an ordinary round changes nothing
    status_record([PollResult(pair.primary_id, healthy, events=[], last_seq=1)])
    assert HAEvent.objects.filter(description="Event log of p restarted").count() == 1


def test_the_services_status_follows_what_the_node_reports(pair):
    from hapairs.agent_replies import ServiceStatus
    from hapairs.models import Appliance

    def reported(cas):
        base = info("127.10.10.16", "PRIMARY_ACTIVE", in_charge=True)
        return HAInfo(
            node=base.node,
            running=True,
            role="primary",
            generation=1,
            peers=base.peers,
            services=[
                ServiceStatus(
                    name="Context Aware Service", version="8.0.1.79", admin_status="Enabled", service_status=cas
                ),
                ServiceStatus(name="WIPS", version="3.0", admin_status="Disabled", service_status="Down"),
            ],
        )

    status_record([PollResult(pair.primary_id, reported("Up"))])
    services = Appliance.objects.get(pk=pair.primary_id).services
    assert (
        services[0]
        == {"name": "Context Aware Service", "version": "8.0.1.79", "admin_status": "Enabled", "service_status": "Up"}
        and len(services) == 2
    )
    status_record([PollResult(pair.primary_id, reported("Down"))])
    assert Appliance.objects.get(pk=pair.primary_id).services[0]["service_status"] == "Down"
    # an agent that says nothing about its services leaves them as they were
    status_record([PollResult(pair.primary_id, info("127.10.10.16", "PRIMARY_ACTIVE", in_charge=True))])
    assert Appliance.objects.get(pk=pair.primary_id).services[0]["service_status"] == "Down"
