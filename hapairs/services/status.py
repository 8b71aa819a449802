"""Fleet status: what the agents report (polled or pushed) written to the database.

Pages read these rows, never the agents. Events are stored once per (appliance, seq);
states, heartbeats, replication and generations per pair; both nodes claiming the VIP
is a split brain and raises a critical event with the spec's remedy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from hapairs.agent_replies import AgentEvent, HAInfo, services_as_rows
from hapairs.audit import audit_record
from hapairs.choices import (
    FAILBACK_CODES,
    FAILOVER_CODES,
    EventCode,
    HAState,
    Reachability,
    ReplicationStatus,
    severity_of,
)
from hapairs.jobkeys import job_of_key
from hapairs.models import Appliance, HAEvent, HAPair, HeartbeatSample, Job
from hapairs.selectors import pair_for, pairs_of
from hapairs.services._common import event_record
from hapairs.services.alerts import alert_queue, alerts_for_ingested
from hapairs.services.certificates import certificate_pinned_record, certificate_refused_record
from hapairs.services.webhooks import event_webhooks_for_ingested
from nodeagent import protocol

SPLIT_BRAIN_REMEDY = (
    "Split brain: both nodes are in charge of the virtual IP. Remedy: take the VIP down on the "
    "secondary, restart the secondary's services, and check that it resynchronises with the primary."
)
# display texts only: what happened is the event's code
UNREACHABLE_TEXT = "{name} is not answering the portal"
MASS_UNREACHABLE_TEXT = "{count} nodes stopped answering the portal at once"
MASS_UNREACHABLE = 5  # more nodes lost in one poll than this: one alert for all of them


def _pair_for_peer(appliance: Appliance, pairs: list[HAPair], peer_hm_ip: str | None) -> HAPair | None:
    for pair in pairs:
        other = pair.secondary if pair.primary_id == appliance.pk else pair.primary
        if peer_hm_ip is None and len(pairs) == 1:
            return pair
        if other.hm_ip == peer_hm_ip:
            return pair
    return None


def _jobs_of_keys(keys: set[str]) -> dict[str, int]:
    """The jobs that caused events, from the keys the agents echoed (a job step's key,
    ``jobs.idempotency_key``); a key that names no job (or not one of ours) names none."""
    job_ids = {key: job_id for key in keys if (job_id := job_of_key(key)) is not None}
    known = set(Job.objects.filter(pk__in=set(job_ids.values())).values_list("pk", flat=True))
    return {key: job_id for key, job_id in job_ids.items() if job_id in known}


@transaction.atomic
def events_ingest(*, appliance: Appliance, events: list[AgentEvent]) -> int:
    """Store one agent's pushed events once each; returns how many were new."""
    if not events:
        return 0
    # Lock order (appliance rows by pk, then pairs, then events) is the same as the
    # poller's, so concurrent pushes and polls queue up instead of deadlocking.
    locked = Appliance.objects.select_for_update().get(pk=appliance.pk)
    stored = _ingest_locked({locked.pk: (locked, events)}, list(pairs_of(locked)))
    if stored:
        # the agent's write, in the audit trail too (the events themselves are in the events log)
        seqs = sorted(event.seq for event in events)
        audit_record(
            "events.ingest",
            target=locked,
            before=None,
            after={"events_stored": stored, "seq_from": seqs[0], "seq_to": seqs[-1]},
            actor_name=f"agent {locked.hm_ip}",
        )
    return stored


