"""The fleet poller: a shard's agents (or a few, or all) asked at once, the answers written
in one transaction.

The backstop to the agents' event pushes: reachability, states, heartbeats, replication,
sync %, mean heartbeat time, generations, and any events the portal missed. Beat's
``fleet_poll`` sends one ``poll_shard`` per shard (``hapairs.sharding``) and any worker
takes it; ``poll`` serves the refreshes after a push and the job steps.

Each process keeps one event loop, in a thread of its own, and one pool of agent
connections across rounds: the agents keep their TLS connections open, so a round reuses
them instead of redoing a handshake per agent (measured on 1,000 loopback agents: 3.3–4.1 s
a round with new connections, 0.5–0.8 s reusing them). It is made on first use in the
process that polls (so in each child of Celery's prefork pool, after the fork) and closed
by ``close`` (worker shutdown, or interpreter exit).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import resource
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
from django.db.models import QuerySet

from hapairs import agent_client, agent_replies, crypto, sharding
from hapairs.crypto import SecretUnreadable
from hapairs.models import Appliance
from hapairs.services._common import deadlock_retried
from hapairs.services.status import PollResult, status_record
from nodeagent import protocol, tlsid

log = logging.getLogger(__name__)
EVENTS_PAGE = 200
# How long an idle connection to an agent is kept. A shard goes to whichever worker is free,
# so a worker polls a given shard every interval × workers seconds on average (40 s with 4
# workers): 300 s keeps a worker's connection to it open through 30 rounds, so that a new
# TLS handshake is rare ((3/4)^30 of the polls, with 4 workers); the agents keep idle
# connections for up to an hour (aiohttp's server default, 3,630 s).
KEEPALIVE_SECONDS = 300.0
T = TypeVar("T")


class _Connections:
    """One event loop running in a daemon thread, and the agent connection pool it owns."""

    def __init__(self) -> None:
        # one open connection (a file descriptor) per agent polled lately: the soft limit
        # (often 1,024) would refuse connections long before a big fleet's count
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            with contextlib.suppress(ValueError, OSError):  # where the hard limit cannot be the soft one
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        tlsid.lean_tls_buffers()  # 32 KiB, not 256 KiB, per open TLS connection (thousands of them)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="agent-connections", daemon=True)
        self.thread.start()
        self.connector: aiohttp.TCPConnector = self.run(self._open())

    @staticmethod
    async def _open() -> aiohttp.TCPConnector:  # made inside the loop that will use it
        return aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS)

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except BaseException:  # the caller gave up (a time limit, a signal): so does the round
            future.cancel()
            raise

    def close(self) -> None:
        try:
            self.run(self.connector.close(), timeout=10)
        except Exception as exc:  # noqa: BLE001 - stopping anyway: the sockets go with the process
            log.warning("closing the agent connections: %s", exc)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
            if not self.thread.is_alive():
                self.loop.close()


_connections: _Connections | None = None
_connections_guard = threading.Lock()


def _shared() -> _Connections:
    global _connections
    with _connections_guard:
        if _connections is None:
            _connections = _Connections()
        return _connections


def close() -> None:
    """Close this process's agent connections and stop its loop (the next poll opens anew)."""
    global _connections
    with _connections_guard:
        connections, _connections = _connections, None
    if connections is not None:
        connections.close()


def _forget_after_fork() -> None:
    """A forked child has the parent's object but not its thread: it starts its own when it polls.
    (The parent's sockets it inherited are left alone: closing them would end the parent's TLS.)"""
    global _connections, _connections_guard
    _connections, _connections_guard = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(close)


async def _poll_one(client: agent_client.AgentClient, appliance_id: int, target, since: int) -> PollResult:
    source = f"{target.name} ({target.host})"
    try:
        # one request: the state and the events after the last one stored
        answer = await client.request_answer(
            target, "GET", f"{protocol.PATH_HA_INFO}?brief=1&events_since={since}&events_limit={EVENTS_PAGE}"
        )
        raw, seen = answer.data, answer.seen
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
    except agent_client.AgentError as exc:  # a refusal still says the agent's time (a clock too far off)
        return PollResult(appliance_id=appliance_id, ha_info=None, error=exc.message, clock_offset=exc.clock_offset)
    return PollResult(
        appliance_id=appliance_id,
        ha_info=info,
        events=events,
        last_seq=last_seq,
        seen=seen,
        clock_offset=answer.clock_offset,
    )


