"""The node runtime: one Health Monitor (HA pairs, heartbeats, replication, VIPs, events).

Pure decisions are in :mod:`nodeagent.hastate`; the node does the I/O around them: after
every change it persists the pair state, records events, and reconciles the VIP listeners
with ``in_charge`` (level-triggered). Procedures (failover, failback, sync) run as one
asyncio task per pair at a time.

:class:`Node` holds the lifecycle (load, start, close), persistence, events, the main loop
and what this node must serve now. Its parts, each a small object with a reference back to
the node:

* ``node.heartbeats`` (:mod:`nodeagent.heartbeat`): the heartbeats, the peer message.
* ``node.procedures`` (:mod:`nodeagent.procedures`): failover, failback, resync and sync;
  the peer command / snapshot / replicate endpoints; replicated writes.
* ``node.vips`` (:class:`nodeagent.vip.VipReconciler`): takes and releases the VIPs.
* ``node.operator`` (:mod:`nodeagent.operator_api`): the operator's commands (pairing,
  switchover and failback, services, licenses, trap destinations).
* ``node.traps`` (:mod:`nodeagent.traps`): the trap destinations and the event push.
* ``node.info`` (:mod:`nodeagent.info`): ha-info, server-info, events.

One pair is a :class:`~nodeagent.pair.PairRuntime`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from . import tlsid
from .client import PEER_KEEPALIVE
from .clock import now_iso, wait_event
from .config import NodeConfig
from .errors import ApiError
from .hastate import Note, PairConfig, PairHA
from .heartbeat import Heartbeats
from .info import NodeInfo
from .operator_api import OperatorApi
from .pair import PairRuntime
from .procedures import SYNC_CHUNK, Procedures
from .protocol import (
    REMOVED_MARK,
    Cause,
    Event,
    EventCode,
    HAState,
    Phase,
    ReplicationStatus,
    Role,
    Why,
    event_upgraded,
    explain,
)
from .replication import InstanceStore
from .scheduler import Job, Scheduler
from .signing import ReplayCache
from .store import ASSIGNMENTS_FILE, LICENSES_FILE, LICENSES_FILE_V1, AppendLog, StateDir, read_jsonl
from .traps import TrapPusher
from .vip import VipDriver, VipReconciler
from .witness import WitnessGuard

# importable from here as before: the server's error, the time helpers, a pair, the copy's chunk size
__all__ = ["ApiError", "Node", "PairRuntime", "SYNC_CHUNK", "now_iso", "pid_alive", "wait_event"]

log = logging.getLogger("nodeagent.node")
EVENTS_KEPT = 5000  # events kept in memory (all of them are in events.jsonl)
EVENTS_TRIM = 500  # dropped at a time once over EVENTS_KEPT


EVENT_FIELDS = (
    "seq", "code", "description", "generated_by", "timestamp", "remarks", "generation", "peer", "cause", "why",
)  # fmt: skip


class EventList:
    """A node's last events, each kept as a tuple of its fields (~130 bytes), not a dict
    (~360): an agent farm keeps thousands of nodes' events. A list trimmed now and then, not
    a deque (760 bytes each even when empty). Read as events (dicts), made when read: by the
    events API and the trap pushes, not on the heartbeat path."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: list[tuple] = []

    def append(self, ev: Event) -> None:
        self._rows.append(tuple(ev.get(name) for name in EVENT_FIELDS))

    def drop_oldest(self, count: int) -> None:
        del self._rows[:count]

    def __len__(self) -> int:
        return len(self._rows)

    def __bool__(self) -> bool:
        return bool(self._rows)

    def __iter__(self) -> Iterator[Event]:
        for row in self._rows:
            yield dict(zip(EVENT_FIELDS, row, strict=True))  # type: ignore[misc]

    def __getitem__(self, index: int) -> Event:
        return dict(zip(EVENT_FIELDS, self._rows[index], strict=True))  # type: ignore[return-value]

    def since(self, seq: int, limit: int) -> list[Event]:
        """Up to ``limit`` events after ``seq``, oldest first (only those are made)."""
        rows = self._rows
        lo, hi = 0, len(rows)  # seq strictly increasing: bisect on it
        while lo < hi:
            mid = (lo + hi) // 2
            if rows[mid][0] <= seq:
                lo = mid + 1
            else:
                hi = mid
        return [dict(zip(EVENT_FIELDS, row, strict=True)) for row in rows[lo : lo + limit]]  # type: ignore[misc]