def _ingest_locked(batch: dict[int, tuple[Appliance, list[AgentEvent]]], pairs: list[HAPair]) -> int:
    """Insert the events of several appliances (their rows already locked) in a few queries."""
    batch = {pk: (a, evs) for pk, (a, evs) in batch.items() if evs}
    if not batch:
        return 0
    pairs_by_node: dict[int, list[HAPair]] = {}
    for pair in pairs:
        pairs_by_node.setdefault(pair.primary_id, []).append(pair)
        pairs_by_node.setdefault(pair.secondary_id, []).append(pair)
    lowest = min(event.seq for _, evs in batch.values() for event in evs)
    jobs = _jobs_of_keys({event.cause_key for _, evs in batch.values() for event in evs if event.cause_key})
    existing = set(
        HAEvent.objects.filter(appliance_id__in=list(batch), seq__gte=lowest).values_list("appliance_id", "seq")
    )
    new_rows, advanced = [], []
    for pk, (appliance, events) in batch.items():
        node_pairs = pairs_by_node.get(pk, [])
        for event in events:
            if (pk, event.seq) in existing:
                continue
            existing.add((pk, event.seq))
            new_rows.append(
                HAEvent(
                    appliance_id=pk,
                    pair=_pair_for_peer(appliance, node_pairs, event.peer_hm_ip),
                    seq=event.seq,
                    code=event.code,
                    cause_key=event.cause_key[:200],
                    why=event.why,
                    job_id=jobs.get(event.cause_key),
                    description=event.description[:300],
                    generated_by=(event.generated_by or appliance.name)[:128],
                    timestamp=event.timestamp,
                    remarks=event.remarks[:500],
                    generation=event.generation,
                    severity=severity_of(event.code),
                )
            )
        highest = max(event.seq for event in events)
        if highest > appliance.last_event_seq:
            appliance.last_event_seq = highest
            advanced.append(appliance)
    HAEvent.objects.bulk_create(new_rows, ignore_conflicts=True, batch_size=500)
    alerts_for_ingested(new_rows)  # failovers and failbacks: alerted after commit
    event_webhooks_for_ingested(new_rows)  # MSEPORTAL_EVENT_WEBHOOKS: queued after commit
    by_value: dict[int, list[int]] = {}
    for appliance in advanced:  # most nodes share a few values: one UPDATE per value
        by_value.setdefault(appliance.last_event_seq, []).append(appliance.pk)
    for value, pks in by_value.items():
        Appliance.objects.filter(pk__in=pks, last_event_seq__lt=value).update(last_event_seq=value)
    for row in new_rows:
        if row.pair is None:
            continue
        if row.code in FAILOVER_CODES:
            HAPair.objects.filter(pk=row.pair.pk).update(last_failover_at=row.timestamp)
        elif row.code in FAILBACK_CODES:
            HAPair.objects.filter(pk=row.pair.pk).update(last_failback_at=row.timestamp)
    return len(new_rows)


@dataclass
class PollResult:
    appliance_id: int
    ha_info: HAInfo | None  # None: unreachable or a bad reply
    error: str = ""
    events: list[AgentEvent] | None = None
    last_seq: int | None = None  # how far the node's own event log goes (ha-info)
    seen: str | None = None  # the TLS certificate it answered over (pinned, or none pinned yet)
    presented: str = ""  # refused: the other certificate it presented than the pinned one
    clock_offset: float | None = None  # its clock minus the portal's, in seconds (None: it did not say)