async def poll_async(
    targets: list[tuple[int, agent_client.AgentTarget, int]],
    *,
    concurrency: int = 200,
    timeout: float | None = None,
    connector: aiohttp.BaseConnector | None = None,
) -> list[PollResult]:
    semaphore = asyncio.Semaphore(concurrency)
    async with agent_client.AgentClient(timeout=timeout, limit=concurrency, connector=connector) as client:

        async def bounded(appliance_id, target, since):
            async with semaphore:
                return await _poll_one(client, appliance_id, target, since)

        return await asyncio.gather(*(bounded(*t) for t in targets))


def _poll(queryset: QuerySet[Appliance], *, concurrency: int) -> dict[str, Any]:
    started = time.perf_counter()
    rows = queryset.values_list(  # rows, not models: a shard is hundreds of appliances a round
        "pk", "name", "hm_ip", "password_ciphertext", "last_event_seq", "tls_fingerprint", named=True
    )
    targets, unreadable = [], []
    for row in rows:
        try:
            target = agent_client.target_for(row, password=crypto.decrypt(row.password_ciphertext))
        except SecretUnreadable:
            unreadable.append(PollResult(appliance_id=row.pk, ha_info=None, error="password unreadable"))
        else:
            targets.append((row.pk, target, row.last_event_seq))
    fetched = time.perf_counter()
    results: list[PollResult] = []
    if targets:
        connections = _shared()
        results = connections.run(poll_async(targets, concurrency=concurrency, connector=connections.connector))
    polled = time.perf_counter()
    deadlock_retried(lambda: status_record([*results, *unreadable]), what="a poll round's write")
    done = time.perf_counter()
    return {
        "appliances": len(targets) + len(unreadable),
        "unreachable": sum(1 for r in results if r.ha_info is None) + len(unreadable),
        "seconds_total": round(done - started, 3),
        "seconds_network": round(polled - fetched, 3),
        "seconds_database": round(done - polled + fetched - started, 3),
    }


def poll(appliance_ids: list[int] | None = None, *, concurrency: int = 200) -> dict[str, Any]:
    """Poll the given appliances (default: all) and record the results. Returns figures."""
    queryset = Appliance.objects.all()
    if appliance_ids is not None:
        queryset = queryset.filter(pk__in=appliance_ids)
    return _poll(queryset, concurrency=concurrency)


def poll_shard(
    shard: int, shards: int, *, fired_at: float | None = None, worker: str = "", concurrency: int = 200
) -> dict[str, Any]:
    """One round of shard ``shard`` of ``shards``, unless another worker is still polling it
    (then skipped: rounds of a shard never overlap). Its figures are kept (``sharding.rounds``)."""
    started = time.time()
    with sharding.lock(shard) as held:
        if not held:
            log.warning("poll shard %s/%s: skipped, its previous round is still running", shard, shards)
            return {"shard": shard, "shards": shards, "skipped": True}
        last = sharding.round_of(shard) if fired_at is not None else None
        if last and last.get("shards") == shards and last.get("started_at", 0) >= fired_at:
            # behind schedule, a worker took an older round's message first: that poll was this one
            log.warning("poll shard %s/%s: skipped, polled since this round was fired", shard, shards)
            return {"shard": shard, "shards": shards, "skipped": True}
        figures = _poll(sharding.appliances_of(shard, shards), concurrency=concurrency)
        figures.update(
            shard=shard,
            shards=shards,
            worker=worker or f"pid {os.getpid()}",
            started_at=started,
            finished_at=time.time(),
            fired_at=fired_at,
            queued_seconds=round(started - fired_at, 3) if fired_at is not None else None,
        )
        sharding.round_record(shard, figures)
    log.info(
        "poll shard %s/%s: %s appliances, %s unreachable, network %.3f s, database %.3f s",
        shard,
        shards,
        figures["appliances"],
        figures["unreachable"],
        figures["seconds_network"],
        figures["seconds_database"],
    )
    return figures
