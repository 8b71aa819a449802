"""The pair's procedures and the data paths between the nodes.

* Procedures, one asyncio task per pair at a time (launched by :meth:`Node.schedule
  <nodeagent.node.Node.schedule>` from the pair's state): failover (secondary takes over),
  failover shutdown (primary stops), failback (secondary copies the data back and hands the
  VIP over), resync (primary checks the secondary after a failback), and the initial
  synchronisation / catch-up of a secondary, all sending bulk copies with
  :meth:`Procedures.send_snapshot`.
* The peer endpoints they talk to: ``peer/command``, ``peer/snapshot``, ``peer/replicate``.
* The write path of the service API: a write on the primary in charge returns once the
  secondary has it (:meth:`Procedures.replicate`, synchronous replication).

The instance data itself is :class:`nodeagent.replication.InstanceStore`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, NoReturn

import aiohttp

from . import hooks
from .client import AgentClient, AgentError
from .errors import ApiError
from .hastate import Refused
from .protocol import (
    PATH_PEER_COMMAND,
    PATH_PEER_REPLICATE,
    PATH_PEER_SNAPSHOT,
    EventCode,
    HAState,
    PeerCommand,
    Phase,
    ReplicationStatus,
    Role,
    SnapshotOp,
    cause_from,
)

if TYPE_CHECKING:  # types only: node.py imports this module
    from .node import Node
    from .pair import PairRuntime

log = logging.getLogger("nodeagent.procedures")

SYNC_CHUNK = 200


class Procedures:
    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    # ================================================================= procedures
    async def failover(self, pr: PairRuntime) -> None:
        """Secondary: tell the primary to shut down (if it can hear us), then take over."""
        node = self.node
        gen = pr.ha.pending_generation or pr.ha.generation + 1
        # the witnesses confirmed the primary gone: tell it if it can hear us, but do not wait long
        confirmed = bool(pr.ha.config.witnesses) and time.time() < pr.ha.takeover_confirmed_until
        msg = node.heartbeats.peer_msg(pr, cmd=PeerCommand.FAILOVER_BEGIN.value, generation=gen)
        if confirmed:
            # the primary's lease ran out before the witnesses confirmed (it fenced itself): it
            # is told without waiting for its answer, the takeover does not wait on a dead peer
            task = asyncio.create_task(self._tell_failover(pr, msg, 0.3))
            node._tasks.append(task)
            task.add_done_callback(node._tasks.remove)
        elif not await self._tell_failover(pr, msg, 1.0):
            if pr.ha.config.witnesses:
                # an operator's switchover to a primary that does not answer: it may only be cut
                # off, still serving; take over only if the witnesses confirm it is gone
                ok, refusal = await node.witnesses.confirm_now(pr)
                if not ok:
                    node.record(pr.ha.failover_abort(time.time(), f"Switchover not carried out: {refusal}"), pr)
                    node.changed()
                    return
        if pr.ha.state is not HAState.FAILOVER_INVOKED:
            return
        if node.cfg.hooks.get("pre_takeover"):
            await hooks.run_hook(node, "pre_takeover", pr)  # at most hook_timeout seconds
            if pr.ha.state is not HAState.FAILOVER_INVOKED:  # aborted meanwhile
                return
        node.record(pr.ha.complete_failover(time.time()), pr)
        pr.replication = ReplicationStatus.DOWN
        node.changed()
        await node.vips.reconcile()
        hooks.start_hook(node, "post_takeover", pr)

    async def _tell_failover(self, pr: PairRuntime, msg: dict, timeout: float) -> bool:
        """The failover's notice to the primary (it shuts down if it hears it); False: no answer."""
        try:
            await pr.client(timeout=timeout).call("POST", PATH_PEER_COMMAND, msg)
        except (TimeoutError, aiohttp.ClientError, OSError, AgentError) as e:
            log.info("%s: primary %s did not answer the failover (%s)", self.node.cfg.name, pr.peer_hm_ip, e)
            return False
        return True

    async def failover_shutdown(self, pr: PairRuntime) -> None:
        """Primary: the switchover stops this primary's services (simulates a failure)."""
        node = self.node
        await node.vips.reconcile()
        node.record(pr.ha.failover_shutdown_done(time.time()), pr)
        node.changed()

    async def failback(self, pr: PairRuntime) -> None:
        """Secondary: copy the data back to the primary, hand the VIP over, resync."""
        node = self.node
        peer_msg = node.heartbeats.peer_msg
        cl = pr.client(timeout=5.0)
        try:
            await cl.call(
                "POST",
                PATH_PEER_COMMAND,
                peer_msg(pr, cmd=PeerCommand.FAILBACK_BEGIN.value, generation=pr.ha.generation),
            )
            await self.send_snapshot(pr, cl, replace=True, records=pr.instance.snapshot())
        except (TimeoutError, aiohttp.ClientError, OSError, AgentError) as e:
            node.record(pr.ha.failback_abort(time.time(), f"Copy to the primary failed: {e}"), pr)
            node.changed()
            return
        node.record(pr.ha.failback_handover(time.time()), pr)
        pr.instance.set_sync_lsn(pr.instance.lsn)
        node.changed()
        await node.vips.reconcile()  # release the VIP before the primary takes it
        for _ in range(20):
            try:
                await cl.call(
                    "POST",
                    PATH_PEER_COMMAND,
                    peer_msg(pr, cmd=PeerCommand.TAKE_CHARGE.value, generation=pr.ha.generation),
                )
                break
            except (TimeoutError, aiohttp.ClientError, OSError, AgentError):
                await asyncio.sleep(0.1)
        node.changed()

    async def resync(self, pr: PairRuntime) -> None:
        """Primary after a failback: check the secondary holds the same data, then both Active."""
        node = self.node
        peer_msg = node.heartbeats.peer_msg
        cl = pr.client(timeout=5.0)
        try:
            info = await cl.call(
                "POST", PATH_PEER_SNAPSHOT, peer_msg(pr, op=SnapshotOp.BEGIN.value, generation=pr.ha.generation)
            )
            missing = pr.instance.since(int(info.get("sync_lsn", 0)))
            if info.get("count") != pr.instance.count or missing:
                await self.send_snapshot(pr, cl, replace=False, records=missing, begun=True)
            await cl.call(
                "POST", PATH_PEER_COMMAND, peer_msg(pr, cmd=PeerCommand.RESYNC_DONE.value, generation=pr.ha.generation)
            )
        except (TimeoutError, aiohttp.ClientError, OSError, AgentError) as e:
            log.info("%s: resync with %s failed: %s", node.cfg.name, pr.peer_hm_ip, e)
            await asyncio.sleep(0.2)
            return
        node.record(pr.ha.resync_done(time.time()), pr)
        pr.replication = ReplicationStatus.UP
        pr.sync_done_once = True
        node.changed()

    def announce_initial_sync(self, pr: PairRuntime) -> None:
        """A new pair: the initial synchronisation is under way from the start (the copy runs
        once heartbeats are up), so each node's log reads in the seed's order: created,
        synchronisation in progress, heartbeats set up, Active."""
        self.node.emit(EventCode.SYNC_IN_PROGRESS, "", pr)

    async def sync(self, pr: PairRuntime) -> None:
        """Primary: initial synchronisation / catch-up of a secondary, with progress."""
        node = self.node
        cl = pr.client(timeout=5.0)
        first = not pr.sync_done_once
        pr.replication = ReplicationStatus.SETTING_UP
        pr.sync_percent = 0
        if not first:  # the first one was announced when the pair was created
            node.emit(EventCode.SYNC_IN_PROGRESS, "Catching up after an interruption.", pr)
        try:
            info = await cl.call(
                "POST",
                PATH_PEER_SNAPSHOT,
                node.heartbeats.peer_msg(pr, op=SnapshotOp.BEGIN.value, generation=pr.ha.generation),
            )
            sync_lsn = pr.instance.lsn
            await self.send_snapshot(
                pr,
                cl,
                replace=False,
                records=pr.instance.since(int(info.get("sync_lsn", 0))),
                begun=True,
                sync_lsn=sync_lsn,
            )
        except (TimeoutError, aiohttp.ClientError, OSError, AgentError) as e:
            log.info("%s: sync with %s failed: %s", node.cfg.name, pr.peer_hm_ip, e)
            pr.replication = ReplicationStatus.DOWN
            await asyncio.sleep(0.5)
            return
        pr.replication = ReplicationStatus.UP
        pr.sync_percent = 100
        if pr.peer_view is not None:  # a new view: a received one is shared (Heartbeats._known)
            pr.peer_view = dataclasses.replace(pr.peer_view, synced=True)
        if first:
            pr.sync_done_once = True
            node.emit(EventCode.ACTIVE, "", pr)
        node.changed()

    async def send_snapshot(
        self,
        pr: PairRuntime,
        cl: AgentClient,
        *,
        replace: bool,
        records: list[dict],
        begun: bool = False,
        sync_lsn: int | None = None,
    ) -> None:
        hm_ip = self.node.cfg.hm_ip
        gen = pr.ha.generation
        if not begun:
            await cl.call(
                "POST",
                PATH_PEER_SNAPSHOT,
                self.node.heartbeats.peer_msg(pr, op=SnapshotOp.BEGIN.value, replace=replace, generation=gen),
            )
        total = len(records)
        for i in range(0, total, SYNC_CHUNK):
            chunk = records[i : i + SYNC_CHUNK]
            pr.sync_percent = int(100 * (i + len(chunk)) / total)
            await cl.call(
                "POST",
                PATH_PEER_SNAPSHOT,
                {
                    "from": hm_ip,
                    "op": SnapshotOp.CHUNK.value,
                    "records": chunk,
                    "percent": pr.sync_percent,
                    "generation": gen,
                },
                auto_key=False,
            )
        await cl.call(
            "POST",
            PATH_PEER_SNAPSHOT,
            {
                "from": hm_ip,
                "op": SnapshotOp.END.value,
                "generation": gen,
                "sync_lsn": pr.instance.lsn if sync_lsn is None else sync_lsn,
            },
            auto_key=False,
        )
        pr.sync_percent = 100

    # ================================================================= peer endpoints
    async def peer_command(self, body: dict) -> dict:
        node = self.node
        pr = node.pair_from(body)
        try:
            cmd = PeerCommand(body.get("cmd"))
        except ValueError:
            raise ApiError(400, f"unknown command {body.get('cmd')!r}") from None
        gen = int(body.get("generation", 0))
        now = time.time()
        cause = cause_from(body.get("cause"))  # the command the peer is carrying out, if any
        if "view" in body:
            node.heartbeats.absorb(pr, body)
        try:
            if cmd in (PeerCommand.HEARTBEAT_NOW, PeerCommand.HELLO):
                pass  # absorbed above (the hello's key too); the answer carries ours
            elif cmd is PeerCommand.FAILOVER_BEGIN:
                pr.take_cause(cause, now)
                node.record(pr.ha.peer_failover_begin(now, gen), pr)
                node.changed()
                await node.vips.reconcile()  # release the VIP before answering
            elif cmd is PeerCommand.FAILBACK_BEGIN:
                pr.take_cause(cause, now)
                node.record(pr.ha.peer_failback_begin(now, gen), pr)
            elif cmd is PeerCommand.TAKE_CHARGE:
                pr.take_cause(cause, now)
                node.record(pr.ha.peer_failback_take_charge(now, gen), pr)
                node.changed()
                await node.vips.reconcile()
                if pr.ha.in_charge:  # a failback handed the pair back: its post_takeover hook
                    hooks.start_hook(node, "post_takeover", pr)
            elif cmd is PeerCommand.RESYNC_DONE:
                if gen < pr.ha.generation:
                    raise Refused("stale generation")
                pr.instance.set_sync_lsn(pr.instance.lsn)
                node.record(pr.ha.resync_done(now), pr, cause=cause)
            else:  # INVOKE_FAILOVER / INVOKE_FAILBACK: the manager asked the primary
                return await node.operator.invoke_here(pr, cmd, cause)
        except Refused as e:
            raise ApiError(409, str(e)) from None
        node.changed()
        return node.heartbeats.peer_msg(pr)

    def peer_replicate(self, body: dict) -> dict:
        pr = self.node.pair_from(body)
        if int(body.get("generation", 0)) < pr.ha.generation or pr.ha.in_charge:
            raise ApiError(409, "stale primary: this secondary holds a newer generation")
        applied = 0
        try:
            for rec in body.get("records", []):
                applied += pr.instance.apply(rec)
        except OSError as exc:
            self._cannot_store(pr, exc)
        pr.note_lag()
        return {"ok": True, "applied": applied, "lsn": pr.instance.lsn}

    def _cannot_store(self, pr: PairRuntime, exc: OSError) -> NoReturn:
        """Secondary: the primary's records cannot be stored (a full disk, a broken file): out
        of step from now on (never taking over without them, until a copy completes), and the
        primary is told so (507), so it acknowledges its clients' writes without us rather
        than wait for a copy that cannot come."""
        node = self.node
        if pr.ha.synced or pr.replication is not ReplicationStatus.DOWN:
            node.record(pr.ha.set_synced(time.time(), False), pr)
            pr.replication = ReplicationStatus.DOWN
            node.emit(
                EventCode.REPLICATION_DOWN,
                f"Cannot store the primary's records in {pr.instance.db_name}: {exc.strerror or exc}.",
                pr,
            )
            node.changed()
        raise ApiError(507, f"cannot store the records: {exc.strerror or exc}")

    def peer_snapshot(self, body: dict) -> dict:
        """Bulk copy: catch-up (primary -> secondary) or failback (secondary -> primary, replace)."""
        node = self.node
        pr = node.pair_from(body)
        op = body.get("op")
        if op not in {o.value for o in SnapshotOp}:
            raise ApiError(400, f"unknown op {op!r}")
        gen = int(body.get("generation", 0))
        if gen < pr.ha.generation:
            raise ApiError(409, "stale generation")
        if op == SnapshotOp.BEGIN:
            pr.staging = [] if body.get("replace") else None
            pr.sync_percent = 0
            return {"sync_lsn": pr.instance.sync_lsn, **pr.instance.digest()}
        if op == SnapshotOp.CHUNK:
            staging = pr.staging
            recs = body.get("records", [])
            if staging is not None:
                staging.extend(recs)
            else:
                try:
                    for r in recs:
                        pr.instance.apply(r)
                except OSError as exc:
                    self._cannot_store(pr, exc)
            pr.sync_percent = int(body.get("percent", 0))
            return {"ok": True}
        if op == SnapshotOp.END:
            staging = pr.staging
            if staging is not None:
                pr.instance.replace_all(staging)
                pr.staging = None
            else:
                pr.instance.set_sync_lsn(int(body["sync_lsn"]))
                if pr.ha.role is Role.SECONDARY and pr.ha.owner is Role.PRIMARY and not pr.ha.in_charge:
                    node.record(pr.ha.set_synced(time.time(), True), pr)
                    if not pr.sync_done_once:  # the secondary's half of the initial synchronisation
                        pr.sync_done_once = True
                        node.emit(EventCode.ACTIVE, "", pr)
            pr.sync_percent = 100
            node.changed()
            return {"ok": True, **pr.instance.digest()}
        raise ApiError(400, f"unknown op {op!r}")

    # ================================================================= writes (service API on the VIP)
    async def write_element(self, vip: str, element: dict) -> dict:
        node = self.node
        in_charge, pr, inst, _ = node.binding_for(vip)
        if not in_charge or inst is None:
            raise ApiError(503, "this node is not in charge of the virtual IP")
        if pr is not None and pr.ha.phase in (Phase.FAILBACK, Phase.FAILOVER):
            raise ApiError(503, f"{pr.ha.state.value}: writes are paused, retry shortly")
        rec = inst.put(element)
        node.counters["writes"] += 1
        if pr is not None and pr.ha.role is Role.PRIMARY:
            await self.replicate(pr, rec)
        if pr is not None and not (pr.ha.in_charge and pr.ha.running):
            raise ApiError(503, "lost charge of the virtual IP during the write")
        return rec

    async def _solo_lease(self, pr: PairRuntime) -> bool:
        """Alone, with witnesses: ask them now for a lease asked for alone, and wait for it a
        little (one witness round) rather than refuse the write at once."""
        pr.witness_wake.set()
        deadline = time.monotonic() + 2 * pr.ha.config.heartbeat_interval + 0.2
        while time.monotonic() < deadline:
            if pr.may_ack_alone():
                return True
            if not pr.ha.in_charge:
                return False
            await asyncio.sleep(0.02)
        return False

    async def replicate(self, pr: PairRuntime, rec: dict) -> None:
        """Synchronous replication: return once the secondary has the record, or once the
        secondary is known gone (heartbeats Down / stopped by hand)."""
        hm_ip = self.node.cfg.hm_ip
        while True:
            ha = pr.ha
            if not ha.in_charge:
                raise ApiError(503, "lost charge of the virtual IP during the write")
            pv = pr.peer_view
            if not ha.heartbeat_up or pv is None or not pv.running:
                if pr.may_ack_alone() or await self._solo_lease(pr):
                    return
                # with witnesses: alone, and no lease asked for alone (the witnesses may let the
                # secondary take over): acknowledging now could lose the write
                raise ApiError(503, "the secondary is not in step and the witnesses grant no lease; "
                                    "write not acknowledged")  # fmt: skip
            try:
                status, out = await pr.client(timeout=1.0).request(
                    "POST",
                    PATH_PEER_REPLICATE,
                    {"from": hm_ip, "generation": ha.generation, "records": [rec]},
                    auto_key=False,
                )
                if status == 200:
                    return
                if status == 409:
                    # the secondary holds a newer generation: we must not acknowledge
                    raise ApiError(503, "the secondary is in charge; write not acknowledged")
                if status == 507:
                    # the secondary cannot store it and knows it is out of step (it takes over
                    # nothing until a copy completes, and the copy brings this record): as alone
                    pr.replication = ReplicationStatus.DOWN
                    if pr.may_ack_alone() or await self._solo_lease(pr):
                        return
                    raise ApiError(503, "the secondary cannot store writes and the witnesses grant no lease; "
                                        "write not acknowledged")  # fmt: skip
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.02)