def status_record(results: list[PollResult]) -> None:
    """Write one polling round (or a single refresh) in one transaction.

    Cheap in steady state: timestamps for every node in two UPDATEs; states, pairs and
    events only where something changed.
    """
    now = timezone.now()
    by_id = {result.appliance_id: result for result in results}
    if not by_id:
        return
    with transaction.atomic():
        appliances = {
            a.pk: a
            for a in Appliance.objects.select_for_update()
            .filter(pk__in=list(by_id))
            .order_by("pk")
            .only(
                "pk",
                "name",
                "hm_ip",
                "ha_state",
                "generation",
                "last_event_seq",
                "services",
                "reachability",
                "tls_fingerprint",
                "tls_presented",
                "clock_offset_ms",
            )
        }
        reachable = [pk for pk in appliances if by_id[pk].ha_info is not None]
        _restart_event_logs(appliances, by_id, reachable)
        unreachable = [pk for pk in appliances if by_id[pk].ha_info is None]
        lost = [
            appliances[pk]
            for pk in unreachable
            if appliances[pk].reachability == Reachability.REACHABLE and not by_id[pk].presented
        ]  # a changed certificate is not an outage: it has its own event
        _record_certificates(appliances, by_id, reachable)
        _record_clock_offsets(appliances, by_id)
        # the timestamps of every node; its reachability only where it changed (an indexed
        # column: left alone, PostgreSQL can update the row in place, a HOT update)
        for pks, reachability, seen in (
            (reachable, Reachability.REACHABLE, True),
            (unreachable, Reachability.UNREACHABLE, False),
        ):
            flipped = [pk for pk in pks if appliances[pk].reachability != reachability]
            steady = [pk for pk in pks if appliances[pk].reachability == reachability]
            times = {"last_seen_at": now, "last_polled_at": now} if seen else {"last_polled_at": now}
            if flipped:
                Appliance.objects.filter(pk__in=flipped).update(reachability=reachability, **times)
            if steady:
                Appliance.objects.filter(pk__in=steady).update(**times)
        changed = []
        for pk in reachable:
            appliance, info = appliances[pk], by_id[pk].ha_info
            state, generation = _node_state(appliance, info), info.generation
            if (appliance.ha_state, appliance.generation) != (state, generation):
                appliance.ha_state, appliance.generation = state, generation
                changed.append(appliance)
        _update_rows(Appliance, changed, ["ha_state", "generation"])
        services_changed = []  # the services' admin / operation status, written when it changes
        for pk in reachable:
            reported = by_id[pk].ha_info.services
            if reported is not None and (rows := services_as_rows(reported)) != appliances[pk].services:
                appliances[pk].services = rows
                services_changed.append(appliances[pk])
        _update_rows(Appliance, services_changed, ["services"])

        pairs = list(
            HAPair.objects.select_for_update(of=("self",))
            .select_related("primary", "secondary")
            .only(*PAIR_ROW_FIELDS)  # of the nodes, what the pair's status needs: not their services
            .filter(Q(primary_id__in=list(by_id)) | Q(secondary_id__in=list(by_id)))
            .order_by("pk")
        )
        changed_pairs: dict[tuple[str, ...], list[HAPair]] = {}  # by the fields that changed
        split_brains = []
        for pair in pairs:
            before = tuple(getattr(pair, name) for name in PAIR_STATUS_FIELDS)
            was_split = pair.split_brain
            for side in ("primary", "secondary"):
                node = getattr(pair, side)
                result = by_id.get(node.pk)
                if result is not None:
                    _apply_side(pair, side, node, result.ha_info)
            pair.split_brain = pair.primary_in_charge and pair.secondary_in_charge
            _track_sync(pair, now)
            if pair.split_brain and not was_split:
                split_brains.append(pair)
            after = tuple(getattr(pair, name) for name in PAIR_STATUS_FIELDS)
            fields = tuple(name for name, old, new in zip(PAIR_STATUS_FIELDS, before, after, strict=True) if old != new)
            if fields:
                changed_pairs.setdefault(fields, []).append(pair)
        for fields, rows in changed_pairs.items():
            _update_rows(HAPair, rows, list(fields))
        if pairs:
            HAPair.objects.filter(pk__in=[pair.pk for pair in pairs]).update(status_updated_at=now)
            _sample_heartbeats(pairs, now)

        for pair in split_brains:
            event = event_record(
                code=EventCode.SPLIT_BRAIN,
                generated_by="mseportal",
                pair=pair,
                remarks=SPLIT_BRAIN_REMEDY,
                why={
                    "rule": "pair.both_in_charge",
                    "text": f"Split brain: both nodes report being in charge ({pair.primary_state} at generation "
                    f"{pair.primary_generation}, {pair.secondary_state} at generation {pair.secondary_generation}).",
                    "inputs": {
                        "primary_state": pair.primary_state,
                        "secondary_state": pair.secondary_state,
                        "primary_generation": pair.primary_generation,
                        "secondary_generation": pair.secondary_generation,
                    },
                },  # fmt: skip
            )
            alert_queue(kind="split_brain", event=event)
        mass = len(lost) > MASS_UNREACHABLE  # a network outage: one alert for all, not one per node
        for appliance in lost:  # answered the last poll, not this one
            node_pairs = [pair for pair in pairs if appliance.pk in (pair.primary_id, pair.secondary_id)]
            event = event_record(
                code=EventCode.NODE_UNREACHABLE,
                description=UNREACHABLE_TEXT.format(name=appliance.name),
                generated_by="mseportal",
                appliance=appliance,
                pair=node_pairs[0] if len(node_pairs) == 1 else None,
                remarks=by_id[appliance.pk].error[:500] or "No answer to the portal's poll.",
                why={
                    "rule": "poll.no_answer",
                    "text": f"Unreachable: {appliance.name} answered the last poll, not this one"
                    + (
                        f"; {len(lost)} nodes lost in this round, more than {MASS_UNREACHABLE}: one alert for all."
                        if mass
                        else "; alerted."
                    ),
                    "inputs": {"lost_this_round": len(lost), "mass_threshold": MASS_UNREACHABLE},
                },  # fmt: skip
            )
            if not mass:
                alert_queue(kind="unreachable", event=event)
        if mass:
            names = sorted(appliance.name for appliance in lost)
            event = event_record(
                code=EventCode.NODES_UNREACHABLE,
                description=MASS_UNREACHABLE_TEXT.format(count=len(names)),
                generated_by="mseportal",
                remarks="; ".join(names[:40])
                + (f"; and {len(names) - 40} more" if len(names) > 40 else "")
                + ". Many nodes at once usually means the network between the portal and them, not the nodes.",
                why={
                    "rule": "poll.mass_unreachable",
                    "text": f"One alert for {len(names)} nodes: more than {MASS_UNREACHABLE} lost in one poll round.",
                    "inputs": {"lost_this_round": len(names), "mass_threshold": MASS_UNREACHABLE},
                },
            )
            alert_queue(kind="unreachable", event=event)
        _ingest_locked(
            {pk: (appliances[pk], by_id[pk].events or []) for pk in reachable},
            pairs,
        )


