"""The fleet poller: every agent asked at once, the answers written in one transaction.

The backstop to the agents' event pushes: reachability, states, heartbeats, replication,
sync %, mean heartbeat time, generations, and any events the portal missed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from hapairs import agent_client, agent_replies
from hapairs.crypto import SecretUnreadable
from hapairs.models import Appliance
from hapairs.services.status import PollResult, status_record
from nodeagent import protocol

log = logging.getLogger(__name__)
EVENTS_PAGE = 200


async def _poll_one(client: agent_client.AgentClient, appliance_id: int, target, since: int) -> PollResult:
    source = f"{target.name} ({target.host})"
    try:
        # one request: the state and the events after the last one stored
        raw, seen = await client.request_seen(
            target, "GET", f"{protocol.PATH_HA_INFO}?brief=1&events_since={since}&events_limit={EVENTS_PAGE}"
        )
        info = agent_replies.parse_ha_info(raw, source=source)
        last_seq = raw.get("last_seq")
        if not isinstance(last_seq, int) or isinstance(last_seq, bool) or last_seq < 0:
            last_seq = None
        if "events" in raw:
            events = agent_replies.parse_events(raw["events"], source=source)
        elif last_seq is None or last_seq > since:  # an agent that does not inline them
            page = await client.request(target, "GET", f"{protocol.PATH_EVENTS}?since={since}&limit={EVENTS_PAGE}")
            events = agent_replies.parse_events(page.get("events", []), source=source)
        else:
            events = []
    except agent_client.AgentCertificateChanged as exc:  # refused, not an outage: recorded as such
        return PollResult(appliance_id=appliance_id, ha_info=None, error=exc.message, presented=exc.got)
    except agent_client.AgentError as exc:
        return PollResult(appliance_id=appliance_id, ha_info=None, error=exc.message)
    return PollResult(appliance_id=appliance_id, ha_info=info, events=events, last_seq=last_seq, seen=seen)


async def poll_async(
    targets: list[tuple[int, agent_client.AgentTarget, int]], *, concurrency: int = 200, timeout: float | None = None
) -> list[PollResult]:
    semaphore = asyncio.Semaphore(concurrency)
    async with agent_client.AgentClient(timeout=timeout, limit=concurrency) as client:

        async def bounded(appliance_id, target, since):
            async with semaphore:
                return await _poll_one(client, appliance_id, target, since)

        return await asyncio.gather(*(bounded(*t) for t in targets))


def poll(appliance_ids: list[int] | None = None, *, concurrency: int = 200) -> dict[str, float | int]:
    """Poll the given appliances (default: all) and record the results. Returns figures."""
    started = time.perf_counter()
    queryset = Appliance.objects.only("pk", "name", "hm_ip", "password_ciphertext", "last_event_seq", "tls_fingerprint")
    if appliance_ids is not None:
        queryset = queryset.filter(pk__in=appliance_ids)
    targets, unreadable = [], []
    for appliance in queryset:
        try:
            targets.append((appliance.pk, agent_client.target_for(appliance), appliance.last_event_seq))
        except SecretUnreadable:
            unreadable.append(PollResult(appliance_id=appliance.pk, ha_info=None, error="password unreadable"))
    fetched = time.perf_counter()
    results = asyncio.run(poll_async(targets, concurrency=concurrency)) if targets else []
    polled = time.perf_counter()
    status_record([*results, *unreadable])
    done = time.perf_counter()
    return {
        "appliances": len(targets) + len(unreadable),
        "unreachable": sum(1 for r in results if r.ha_info is None) + len(unreadable),
        "seconds_total": round(done - started, 3),
        "seconds_network": round(polled - fetched, 3),
        "seconds_database": round(done - polled + fetched - started, 3),
    }
