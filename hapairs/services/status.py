"""Fleet status: what the agents report (polled or pushed) written to the database.

Pages read these rows, never the agents. Events are stored once per (appliance, seq);
states, heartbeats, replication and generations per pair; both nodes claiming the VIP
is a split brain and raises a critical event with the spec's remedy.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from hapairs.agent_replies import AgentEvent, HAInfo
from hapairs.choices import HAState, Reachability, Severity
from hapairs.models import Appliance, HAEvent, HAPair
from hapairs.services._common import event_record

SPLIT_BRAIN_REMEDY = (
    "Split brain: both nodes are in charge of the virtual IP. Remedy: take the VIP down on the "
    "secondary, restart the secondary's services, and check that it resynchronises with the primary."
)
FAILOVER_EVENT = "Instance is in failover active state"
FAILBACK_EVENTS = ("Failback complete; primary instance is in charge",)


def _pairs_of(appliance: Appliance) -> list[HAPair]:
    return list(
        HAPair.objects.select_related("primary", "secondary").filter(Q(primary=appliance) | Q(secondary=appliance))
    )


def _pair_for_peer(appliance: Appliance, pairs: list[HAPair], peer_hm_ip: str | None) -> HAPair | None:
    for pair in pairs:
        other = pair.secondary if pair.primary_id == appliance.pk else pair.primary
        if peer_hm_ip is None and len(pairs) == 1:
            return pair
        if other.hm_ip == peer_hm_ip:
            return pair
    return None


@transaction.atomic
def events_ingest(*, appliance: Appliance, events: list[AgentEvent]) -> int:
    """Store agent events once each; returns how many were new."""
    if not events:
        return 0
    # Lock order (appliance rows by pk, then pairs, then events) is the same as the
    # poller's, so concurrent pushes and polls queue up instead of deadlocking.
    Appliance.objects.select_for_update().filter(pk=appliance.pk).first()
    pairs = _pairs_of(appliance)
    rows = []
    for event in events:
        pair = _pair_for_peer(appliance, pairs, event.peer_hm_ip)
        severity = Severity.INFO
        if event.description == FAILOVER_EVENT or event.description.startswith(("Heartbeats lost", "Newer generation")):
            severity = Severity.WARNING
        rows.append(
            HAEvent(
                appliance=appliance,
                pair=pair,
                seq=event.seq,
                description=event.description[:300],
                generated_by=(event.generated_by or appliance.name)[:128],
                timestamp=event.timestamp,
                remarks=event.remarks[:500],
                generation=event.generation,
                severity=severity,
            )
        )
    existing = set(
        HAEvent.objects.filter(appliance=appliance, seq__in=[e.seq for e in events]).values_list("seq", flat=True)
    )
    new_rows = [row for row in rows if row.seq not in existing]
    HAEvent.objects.bulk_create(new_rows, ignore_conflicts=True)
    highest = max(event.seq for event in events)
    Appliance.objects.filter(pk=appliance.pk, last_event_seq__lt=highest).update(last_event_seq=highest)
    for row in new_rows:
        if row.pair is None:
            continue
        if row.description == FAILOVER_EVENT:
            HAPair.objects.filter(pk=row.pair.pk).update(last_failover_at=row.timestamp)
        elif row.description in FAILBACK_EVENTS:
            HAPair.objects.filter(pk=row.pair.pk).update(last_failback_at=row.timestamp)
    return len(new_rows)


@dataclass
class PollResult:
    appliance_id: int
    ha_info: HAInfo | None  # None: unreachable or a bad reply
    error: str = ""
    events: list[AgentEvent] | None = None


def status_record(results: list[PollResult]) -> None:
    """Write one polling round (or a single refresh) in one transaction."""
    now = timezone.now()
    by_id = {result.appliance_id: result for result in results}
    with transaction.atomic():
        appliances = {a.pk: a for a in Appliance.objects.select_for_update().filter(pk__in=by_id).order_by("pk")}
        changed_appliances = []
        for appliance_id, result in by_id.items():
            appliance = appliances.get(appliance_id)
            if appliance is None:
                continue
            info = result.ha_info
            appliance.last_polled_at = now
            if info is None:
                appliance.reachability = Reachability.UNREACHABLE
            else:
                appliance.reachability = Reachability.REACHABLE
                appliance.last_seen_at = now
                appliance.generation = info.generation
                appliance.ha_state = _node_state(appliance, info)
            changed_appliances.append(appliance)
        Appliance.objects.bulk_update(
            changed_appliances, ["reachability", "last_seen_at", "last_polled_at", "generation", "ha_state"], batch_size=500
        )
        pairs = list(
            HAPair.objects.select_for_update(of=("self",))
            .select_related("primary", "secondary")
            .filter(Q(primary_id__in=by_id) | Q(secondary_id__in=by_id))
            .order_by("pk")
        )
        split_brains = []
        for pair in pairs:
            was_split = pair.split_brain
            for side in ("primary", "secondary"):
                node = getattr(pair, side)
                result = by_id.get(node.pk)
                if result is None:
                    continue
                _apply_side(pair, side, node, result.ha_info, now)
            pair.split_brain = pair.primary_in_charge and pair.secondary_in_charge
            if pair.split_brain and not was_split:
                split_brains.append(pair)
            pair.status_updated_at = now
        HAPair.objects.bulk_update(pairs, PAIR_STATUS_FIELDS, batch_size=500)
        for pair in split_brains:
            event_record(
                description="Split brain detected: primary and secondary are both active",
                generated_by="mseportal",
                pair=pair,
                severity=Severity.CRITICAL,
                remarks=SPLIT_BRAIN_REMEDY,
            )
        for result in results:
            if result.events and result.appliance_id in appliances:
                events_ingest(appliance=appliances[result.appliance_id], events=result.events)


PAIR_STATUS_FIELDS = [
    "primary_state",
    "secondary_state",
    "primary_generation",
    "secondary_generation",
    "primary_reachable",
    "primary_services_up",
    "secondary_services_up",
    "secondary_reachable",
    "primary_in_charge",
    "secondary_in_charge",
    "generation",
    "heartbeat",
    "replication",
    "sync_percent",
    "mean_heartbeat_ms",
    "status_text",
    "switch_allowed_at",
    "split_brain",
    "status_updated_at",
]


def _node_state(appliance: Appliance, info: HAInfo) -> str:
    if not info.peers:
        return HAState.UNKNOWN
    return info.peers[0].state


def _apply_side(pair: HAPair, side: str, node: Appliance, info: HAInfo | None, now) -> None:
    other = pair.secondary if side == "primary" else pair.primary
    if info is None:
        setattr(pair, f"{side}_reachable", False)
        setattr(pair, f"{side}_services_up", False)
        setattr(pair, f"{side}_in_charge", False)
        setattr(pair, f"{side}_state", HAState.UNKNOWN)
        return
    setattr(pair, f"{side}_reachable", True)
    peer = info.peer(other.hm_ip)
    if peer is None:
        setattr(pair, f"{side}_state", HAState.UNKNOWN)
        setattr(pair, f"{side}_in_charge", False)
        return
    setattr(pair, f"{side}_state", peer.state)
    setattr(pair, f"{side}_services_up", peer.running)
    setattr(pair, f"{side}_generation", peer.generation)
    setattr(pair, f"{side}_in_charge", peer.in_charge and peer.running)
    pair.generation = max(pair.generation, peer.generation)
    # Pair-wide figures: the node in charge knows best; otherwise whoever answered.
    if peer.in_charge or side == "secondary" or not pair.status_text:
        pair.heartbeat = peer.heartbeat
        pair.replication = peer.replication
        pair.sync_percent = peer.sync_percent
        if peer.mean_heartbeat_ms is not None:
            pair.mean_heartbeat_ms = peer.mean_heartbeat_ms
        if peer.status:
            pair.status_text = peer.status
        pair.switch_allowed_at = peer.allowed_switch_at