def _record_certificates(appliances: dict, by_id: dict, reachable: list[int]) -> None:
    """TLS pins: a refused certificate is kept on the appliance (one event per certificate);
    one that answered over its pin again clears it; one recorded before pinning (no pin yet:
    the upgrade path) is pinned to what it answered over. No query when nothing changed."""
    for pk, appliance in appliances.items():
        if by_id[pk].presented:
            certificate_refused_record(hm_ip=appliance.hm_ip, presented=by_id[pk].presented)
    cleared = [pk for pk in reachable if appliances[pk].tls_presented and appliances[pk].tls_fingerprint]
    if cleared:
        Appliance.objects.filter(pk__in=cleared).update(tls_presented="")
    for pk in reachable:
        if not appliances[pk].tls_fingerprint and by_id[pk].seen:
            certificate_pinned_record(appliance_id=pk, seen=by_id[pk].seen)


def _record_clock_offsets(appliances: dict, by_id: dict) -> None:
    """Each node's clock offset from the portal's, written only when it moved by
    CLOCK_OFFSET_STEP_MS or more: a round's jitter (half a round trip) writes nothing. A
    clock that goes CLOCK_SKEW_WARN_SECONDS off (NTP lost, a hand-set clock) is an event,
    and so is its coming back."""
    moved, limit = [], 1000 * settings.CLOCK_SKEW_WARN_SECONDS
    for pk, appliance in appliances.items():
        offset = by_id[pk].clock_offset
        if offset is None:
            continue
        ms = max(-(2**31) + 1, min(2**31 - 1, round(offset * 1000)))
        before = appliance.clock_offset_ms
        if before is None or abs(ms - before) >= settings.CLOCK_OFFSET_STEP_MS:
            appliance.clock_offset_ms = ms
            moved.append(appliance)
            was_off, is_off = before is not None and abs(before) >= limit, abs(ms) >= limit
            if is_off != was_off:
                _clock_event(appliance, ms, limit, off=is_off)
    _update_rows(Appliance, moved, ["clock_offset_ms"])


