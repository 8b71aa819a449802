"""Status records: states per node, pair-wide figures, split brain, unreachable nodes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

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


def test_the_pairs_network_is_recorded_and_drawn_as_a_reachability_matrix(pair, client, operator_user):
    import dataclasses

    from hapairs import agent_replies, selectors

    # given the agents' view of their network: both paths, one witness, the primary fenced
    witness = "127.10.10.50:8002"
    primary_view = info("127.10.10.16", "PRIMARY_ACTIVE", in_charge=True)
    primary_view = dataclasses.replace(primary_view, peers=[dataclasses.replace(
        primary_view.peers[0], paths={"hm": "down", "direct": "up"}, fenced=True,
        witnesses=[{"address": witness, "ok": False, "answer": f"{witness} unreachable (TimeoutError)"}])])  # fmt: skip
    secondary_view = info("127.10.10.15", "SECONDARY_ACTIVE", in_charge=False)
    secondary_view = dataclasses.replace(secondary_view, peers=[dataclasses.replace(
        secondary_view.peers[0], paths={"hm": "down", "direct": "up"},
        witnesses=[{"address": witness, "ok": False,
                    "answer": f"{witness}: takeover refused: witness sees the primary (heard 0.3 s ago)"}])])  # fmt: skip
    # when the poller records them
    status_record([PollResult(pair.primary_id, primary_view), PollResult(pair.secondary_id, secondary_view)])
    pair = HAPair.objects.select_related("primary", "secondary").get(pk=pair.pk)
    # then the matrix has each path, each node's witness, and the portal's view of each node
    net = selectors.pair_network(pair)
    assert [(link.between, link.status) for link in net.links] == [
        ("p ↔ s · Health Monitor network", "down"),
        ("p ↔ s · direct connect", "up"),
        (f"p ↔ witness {witness}", "down"),
        (f"s ↔ witness {witness}", "up"),  # it answered (a refusal): reachable
        ("portal ↔ p", "up"),
        ("portal ↔ s", "up"),
    ]
    assert net.witnessed and net.fenced and "witness sees the primary" in net.verdict
    # and the status screen shows it; a pair without witnesses is named a risk
    client.force_login(operator_user)
    page = client.get("/mse/p/ha/").content.decode()
    assert 'id="fenced"' in page and "witness sees the primary" in page and 'id="no-witness-risk"' not in page
    HAPair.objects.filter(pk=pair.pk).update(primary_witnesses=[], secondary_witnesses=[])
    assert 'id="no-witness-risk"' in client.get("/mse/p/ha/").content.decode()
    # and junk in the agents' answer is refused, naming the field
    for bad, field in (({"paths": {"wifi": "Up"}}, "paths"), ({"witnesses": [{"ok": "yes"}]}, "witness"),
                       ({"fenced": "no"}, "fenced")):  # fmt: skip
        raw = {"peers": [{"hm_ip": "127.10.10.16", "state": "PRIMARY_ACTIVE", **bad}]}
        with pytest.raises(agent_replies.AgentBadReply, match=field):
            agent_replies.parse_ha_info(raw, source="p")


def test_pairs_each_with_values_of_their_own_are_all_written_in_one_statement(
    make_appliance, django_assert_max_num_queries
):
    # Given 12 pairs recorded once, healthy
    pairs = []
    for n in range(12):
        primary = make_appliance(name=f"vp{n}", hm_ip=f"127.10.{n + 20}.2", vip=f"127.10.{n + 20}.1", vip_prefixlen=24)
        secondary = make_appliance(name=f"vs{n}", hm_ip=f"127.10.{n + 20}.3")
        pairs.append(services.ha_pair_create(primary=primary, secondary=secondary))

    def round_(of_pair):
        results = []
        for n, pair in enumerate(pairs):
            p_ip, s_ip = f"127.10.{n + 20}.2", f"127.10.{n + 20}.3"
            primary, secondary = of_pair(n)
            results += [PollResult(pair.primary_id, primary(s_ip)), PollResult(pair.secondary_id, secondary(p_ip))]
        status_record(results)

    round_(lambda n: (
        lambda ip: info(ip, "PRIMARY_ACTIVE", in_charge=True),
        lambda ip: info(ip, "SECONDARY_ACTIVE", in_charge=False),
    ))  # fmt: skip

    # When the next round finds every pair with figures of its own, of every kind of column
    # (floats, integers, text, times, JSON, booleans)
    allowed = timezone.now().replace(microsecond=0)

    def own(n):
        def peer(ip, state, in_charge):
            base = info(ip, state, in_charge=in_charge, generation=n + 2, sync=50 + n, status=f"Syncing {n}")
            extra = {"mean_heartbeat_ms": 0.1 + n / 100, "allowed_switch_at": allowed + timedelta(seconds=n),
                     "paths": {"hm": "up", "direct": "down" if n % 2 else "up"},
                     "witnesses": [{"address": f"127.0.0.{n}:8002", "ok": n % 3 == 0, "answer": "lease"}]}  # fmt: skip
            return replace(base, peers=[replace(base.peers[0], **extra)])

        return (lambda ip: peer(ip, "PRIMARY_ACTIVE", True), lambda ip: peer(ip, "SECONDARY_ACTIVE", False))

    # PostgreSQL: one UPDATE … FROM (VALUES …) for the pairs, one for the nodes; SQLite groups them
    with django_assert_max_num_queries(8 if connection.vendor == "postgresql" else 60) as queries:
        round_(own)

    # Then every pair holds its own figures, written (on PostgreSQL) in one UPDATE, not one per pair
    for n, pair in enumerate(pairs):
        pair.refresh_from_db()
        assert (pair.mean_heartbeat_ms, pair.sync_percent, pair.generation, pair.status_text) == (
            pytest.approx(0.1 + n / 100),
            50 + n,
            n + 2,
            f"Syncing {n}",
        )
        assert pair.switch_allowed_at == allowed + timedelta(seconds=n)
        assert pair.secondary_paths == {"hm": "up", "direct": "down" if n % 2 else "up"}
        assert pair.primary_witnesses == [{"address": f"127.0.0.{n}:8002", "ok": n % 3 == 0, "answer": "lease"}]
        assert (pair.primary_in_charge, pair.secondary_in_charge, pair.split_brain) == (True, False, False)
    if connection.vendor == "postgresql":
        assert sum("FROM (VALUES" in query["sql"] for query in queries.captured_queries) == 2  # pairs, nodes
