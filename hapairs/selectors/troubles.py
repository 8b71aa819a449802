"""The troubleshooting panel of the status screen: every condition the guide names (spec §8)
that holds for the pair now, what was detected, since when, the safe action the portal
offers and what it will do, in the guide's words where it has them. From the pair's row
and, only while a condition holds, one query for the events that say since when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from hapairs.choices import EventCode, HAState
from hapairs.models import HAEvent, HAPair
from nodeagent import protocol

PATH_NAMES = {"hm": "Health Monitor network", "direct": "direct connect"}


@dataclass(frozen=True)
class Trouble:
    key: str  # split_brain | sync_stuck | secondary_unreachable | primary_unreachable | path_down | clock_skew
    title: str
    detected: str
    since: datetime | None
    guide: str  # the guide's remedy (spec §8), or what to check where it has none
    action: str = ""  # the safe action offered ("" none: nothing to do from here)
    action_url: str = ""
    does: str = ""  # what that action will do


def _duration(since: datetime | None, now: datetime) -> str:
    if since is None:
        return ""
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def sync_stalled(pair: HAPair, *, now: datetime | None = None) -> tuple[int, datetime] | None:
    """(the percentage, since when) when the synchronisation made no progress for
    MSEPORTAL_SYNC_STALL_SECONDS; else None."""
    now = now or timezone.now()
    if pair.sync_best_at is None:
        return None
    if now - pair.sync_best_at < timedelta(seconds=settings.SYNC_STALL_SECONDS):
        return None
    return pair.sync_best, pair.sync_best_at


def troubles(pair: HAPair, *, now: datetime | None = None) -> list[Trouble]:
    now = now or timezone.now()
    p, s = pair.primary, pair.secondary
    found: list[Trouble] = []
    down: dict[str, str] = {}  # path → the side that hears nothing on it (once per path)
    for side, paths in (("secondary", pair.secondary_paths), ("primary", pair.primary_paths)):
        for path, status in (paths or {}).items():
            if status == "down" and any(other == "up" for other in (paths or {}).values()):
                down.setdefault(path, side)
    down_paths = [(side, path) for path, side in down.items()]
    last: dict[str, datetime] = {}
    if pair.split_brain or down_paths:
        codes = [EventCode.SPLIT_BRAIN, EventCode.HEARTBEAT_PATH_DOWN]  # type: ignore[attr-defined]
        last = dict(HAEvent.objects.filter(pair=pair, code__in=codes).values_list("code").annotate(at=Max("timestamp")))
    delete_url = reverse("ha_delete", args=[p.name])

    if pair.split_brain:
        since = last.get(EventCode.SPLIT_BRAIN)  # type: ignore[attr-defined]
        found.append(Trouble(
            key="split_brain",
            title="Split brain",
            detected=f"Both {p.name} and {s.name} report being in charge of the virtual IP {p.vip} "
            f"(generations {pair.primary_generation} and {pair.secondary_generation})"
            + (f", for {_duration(since, now)}." if since else "."),
            since=since,
            guide="Take the VIP down on the secondary, restart the secondary's services, check that it "
            "resynchronises with the primary.",
            action="Refresh Status",
            action_url=reverse("ha_refresh", args=[p.name]),
            does="Asks both nodes now. As soon as they hear each other, the one holding the older generation "
            "steps down and releases the VIP by itself; the other keeps serving.",
        ))  # fmt: skip

    stalled = sync_stalled(pair, now=now)
    if stalled is not None:
        percent, since = stalled
        found.append(Trouble(
            key="sync_stuck",
            title=f"Synchronisation stuck at {percent} %",
            detected=f"The copy of {p.name}'s database to {s.name} has made no progress past {percent} % for "
            f"{_duration(since, now)} (more than {settings.SYNC_STALL_SECONDS // 60 or 1} min counts as stuck).",
            since=since,
            guide="Stop the secondary, drop its per-primary advanced configuration (and, if still stuck, its data "
            "directory), restart it and re-add it.",
            action="Reset synchronisation…",
            action_url=reverse("ha_reset_sync", args=[p.name]),
            does=f"{s.name} drops its per-primary state for {p.name} (only this instance, {pair.instance_db_name}) "
            f"and makes it again from {p.name}'s configuration, and {p.name} copies the instance again, with progress "
            f"shown; emptying {s.name}'s copy first is offered too, with "
            f"a second confirmation. {p.name} keeps serving throughout.",
        ))  # fmt: skip

    for node, reachable in ((s, pair.secondary_reachable), (p, pair.primary_reachable)):
        if reachable:
            continue
        since = node.last_seen_at
        key = "secondary_unreachable" if node is s else "primary_unreachable"
        detected = f"{node.name} ({node.hm_ip}) does not answer the portal" + (
            f"; last answer {_duration(since, now)} ago." if since else "; it has not answered yet."
        )
        if node is s:
            found.append(Trouble(
                key=key,
                title=f"{s.name} (secondary) unreachable",
                detected=detected,
                since=since,
                guide="The secondary cannot be deleted while the manager cannot reach it: stop the primary, drop "
                "its per-secondary advanced configuration, restart, delete and re-add the primary.",
                action="Remove the pairing from the primary only…" if pair.primary_reachable else "",
                action_url=f"{delete_url}#one-side" if pair.primary_reachable else "",
                does=f"Once you confirm {s.name} is down or will be rebuilt: {p.name} drops its configuration for "
                f"{s.name} and stays PRIMARY_ACTIVE with its VIP, without a restart; the pair leaves the portal. "
                f"If {s.name} comes back still paired, it is told so and stands down without taking the VIP.",
            ))  # fmt: skip
        else:
            in_charge = pair.secondary_in_charge or pair.secondary_state == HAState.FAILOVER_ACTIVE
            found.append(Trouble(
                key=key,
                title=f"{p.name} (primary) unreachable",
                detected=detected
                + (f" {s.name} is in charge of the VIP." if in_charge else f" {s.name} stands by."),
                since=since,
                guide=f"Check {p.name}'s network settings with getserverinfo, start its services, re-run set-up.",
                action="" if in_charge or not pair.secondary_reachable else "Remove the pairing from the secondary only…",
                action_url="" if in_charge or not pair.secondary_reachable else f"{delete_url}#one-side",
                does="" if in_charge else f"Once you confirm {p.name} is down or will be rebuilt: {s.name} drops its "
                f"configuration for {p.name} and releases {pair.instance_db_name}. Refused while {s.name} is in charge.",
            ))  # fmt: skip

    for side, path in down_paths:
        since = last.get(EventCode.HEARTBEAT_PATH_DOWN)  # type: ignore[attr-defined]
        name = PATH_NAMES.get(path, path)
        found.append(Trouble(
            key="path_down",
            title=f"Heartbeats down on the {name}",
            detected=f"{getattr(pair, side).name} hears no heartbeats on the {name}"
            + (f" for {_duration(since, now)}" if since else "")
            + "; the other path still carries them, so there is no failover.",
            since=since,
            guide=f"Check the {name} between {p.name} and {s.name} (cable, switch port, addresses). While only one "
            "path carries heartbeats, losing it too would look like a failure of the other node.",
            action="Refresh Status",
            action_url=reverse("ha_refresh", args=[p.name]),
            does="Asks both nodes now; the path shows Up again as soon as heartbeats come back on it.",
        ))  # fmt: skip
    limit = protocol.DEFAULT_FRESHNESS_SECONDS
    apart = (
        abs(p.clock_offset_ms - s.clock_offset_ms) / 1000
        if p.clock_offset_ms is not None and s.clock_offset_ms is not None
        else 0
    )
    between = (
        f" {p.name} and {s.name} are {apart:.0f} s apart: each refuses the other's signed requests "
        "(replication, commands) until their clocks agree."
        if apart > limit
        else ""
    )
    for node in (p, s):
        if not node.clock_skewed:
            continue
        found.append(Trouble(
            key="clock_skew",
            title=f"{node.name}'s clock is off",
            detected=f"{node.name}'s clock is {node.clock_offset_text} (more than "
            f"{settings.CLOCK_SKEW_WARN_SECONDS} s counts as off). The drill scorecards correct for it; at "
            f"{limit} s the appliance refuses the portal's signed requests and stops answering it." + between,
            since=None,
            guide=f"Set {node.name} and the portal to the same NTP servers (set-up's NTP step). Its time zone "
            "does not matter: the clocks are compared in UTC.",
            action="Refresh Status",
            action_url=reverse("ha_refresh", args=[p.name]),
            does="Asks both nodes now and measures their clocks again: the condition clears once the clock is "
            f"within {settings.CLOCK_SKEW_WARN_SECONDS} s.",
        ))  # fmt: skip
    return found