def _clock_event(appliance: Appliance, ms: int, limit: int, *, off: bool) -> None:
    text = appliance.clock_offset_text
    event_record(
        code=EventCode.CLOCK_OFF if off else EventCode.CLOCK_BACK,  # type: ignore[attr-defined]
        description=f"Clock of {appliance.name} is {text}"[:300],
        generated_by="mseportal",
        appliance=appliance,
        pair=pair_for(appliance),
        remarks=(
            f"More than {settings.CLOCK_SKEW_WARN_SECONDS} s: set it and the portal to the same NTP servers. "
            f"Beyond {protocol.DEFAULT_FRESHNESS_SECONDS} s it refuses the portal's signed requests."
            if off
            else f"Within {settings.CLOCK_SKEW_WARN_SECONDS} s of the portal's clock again."
        ),
        why={
            "rule": "clock.offset",
            "text": f"the poll measured its clock {text}; more than {settings.CLOCK_SKEW_WARN_SECONDS} s counts as off",
            "inputs": {"offset_ms": ms, "limit_ms": limit},
        },
    )


def _update_grouped(model, rows: list, fields: list[str]) -> None:
    """Write ``fields`` of ``rows``: one UPDATE per distinct set of values. Most nodes and
    pairs share their values (Active, Up, 100 %...), and a plain UPDATE is far cheaper than
    bulk_update's CASE per row and field (measured: 6 s against 0.3 s for 1,000 pairs)."""
    for values, pks in _groups(rows, fields).values():
        for start in range(0, len(pks), 1000):
            model.objects.filter(pk__in=pks[start : start + 1000]).update(**dict(zip(fields, values, strict=True)))


def _groups(rows: list, fields: list[str]) -> dict[str, tuple[list, list[int]]]:
    groups: dict[str, tuple[list, list[int]]] = {}
    for row in rows:
        values = [getattr(row, name) for name in fields]
        key = json.dumps(values, sort_keys=True, default=str)  # JSON fields (lists) are not hashable
        groups.setdefault(key, (values, []))[1].append(row.pk)
    return groups


def _update_rows(model, rows: list, fields: list[str]) -> None:
    """Write ``fields`` of ``rows`` (only the fields that changed, only the rows they changed in).

    Values most rows share: grouped UPDATEs. Values each row has its own (a pair's mean
    heartbeat time changes every poll): on PostgreSQL one ``UPDATE … FROM (VALUES …)`` per
    1,000 rows instead of one UPDATE per row (measured, 1,000 pairs whose mean changed:
    0.67 s in ~500 grouped UPDATEs, 0.03 s in one). SQLite (one machine) keeps the groups."""
    groups = _groups(rows, fields)
    if connection.vendor != "postgresql" or len(groups) <= VALUES_UPDATE_FROM:
        _update_grouped(model, rows, fields)
        return
    meta, quote = model._meta, connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    cells = ", ".join(["%s::bigint", *(f"%s::{field.cast_db_type(connection)}" for field in columns)])
    names = ", ".join(["_pk", *(quote(field.column) for field in columns)])
    assignments = ", ".join(f"{quote(field.column)} = v.{quote(field.column)}" for field in columns)
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        params: list = []
        for row in chunk:
            params.append(row.pk)
            params.extend(field.get_db_prep_save(getattr(row, field.attname), connection) for field in columns)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {quote(meta.db_table)} AS t SET {assignments} "
                f"FROM (VALUES {', '.join([f'({cells})'] * len(chunk))}) AS v({names}) "
                f"WHERE t.{quote(meta.pk.column)} = v._pk",
                params,
            )