class Node:
    # slots, not a dict per node: an agent farm holds thousands
    __slots__ = (
        "_awake",
        "_awake_mono",
        "_event_log",
        "_own_session",
        "_poked",
        "_reconcile_again",
        "_reconciling",
        "_stall_cap",
        "_step_job",
        "_tasks",
        "admin_stopped",
        "allow_non_loopback",
        "allow_short_wait",
        "cfg",
        "closed",
        "counters",
        "events",
        "heartbeats",
        "idempotency",
        "identity",
        "info",
        "licenses",
        "assignments",
        "operator",
        "own_instance",
        "pairs",
        "procedures",
        "replay_cache",
        "restarts",
        "scheduler",
        "sd",
        "seq",
        "session",
        "started_at",
        "stopping",
        "traps",
        "unpaired_running",
        "removed_peers",
        "vip_driver",
        "vips",
        "witnesses",
    )

    def __init__(
        self,
        cfg: NodeConfig,
        state_dir: str | Path,
        *,
        session: aiohttp.ClientSession | None = None,
        allow_short_wait: bool = False,
        allow_non_loopback: bool = False,
    ) -> None:
        self.cfg = cfg
        self.sd = StateDir(state_dir).ensure()
        self.session = session
        self._own_session = session is None
        self.allow_short_wait = allow_short_wait
        # peers and trap destinations on a real network have real addresses
        self.allow_non_loopback = allow_non_loopback or cfg.real_network
        self.pairs: dict[str, PairRuntime] = {}
        self.own_instance = (
            InstanceStore("msedb", 1521, self.sd.instance_log("msedb")) if cfg.role is Role.PRIMARY else None
        )
        self.admin_stopped = False
        self.unpaired_running = True
        # peers whose pairing this node dropped (HM IP → when): one still paired with it is
        # told so (410) when it next asks, and stands down (stand_down_removed). None until
        # the first (an agent farm keeps thousands of nodes: no empty dict each)
        self.removed_peers: dict[str, str] | None = None
        # the last EVENTS_KEPT events (the API's, the trap pushes'): see EventList
        self.events = EventList()
        self.seq = 0
        self._event_log = AppendLog(self.sd.path("events.jsonl"))
        self.started_at = time.time()
        self.restarts = 0
        self.licenses: list[dict] = []
        self.assignments: list[dict] = []  # synchronized service assignments (operator_api)
        self.vip_driver: VipDriver | None = None  # set by the server
        self.identity: tlsid.Identity | None = None  # its TLS key and certificate (set by the server)
        self.replay_cache: ReplayCache | None = None  # signed requests' nonces (set by the server)
        self.idempotency: Any = None  # answers by Idempotency-Key (server.IdempotencyStore, set by the server)
        self._tasks: list[asyncio.Task] = []
        # the process's scheduler runs this node's step (Scheduler.every), no task of its own
        self.scheduler: Scheduler | None = None
        self._step_job: Job | None = None
        self._poked = False  # a step is queued to run at once (wake)
        self._reconciling: asyncio.Task | None = None
        self._reconcile_again = False
        # the awake clock (awake_now): monotonic time, but a stall counts STALL_CAP at most
        self._awake = 0.0
        self._awake_mono = time.monotonic()
        self._stall_cap = 1.0
        self.stopping = False
        self.closed = False
        self.counters = collections.Counter(heartbeats_sent=0, heartbeats_received=0, writes=0)
        # the parts
        self.heartbeats = Heartbeats(self)
        self.witnesses = WitnessGuard(self)
        self.procedures = Procedures(self)
        self.vips = VipReconciler(self)
        self.operator = OperatorApi(self)
        self.traps = TrapPusher(self)
        self.info = NodeInfo(self)

    # ================================================================= lifecycle
    def load(self, declared_pairs: list[tuple[dict, PairConfig]] | None = None) -> None:
        """Load persisted state; on a first start create the pairs the fleet declares."""
        now = time.time()
        self.sd.save_if_changed("config.json", self.cfg.to_dict())
        for raw in read_jsonl(self.sd.path("events.jsonl")):
            self.seq = max(self.seq, int(raw.get("seq", 0)))
            ev = event_upgraded(raw)  # written by an older agent: in this protocol's shape
            if ev is not None:
                self._keep_event(ev)
        self.licenses = self.sd.load(LICENSES_FILE, None) or self.sd.load(LICENSES_FILE_V1, []) or []
        saved = self.sd.load(ASSIGNMENTS_FILE)
        if isinstance(saved, list):
            self.assignments = saved
        else:  # none saved yet: what the configuration says a manager synchronized before
            self.assignments = [
                {"service": service.strip(), "element": element.strip()}
                for service, _, element in (a.partition(":") for a in self.cfg.service_assignments)
            ]
        self.traps.load()
        saved = self.sd.load("ha.json")
        if saved is None:
            for peer, pc in declared_pairs or []:
                slot = self.free_slot()
                ha, notes = PairHA.create(self.cfg.role, pc, now)
                pr = PairRuntime(self, peer, slot, ha)
                self.pairs[peer["hm_ip"]] = pr
                self.record(notes, pr)
                self.procedures.announce_initial_sync(pr)
            self.save_ha()
            return
        self.restarts = int(saved.get("restarts", 0)) + 1
        self.admin_stopped = bool(saved.get("admin_stopped", False))
        self.unpaired_running = bool(saved.get("unpaired_running", True))
        removed = saved.get("removed_peers")
        self.removed_peers = (
            {str(k): str(v) for k, v in removed.items()} if isinstance(removed, dict) and removed else None
        )
        for d in saved.get("pairs", []):
            ha = PairHA.from_dict(d["ha"])
            ha.restarted(now)
            pr = PairRuntime(self, d["peer"], d["slot"], ha)
            pr.sync_done_once = d.get("sync_done_once", False)
            pr.replication = ReplicationStatus.DOWN
            self.pairs[pr.peer_hm_ip] = pr
        if saved.get("signal_stop") and not self.admin_stopped:
            for pr in self.pairs.values():
                self.record(pr.ha.start_services(now), pr)
            self.unpaired_running = True
        self.save_ha()

    def free_slot(self) -> int:
        """The next free instance slot (3, 4, ...: names the secondary's database instances)."""
        used = {p.slot for p in self.pairs.values()}
        slot = 3
        while slot in used:
            slot += 1
        return slot

    async def start(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=8, keepalive_timeout=PEER_KEEPALIVE)
            )
        if self.vip_driver is not None:
            await self.vip_driver.cleanup(
                [p.vip for p in self.pairs.values() if p.vip] + ([self.cfg.vip] if self.cfg.vip else [])
            )
        self.scheduler = Scheduler.current()
        self._step_job = self.scheduler.every(self.tick_period, self._tick, name=f"{self.cfg.name}-step")
        self._awake_mono = time.monotonic()
        for pr in self.pairs.values():
            self.heartbeats.start(pr)
            self.witnesses.start(pr)
        self.traps.kick()
        await self.vips.reconcile()

    async def close(self, *, graceful: bool = False) -> None:
        """Stop the node. ``graceful`` (SIGTERM): tell the peers first, like a stop by hand."""
        if self.closed:
            return
        self.stopping = True
        if graceful:
            now = time.time()
            for pr in self.pairs.values():
                if pr.ha.running:
                    self.record(pr.ha.stop_services(now), pr)
            await self.vips.reconcile()
            await asyncio.gather(
                *(self.heartbeats.tell_stopping(pr) for pr in self.pairs.values()), return_exceptions=True
            )
            self.save_ha(signal_stop=True)
        if self._step_job is not None:
            self._step_job.cancel()
        for pr in self.pairs.values():
            self.heartbeats.stop(pr)
        self.heartbeats.close()
        tasks = [*self._tasks, self._reconciling, self.traps.task]
        tasks += [t for pr in self.pairs.values() for t in (pr.proc, pr.witness_task, pr.hello_task)]
        live = [t for t in tasks if t is not None]
        for t in live:
            t.cancel()
        await asyncio.gather(*live, return_exceptions=True)
        if self.vip_driver is not None:
            await self.vip_driver.release_all()
        if not graceful:
            self.save_ha()
        for pr in self.pairs.values():
            if pr.instance is not self.own_instance:
                pr.instance.close()
        if self.own_instance:
            self.own_instance.close()
        self._event_log.close()
        if self._own_session and self.session is not None:
            await self.session.close()
        self.closed = True

    # ================================================================= persistence and events
    def save_ha(self, *, signal_stop: bool = False) -> None:
        self.sd.save(
            "ha.json",
            {
                "node": self.cfg.name,
                "role": self.cfg.role.value,
                "pairs": [p.to_dict() for p in self.pairs.values()],
                "admin_stopped": self.admin_stopped,
                "unpaired_running": self.unpaired_running,
                "removed_peers": self.removed_peers or {},
                "restarts": self.restarts,
                "signal_stop": signal_stop,
                "saved_at": now_iso(),
            },
        )
        for p in self.pairs.values():
            p.saved_sig = p.sig()

    def maybe_save(self) -> bool:
        if any(p.saved_sig != p.sig() for p in self.pairs.values()):
            self.save_ha()
            return True
        return False

    def emit(
        self,
        code: EventCode,
        remarks: str = "",
        pr: PairRuntime | None = None,
        *,
        cause: Cause | None = None,
        why: Why | None = None,
    ) -> Event:
        """Record one event. Its cause: the command being handled (``cause``), else the one
        driving the pair's procedure (``pr.cause``); none when the agents decided alone, when
        ``why`` says which rule fired and on what."""
        self.seq += 1
        gen = pr.ha.generation if pr else max((p.ha.generation for p in self.pairs.values()), default=0)
        ev: Event = {
            "seq": self.seq,
            "code": code.value,
            "description": code.text,
            "generated_by": self.cfg.role.title,
            "timestamp": now_iso(),
            "remarks": remarks,
            "generation": gen,
            "peer": pr.peer_hm_ip if pr else None,
            "cause": cause or (pr.cause if pr else None),
            "why": why,
        }
        self._event_log.append(ev)
        self._keep_event(ev)
        self.traps.kick()
        return ev

    def _keep_event(self, ev: Event) -> None:
        events = self.events
        events.append(ev)
        if len(events) > EVENTS_KEPT + EVENTS_TRIM:  # the oldest go, a batch at a time
            events.drop_oldest(len(events) - EVENTS_KEPT)

    def record(self, notes: list[Note], pr: PairRuntime | None = None, *, cause: Cause | None = None) -> None:
        for n in notes:
            self.emit(n.code, n.remarks, pr, cause=cause, why=n.why)

    def changed(self) -> None:
        """Something may have changed: persist it and, if it did, let the loop reconcile at once
        (a heartbeat that changes nothing does not wake the loop)."""
        if self.maybe_save():
            self.wake()

    def wake(self) -> None:
        """Run the next step at once (soon: once per burst of changes)."""
        if self._poked or self.scheduler is None or self.stopping:
            return
        self._poked = True
        self.scheduler.loop.call_soon(self._tick)

    def awake_now(self) -> float:
        """The awake clock: monotonic seconds while this node runs, where a stall (the process
        starved or frozen) counts STALL_CAP at most: silences are measured on it, so a node
        never declares its peer gone for a silence it did not listen through."""
        return self._awake + min(time.monotonic() - self._awake_mono, self._stall_cap)

    # ================================================================= derived status
    @property
    def services_running(self) -> bool:
        if self.pairs:
            return any(p.ha.running for p in self.pairs.values())
        return self.unpaired_running

    def desired_vips(self) -> dict[str, tuple[str | None, PairRuntime | None]]:
        """VIP -> (netmask, pair) this node must serve now."""
        out: dict[str, tuple[str | None, PairRuntime | None]] = {}
        if self.stopping:
            return out
        if self.cfg.role is Role.PRIMARY and not self.pairs:
            if self.unpaired_running and self.cfg.vip and not self.cfg.recovery:
                out[self.cfg.vip] = (self.cfg.netmask, None)
            return out
        for pr in self.pairs.values():
            if pr.ha.in_charge and pr.ha.running and pr.vip and not pr.fenced():
                out[pr.vip] = (pr.netmask, pr)
        return out

    def may_announce(self, vip: str) -> bool:
        """Re-announce ``vip`` only while this node surely still owns it: it wants it, and (for
        a pair) it heard its peer within the heartbeat window or holds a witness lease — never
        just after waking from a freeze, before it learnt whether the other node took over."""
        want = self.desired_vips()
        if vip not in want:
            return False
        pr = want[vip][1]
        if pr is None:
            return True
        ha = pr.ha
        heard = ha.last_heard is not None and time.time() - ha.last_heard <= ha.config.heartbeat_down_after
        return heard or (bool(ha.config.witnesses) and time.monotonic() < pr.lease_until)

    def vip_lifetime(self, vip: str) -> int:
        """Seconds the kernel keeps a VIP address this agent stops renewing (iproute driver): a
        third of the pair's wait, so a dead or frozen agent's host drops the address well before
        the secondary takes over (as the witness lease does); 10 s for an unpaired primary."""
        pr = self.vips.pair_by_vip(vip)
        return max(1, int(pr.ha.config.failover_wait // 3)) if pr else 10

    def changed_fencing(self, pr: PairRuntime) -> None:
        """A primary fenced or unfenced itself: say so, and let the loop move the VIP at once."""
        fenced = pr.fenced()
        if not pr.ha.in_charge:  # stepped down: nothing to fence, nothing "served again"
            pr.fenced_shown = False
            return
        if fenced == pr.fenced_shown:
            return
        pr.fenced_shown = fenced
        if fenced:
            answers = "; ".join(answer for _, answer in pr.witness_view) or "no answer yet"
            granted, cfg = sum(ok for ok, _ in pr.witness_view), pr.ha.config
            reason = explain(
                "fence.no_lease",
                f"Fenced: no heartbeat from the secondary for {cfg.heartbeat_down_after:g} s and a lease from "
                f"{granted} of {len(cfg.witnesses)} witnesses (a majority is {cfg.majority}): the VIP is released.",
                heartbeat_down_after_s=cfg.heartbeat_down_after,
                witnesses=len(cfg.witnesses),
                granted=granted,
                majority=cfg.majority,
            )
            self.emit(EventCode.FENCED, f"No heartbeats from the secondary and no lease from a majority of "
                      f"witnesses ({answers}).", pr, why=reason)  # fmt: skip
        else:
            self.emit(EventCode.UNFENCED, "", pr)
        self.wake()

    def binding_for(self, vip: str) -> tuple[bool, PairRuntime | None, InstanceStore | None, str]:
        """Who serves requests arriving at ``vip``: (in charge now, pair, instance, password)."""
        want = self.desired_vips()
        if vip not in want:
            return False, None, None, ""
        pr = want[vip][1]
        if pr is None:
            return True, None, self.own_instance, self.cfg.password
        return True, pr, pr.instance, pr.service_password

    def pair_from(self, body: dict) -> PairRuntime:
        """The pair a peer message comes from (its ``from`` HM IP)."""
        sender = str(body.get("from", ""))
        pr = self.pairs.get(sender)
        if pr is None:
            if self.removed_peers and sender in self.removed_peers:  # signed with our password: a real peer
                raise ApiError(
                    410,
                    f"{REMOVED_MARK}: {self.cfg.name} removed its pairing with {sender} at "
                    f"{self.removed_peers[sender]} (by the manager); drop yours",
                )
            raise ApiError(404, "not paired with this peer")
        return pr

    def drop_pair(self, pr: PairRuntime) -> None:
        """Forget a pairing here (its heartbeats, its tasks, its instance on a secondary); a
        primary keeps serving its VIP alone. The caller records why and reconciles the VIPs."""
        self.heartbeats.stop(pr)
        for t in (pr.proc, pr.witness_task, pr.hello_task):
            if t and t is not asyncio.current_task():
                t.cancel()
        self.pairs.pop(pr.peer_hm_ip, None)
        if self.cfg.role is Role.PRIMARY:
            self.unpaired_running = pr.ha.running or pr.ha.resume_in_charge
        else:
            pr.instance.close()

    async def stand_down_removed(self, pr: PairRuntime, answer: str) -> None:
        """The peer says it removed our pairing (410, over its pinned certificate, to a
        request signed with its password): drop ours, never taking its VIP. A secondary in
        charge keeps serving (the peer would have refused the removal) and says so."""
        if pr.peer_hm_ip not in self.pairs:
            return
        if self.cfg.role is Role.SECONDARY and pr.ha.in_charge:
            if pr.refusal_shown != REMOVED_MARK:
                pr.refusal_shown = REMOVED_MARK
                self.emit(EventCode.TAKEOVER_REFUSED, f"{answer}; this secondary is in charge and keeps serving.", pr)
            return
        name = pr.peer.get("name", pr.peer_hm_ip)
        self.drop_pair(pr)
        self.emit(
            EventCode.PAIRING_REMOVED_BY_PEER,
            f"{name} ({pr.peer_hm_ip}) no longer knows this pairing: dropped here, the VIP left alone.",
            why=explain(
                "pairing.removed_by_peer",
                f"Stood down: {name} answered that it removed the pairing; this node was not in charge.",
                peer=pr.peer_hm_ip,
                answer=answer[:200],
            ),  # fmt: skip
        )
        self.save_ha()
        await self.vips.reconcile()

    # ================================================================= main loop
    def tick_period(self) -> float:
        if not self.pairs:
            return 1.0
        # half a heartbeat interval: a secondary's takeover happens at most wait/20 late (ratio
        # <= 1.05), and a primary whose secondary died stops holding writes for it as soon
        # (a primary stepping once an interval was measured: writes held up to 0.5 s longer)
        return max(0.05, min(0.5, self._stall_cap / 2))

    def _tick(self) -> None:
        """A step (the scheduler's job, or queued by wake): decisions inline; the VIPs, which
        wait on I/O, in a task of their own and only when they must change."""
        self._poked = False
        if self.stopping:
            return
        try:
            self.step_sync()
        except Exception:  # keep the Health Monitor alive; the error is logged
            log.exception("%s: step failed", self.cfg.name)
        if self.vips.needed():
            self._reconcile_soon()

    def _reconcile_soon(self) -> None:
        if self._reconciling is not None and not self._reconciling.done():
            self._reconcile_again = True
            return
        self._reconciling = asyncio.get_running_loop().create_task(self._reconcile_passes())

    async def _reconcile_passes(self) -> None:
        while not self.stopping:
            self._reconcile_again = False
            try:
                await self.vips.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: VIP reconcile failed", self.cfg.name)
                return
            if not (self._reconcile_again and self.vips.needed()):
                return

    def step_sync(self) -> None:
        now, mono = time.time(), time.monotonic()
        awake = self.awake_now()
        self._awake, self._awake_mono = awake, mono
        # the shortest heartbeat interval: the longest gap between steps that counts in full
        interval = float("inf")
        for pr in list(self.pairs.values()):
            interval = min(interval, pr.ha.config.heartbeat_interval)
            pr.ha.quiet = max(0.0, awake - pr.beat_awake)
            was_up = pr.ha.heartbeat_up
            self.record(pr.ha.tick(now, pr.path_names), pr)
            if was_up and not pr.ha.heartbeat_up:
                pr.witness_wake.set()  # the primary is alone now: its lease must say so at once
            if (
                pr.ha.running
                and not pr.ha.heartbeat_up
                and pr.replication is not ReplicationStatus.DOWN
                and pr.sync_done_once
                and pr.ha.role is Role.PRIMARY
            ):
                pr.replication = ReplicationStatus.DOWN
                if pr.ha.in_charge:
                    self.emit(EventCode.REPLICATION_DOWN, "", pr)
            self.heartbeats.watch_paths(pr, now)
            self.heartbeats.maybe_hello(pr, mono)
            self.changed_fencing(pr)
            self.schedule(pr)
            pr.settle_cause(now)
        # for the next awake_now and tick_period (pairs come and go)
        self._stall_cap = interval if interval != float("inf") else 1.0
        self.maybe_save()

    def schedule(self, pr: PairRuntime) -> None:
        """Start the procedure the pair's state calls for, unless one is running."""
        if pr.proc is not None and not pr.proc.done():
            return
        ha = pr.ha
        procs = self.procedures
        coro = None
        if ha.role is Role.SECONDARY and ha.state is HAState.FAILOVER_INVOKED:
            coro = procs.failover(pr)
        elif ha.role is Role.SECONDARY and ha.state is HAState.FAILBACK_ACTIVE:
            coro = procs.failback(pr)
        elif ha.role is Role.PRIMARY and ha.phase is Phase.FAILOVER:
            coro = procs.failover_shutdown(pr)
        elif ha.role is Role.PRIMARY and ha.phase is Phase.RESYNC and ha.heartbeat_up:
            coro = procs.resync(pr)
        elif (
            ha.role is Role.PRIMARY
            and ha.in_charge
            and ha.phase is None
            and ha.heartbeat_up
            and ha.running
            and pr.peer_view is not None
            and pr.peer_view.running
            # not synchronised yet, or behind: this primary acknowledged writes without it
            and (not pr.peer_view.synced or (pr.sync_done_once and pr.replication is ReplicationStatus.DOWN))
            and pr.peer_view.owner is Role.PRIMARY
            and pr.peer_view.phase is None
        ):
            coro = procs.sync(pr)
        if coro is not None:
            pr.proc = asyncio.create_task(coro, name=f"{self.cfg.name}-proc-{pr.peer_hm_ip}")


def pid_alive(pid: int) -> bool:  # pragma: no cover - helper for the CLI
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