def _restart_event_logs(appliances: dict, by_id: dict, reachable: list[int]) -> None:
    """A node whose own log is behind what the portal stored lost its state (re-installed,
    or set up again in recovery mode) and numbers its events from 1 again. Its earlier
    events stay in the log without their sequence numbers, so the new ones are stored
    (events are unique per (appliance, seq)) and fetched from the start."""
    restarted = [
        appliances[pk]
        for pk in reachable
        if by_id[pk].last_seq is not None and by_id[pk].last_seq < appliances[pk].last_event_seq
    ]
    for appliance in restarted:
        HAEvent.objects.filter(appliance=appliance, seq__isnull=False).update(seq=None)
        Appliance.objects.filter(pk=appliance.pk).update(last_event_seq=0)
        event_record(
            code=EventCode.EVENT_LOG_RESTARTED,
            description=f"Event log of {appliance.name} restarted",
            generated_by="mseportal",
            appliance=appliance,
            pair=pair_for(appliance),
            remarks=f"It reports {by_id[appliance.pk].last_seq} events where the portal had "
            f"{appliance.last_event_seq}: its state was reset. Earlier events are kept.",
        )
        appliance.last_event_seq = 0
        by_id[appliance.pk].events = []  # fetched after the old numbering: the next poll reads from the start


def _sample_heartbeats(pairs: list[HAPair], now) -> None:
    """One heartbeat sample per pair per minute, with no query to find the last one: a
    pair is sampled when this write is the first of a new minute for it."""
    minute = now.replace(second=0, microsecond=0)
    HeartbeatSample.objects.bulk_create(
        [
            HeartbeatSample(pair=pair, at=now, mean_ms=pair.mean_heartbeat_ms)
            for pair in pairs
            if pair.mean_heartbeat_ms is not None
            and (pair.status_updated_at is None or pair.status_updated_at < minute)
        ],
        batch_size=500,
    )


def heartbeat_samples_prune(*, keep_days: int) -> int:
    """Drop samples older than ``keep_days`` (beat, daily)."""
    cutoff = timezone.now() - timedelta(days=keep_days)
    deleted, _ = HeartbeatSample.objects.filter(at__lt=cutoff).delete()
    return deleted


VALUES_UPDATE_FROM = 8  # more distinct value sets than this: one UPDATE … FROM (VALUES …)
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
    "primary_paths",
    "secondary_paths",
    "primary_witnesses",
    "secondary_witnesses",
    "primary_fenced",
    "sync_best",
    "sync_best_at",
]
# what status_record reads of a pair and its nodes (_apply_side, _pair_for_peer, the events)
PAIR_ROW_FIELDS = [
    "primary",
    "secondary",
    "status_updated_at",
    *PAIR_STATUS_FIELDS,
    "primary__name",
    "primary__hm_ip",
    "secondary__name",
    "secondary__hm_ip",
]


def _track_sync(pair: HAPair, now) -> None:
    """The synchronisation's best percentage and when it got there: a stall is no progress
    past it for a while (a copy that fails and restarts at 0 makes none), whatever the
    percentage reads this round. Forgotten once in sync, or while nobody says."""
    # a copy to the secondary: the primary in charge, both answering, replication not up
    syncing = (
        pair.replication in (ReplicationStatus.SETTING_UP, ReplicationStatus.DOWN)
        and pair.sync_percent < 100
        and pair.primary_in_charge
        and not pair.secondary_in_charge
        and pair.primary_reachable
        and pair.secondary_reachable
    )
    if not syncing:
        if pair.replication == ReplicationStatus.UP or pair.sync_percent >= 100 or pair.secondary_in_charge:
            pair.sync_best, pair.sync_best_at = 0, None
        return
    if pair.sync_best_at is None or pair.sync_percent > pair.sync_best:
        pair.sync_best, pair.sync_best_at = pair.sync_percent, now


def _node_state(appliance: Appliance, info: HAInfo) -> str:
    if not info.peers:
        return HAState.UNKNOWN
    return info.peers[0].state


def _apply_side(pair: HAPair, side: str, node: Appliance, info: HAInfo | None) -> None:
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
    setattr(pair, f"{side}_paths", peer.paths)
    setattr(pair, f"{side}_witnesses", peer.witnesses)
    if side == "primary":
        pair.primary_fenced = peer.fenced
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
