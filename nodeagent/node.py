"""The node runtime: one Health Monitor (HA pairs, heartbeats, replication, VIPs, events).

Pure decisions are in :mod:`nodeagent.hastate`; this module does the I/O around them:
after every change it persists the pair state, records events, and reconciles the VIP
listeners with ``in_charge`` (level-triggered). Procedures (failover, failback, sync) run
as one asyncio task per pair at a time.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

from .client import AgentClient, AgentError
from .config import ELEMENT_LIMITS, ConfigError, NodeConfig, check_ip, check_trap_url
from .hastate import Note, PairConfig, PairHA, PeerView, Refused, iso
from .protocol import (
    PATH_PEER_COMMAND, PATH_PEER_HEARTBEAT, PATH_PEER_REPLICATE, PATH_PEER_SNAPSHOT, EventText, HAState, Mode,
    Role, instance_names,
)
from .replication import InstanceStore
from .store import AppendLog, StateDir, read_jsonl

log = logging.getLogger("nodeagent.node")

SYNC_CHUNK = 200


async def wait_event(ev: asyncio.Event, timeout: float) -> None:
    """Wait for ``ev`` at most ``timeout`` seconds. (asyncio.timeout, not wait_for: on 3.11
    wait_for can swallow a cancellation that races with the event being set.)"""
    try:
        async with asyncio.timeout(timeout):
            await ev.wait()
    except TimeoutError:
        pass


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc).isoformat(timespec="milliseconds")


class PairRuntime:
    def __init__(self, node: "Node", peer: dict, slot: int, ha: PairHA) -> None:
        self.node = node
        self.peer = peer  # name, hm_ip, vip, netmask, password, version, udi, device_type, direct_connect, port
        self.slot = slot
        self.ha = ha
        self.rtts: collections.deque[float] = collections.deque(maxlen=50)
        self.peer_mean_ms: float | None = None
        self.peer_view: PeerView | None = None
        self.peer_digest: dict = {}
        self.sync_percent = 0
        self.sync_done_once = False
        self.replication = "Setting up"
        self.proc: asyncio.Task | None = None
        self.hb_task: asyncio.Task | None = None
        self.saved_sig: Any = None
        self.status_note = ""
        if node.cfg.role is Role.SECONDARY:
            names = instance_names(slot)
            self.instance = InstanceStore(names["secondary_db_name"], names["secondary_db_port"],
                                          node.sd.instance_log(names["secondary_db_name"]))
        else:
            self.instance = node.own_instance

    # addresses and secrets of the pair
    @property
    def peer_hm_ip(self) -> str:
        return self.peer["hm_ip"]

    @property
    def vip(self) -> str:
        return self.node.cfg.vip if self.node.cfg.role is Role.PRIMARY else self.peer["vip"]

    @property
    def netmask(self) -> str | None:
        return self.node.cfg.netmask if self.node.cfg.role is Role.PRIMARY else self.peer.get("netmask")

    @property
    def service_password(self) -> str:
        return self.node.cfg.password if self.node.cfg.role is Role.PRIMARY else self.peer["password"]

    @property
    def direct(self) -> bool:
        return bool(self.node.cfg.direct_connect and self.peer.get("direct_connect"))

    def client(self, timeout: float = 2.0) -> AgentClient:
        host = self.peer["direct_connect"] if self.direct else self.peer["hm_ip"]
        return AgentClient(self.node.session, host, self.peer["password"], port=self.peer.get("port", self.node.cfg.port),
                           timeout=timeout)

    @property
    def mean_ms(self) -> float | None:
        if self.rtts:
            return round(sum(self.rtts) / len(self.rtts) * 1000, 3)
        return self.peer_mean_ms

    def to_dict(self) -> dict:
        return {"peer": self.peer, "slot": self.slot, "ha": self.ha.to_dict(), "sync_done_once": self.sync_done_once}

    def sig(self) -> Any:
        """What must be persisted when it changes (not the heartbeat timestamps)."""
        h = self.ha
        c = h.config
        return (h.generation, h.owner, h.in_charge, h.running, h.stop_reason, h.phase, h.synced, h.alone,
                h.reclaim_pending, h.resume_in_charge, h.last_switch_at, h.pending_generation, h.peer_graceful,
                h.heartbeats_seen, h.state, c.failover_type, c.failback_type, c.failover_wait, c.stabilisation_seconds,
                c.maintenance, self.sync_done_once, self.slot)


class Node:
    def __init__(self, cfg: NodeConfig, state_dir: str | Path, *, session: aiohttp.ClientSession | None = None,
                 allow_short_wait: bool = False, allow_non_loopback: bool = False) -> None:
        self.cfg = cfg
        self.sd = StateDir(state_dir).ensure()
        self.session = session
        self._own_session = session is None
        self.allow_short_wait = allow_short_wait
        self.allow_non_loopback = allow_non_loopback
        self.pairs: dict[str, PairRuntime] = {}
        self.own_instance = InstanceStore("msedb", 1521, self.sd.instance_log("msedb")) if cfg.role is Role.PRIMARY else None
        self.admin_stopped = False
        self.unpaired_running = True
        self.events: collections.deque[dict] = collections.deque(maxlen=5000)
        self.seq = 0
        self._event_log = AppendLog(self.sd.path("events.jsonl"))
        self.started_at = time.time()
        self.restarts = 0
        self.licences: list[dict] = []
        self.traps: dict[str, dict] = {}
        self.vip_driver = None  # set by the server
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self._push_wake = asyncio.Event()
        self._vip_retry_at: dict[str, float] = {}
        self._stopping = False
        self.closed = False
        self.counters = {"heartbeats_sent": 0, "heartbeats_failed": 0, "writes": 0}

    # ================================================================= lifecycle
    def load(self, declared_pairs: list[tuple[dict, PairConfig]] | None = None) -> None:
        """Load persisted state; on a first start create the pairs the fleet declares."""
        now = time.time()
        self.sd.save_if_changed("config.json", self.cfg.to_dict())
        for ev in read_jsonl(self.sd.path("events.jsonl")):
            self.seq = max(self.seq, int(ev.get("seq", 0)))
            self.events.append(ev)
        self.licences = self.sd.load("licences.json", []) or []
        traps = self.sd.load("traps.json", None)
        if traps is None:
            traps = {"destinations": {u: {"url": u, "last_updated": now_iso(), "pushed_seq": self.seq}
                                      for u in self.cfg.trap_destinations}}
        self.traps = traps["destinations"]
        saved = self.sd.load("ha.json")
        if saved is None:
            for peer, pc in declared_pairs or []:
                slot = self._free_slot()
                ha, notes = PairHA.create(self.cfg.role, pc, now)
                pr = PairRuntime(self, peer, slot, ha)
                self.pairs[peer["hm_ip"]] = pr
                self.record(notes, pr)
                self._announce_initial_sync(pr)
            self.save_ha()
            return
        self.restarts = int(saved.get("restarts", 0)) + 1
        self.admin_stopped = bool(saved.get("admin_stopped", False))
        self.unpaired_running = bool(saved.get("unpaired_running", True))
        for d in saved.get("pairs", []):
            ha = PairHA.from_dict(d["ha"])
            ha.restarted(now)
            pr = PairRuntime(self, d["peer"], d["slot"], ha)
            pr.sync_done_once = d.get("sync_done_once", False)
            pr.replication = "Down"
            self.pairs[pr.peer_hm_ip] = pr
        if saved.get("signal_stop") and not self.admin_stopped:
            for pr in self.pairs.values():
                self.record(pr.ha.start_services(now), pr)
            self.unpaired_running = True
        self.save_ha()

    def _free_slot(self) -> int:
        used = {p.slot for p in self.pairs.values()}
        slot = 3
        while slot in used:
            slot += 1
        return slot

    async def start(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=8))
        if self.vip_driver is not None:
            await self.vip_driver.cleanup([p.vip for p in self.pairs.values() if p.vip] + ([self.cfg.vip] if self.cfg.vip else []))
        self._tasks.append(asyncio.create_task(self._loop(), name=f"{self.cfg.name}-loop"))
        self._tasks.append(asyncio.create_task(self._push_loop(), name=f"{self.cfg.name}-push"))
        for pr in self.pairs.values():
            self._start_heartbeats(pr)
        await self.reconcile()

    def _start_heartbeats(self, pr: PairRuntime) -> None:
        if self.cfg.role is Role.SECONDARY and pr.hb_task is None:
            pr.hb_task = asyncio.create_task(self._heartbeat_loop(pr), name=f"{self.cfg.name}-hb-{pr.peer_hm_ip}")

    async def close(self, *, graceful: bool = False) -> None:
        """Stop the node. ``graceful`` (SIGTERM): tell the peers first, like a stop by hand."""
        if self.closed:
            return
        self._stopping = True
        if graceful:
            now = time.time()
            for pr in self.pairs.values():
                if pr.ha.running:
                    self.record(pr.ha.stop_services(now), pr)
            await self.reconcile()
            await asyncio.gather(*(self._tell_stopping(pr) for pr in self.pairs.values()), return_exceptions=True)
            self.save_ha(signal_stop=True)
        tasks = self._tasks + [t for pr in self.pairs.values() for t in (pr.proc, pr.hb_task) if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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

    async def _tell_stopping(self, pr: PairRuntime) -> None:
        try:
            await pr.client(timeout=0.5).request("POST", PATH_PEER_COMMAND, self._peer_msg(pr, cmd="heartbeat_now"), auto_key=False)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            pass

    # ================================================================= persistence and events
    def save_ha(self, *, signal_stop: bool = False) -> None:
        self.sd.save("ha.json", {
            "node": self.cfg.name,
            "role": self.cfg.role.value,
            "pairs": [p.to_dict() for p in self.pairs.values()],
            "admin_stopped": self.admin_stopped,
            "unpaired_running": self.unpaired_running,
            "restarts": self.restarts,
            "signal_stop": signal_stop,
            "saved_at": now_iso(),
        })
        for p in self.pairs.values():
            p.saved_sig = p.sig()

    def maybe_save(self) -> bool:
        if any(p.saved_sig != p.sig() for p in self.pairs.values()):
            self.save_ha()
            return True
        return False

    def emit(self, description: str, remarks: str = "", pr: PairRuntime | None = None) -> dict:
        self.seq += 1
        gen = pr.ha.generation if pr else max((p.ha.generation for p in self.pairs.values()), default=0)
        ev = {
            "seq": self.seq, "description": description, "generated_by": self.cfg.role.title,
            "timestamp": now_iso(), "remarks": remarks, "generation": gen, "peer": pr.peer_hm_ip if pr else None,
        }
        self._event_log.append(ev)
        self.events.append(ev)
        self._push_wake.set()
        return ev

    def record(self, notes: list[Note], pr: PairRuntime | None = None) -> None:
        for n in notes:
            self.emit(n.description, n.remarks, pr)

    def changed(self) -> None:
        """Something may have changed: persist it and, if it did, let the loop reconcile at once
        (a heartbeat that changes nothing does not wake the loop)."""
        if self.maybe_save():
            self._wake.set()

    # ================================================================= derived status
    @property
    def services_running(self) -> bool:
        if self.pairs:
            return any(p.ha.running for p in self.pairs.values())
        return self.unpaired_running

    def desired_vips(self) -> dict[str, tuple[str | None, PairRuntime | None]]:
        """VIP -> (netmask, pair) this node must serve now."""
        out: dict[str, tuple[str | None, PairRuntime | None]] = {}
        if self._stopping:
            return out
        if self.cfg.role is Role.PRIMARY and not self.pairs:
            if self.unpaired_running and self.cfg.vip and not self.cfg.recovery:
                out[self.cfg.vip] = (self.cfg.netmask, None)
            return out
        for pr in self.pairs.values():
            if pr.ha.in_charge and pr.ha.running and pr.vip:
                out[pr.vip] = (pr.netmask, pr)
        return out

    def binding_for(self, vip: str) -> tuple[bool, PairRuntime | None, InstanceStore | None, str]:
        """Who serves requests arriving at ``vip``: (in charge now, pair, instance, password)."""
        want = self.desired_vips()
        if vip not in want:
            return False, None, None, ""
        pr = want[vip][1]
        if pr is None:
            return True, None, self.own_instance, self.cfg.password
        return True, pr, pr.instance, pr.service_password

    async def reconcile(self) -> None:
        drv = self.vip_driver
        if drv is None:
            return
        want = self.desired_vips()
        for vip in list(drv.bound - set(want)):
            await drv.release(vip)
            self.emit("Virtual IP released", vip, want.get(vip, (None, None))[1] if vip in want else self._pair_by_vip(vip))
        now = time.monotonic()
        for vip, (mask, pr) in want.items():
            if vip in drv.bound or self._vip_retry_at.get(vip, 0) > now:
                continue
            try:
                await drv.bind(vip, mask)
            except OSError as e:
                self._vip_retry_at[vip] = now + 0.05
                log.warning("%s: cannot take VIP %s yet: %s", self.cfg.name, vip, e)
            else:
                self._vip_retry_at.pop(vip, None)
                self.emit("Virtual IP taken", vip, pr)

    def _pair_by_vip(self, vip: str) -> PairRuntime | None:
        for pr in self.pairs.values():
            if pr.vip == vip:
                return pr
        return None

    # ================================================================= main loop
    def tick_period(self) -> float:
        if not self.pairs:
            return 1.0
        # half a heartbeat interval: the takeover happens at most wait/20 late (ratio <= 1.05)
        return max(0.05, min(0.5, min(p.ha.config.heartbeat_interval for p in self.pairs.values()) / 2))

    async def _loop(self) -> None:
        while not self._stopping:
            await wait_event(self._wake, self.tick_period())
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the Health Monitor alive; the error is logged
                log.exception("%s: loop step failed", self.cfg.name)

    async def step(self) -> None:
        now = time.time()
        for pr in list(self.pairs.values()):
            self.record(pr.ha.tick(now), pr)
            if pr.ha.running and not pr.ha.heartbeat_up and pr.replication != "Down" and pr.sync_done_once and pr.ha.role is Role.PRIMARY:
                pr.replication = "Down"
                if pr.ha.in_charge:
                    self.emit(EventText.REPLICATION_DOWN, "", pr)
            self._schedule(pr)
        self.maybe_save()
        await self.reconcile()

    def _schedule(self, pr: PairRuntime) -> None:
        if pr.proc is not None and not pr.proc.done():
            return
        ha = pr.ha
        coro = None
        if ha.role is Role.SECONDARY and ha.state is HAState.FAILOVER_INVOKED:
            coro = self._proc_failover(pr)
        elif ha.role is Role.SECONDARY and ha.state is HAState.FAILBACK_ACTIVE:
            coro = self._proc_failback(pr)
        elif ha.role is Role.PRIMARY and ha.phase == "failover":
            coro = self._proc_failover_shutdown(pr)
        elif ha.role is Role.PRIMARY and ha.phase == "resync" and ha.heartbeat_up:
            coro = self._proc_resync(pr)
        elif (ha.role is Role.PRIMARY and ha.in_charge and ha.phase is None and ha.heartbeat_up and ha.running
              and pr.peer_view is not None and pr.peer_view.running and not pr.peer_view.synced
              and pr.peer_view.owner is Role.PRIMARY and pr.peer_view.phase is None):
            coro = self._proc_sync(pr)
        if coro is not None:
            pr.proc = asyncio.create_task(coro, name=f"{self.cfg.name}-proc-{pr.peer_hm_ip}")

    # ================================================================= heartbeats
    def _peer_msg(self, pr: PairRuntime, **extra: Any) -> dict:
        return {"from": self.cfg.hm_ip, "name": self.cfg.name, "view": pr.ha.view().to_dict(),
                "digest": pr.instance.digest(), "slot": pr.slot, "mean_ms": pr.mean_ms, **extra}

    def _absorb(self, pr: PairRuntime, msg: dict) -> None:
        view = PeerView.from_dict(msg["view"])
        pr.peer_view = view
        pr.peer_digest = msg.get("digest") or {}
        if msg.get("mean_ms") is not None and pr.ha.role is Role.PRIMARY:
            pr.peer_mean_ms = msg["mean_ms"]
        if pr.ha.role is Role.PRIMARY and msg.get("slot"):
            pr.slot = int(msg["slot"])
        self.record(pr.ha.on_heartbeat(time.time(), view), pr)

    async def _heartbeat_loop(self, pr: PairRuntime) -> None:
        """The secondary heartbeats each primary; the answer carries the primary's side."""
        while not self._stopping:
            interval = pr.ha.config.heartbeat_interval
            started = time.monotonic()
            client, msg = pr.client(timeout=max(0.2, min(1.0, interval * 2))), self._peer_msg(pr)
            try:
                t0 = time.monotonic()  # the response time: from sending the heartbeat to its answer
                status, out = await client.request("POST", PATH_PEER_HEARTBEAT, msg, auto_key=False)
                rtt = time.monotonic() - t0
                if status == 200 and isinstance(out, dict) and "view" in out:
                    pr.rtts.append(rtt)
                    self.counters["heartbeats_sent"] += 1
                    self._absorb(pr, out)
                    self._schedule(pr)
                    self.changed()
                else:
                    # an answer, but not a heartbeat (e.g. 404 "not paired" while the pair is
                    # being deleted): the peer is alive, so it must not be taken over
                    pr.ha.peer_alive(time.time())
                    self.counters["heartbeats_failed"] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, KeyError):
                self.counters["heartbeats_failed"] += 1
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    # ================================================================= peer endpoints
    def _pair_from(self, body: dict) -> PairRuntime:
        pr = self.pairs.get(str(body.get("from", "")))
        if pr is None:
            raise ApiError(404, "not paired with this peer")
        return pr

    def peer_heartbeat(self, body: dict) -> dict:
        pr = self._pair_from(body)
        self._absorb(pr, body)
        self._schedule(pr)
        self.changed()
        return self._peer_msg(pr)

    async def peer_command(self, body: dict) -> dict:
        pr = self._pair_from(body)
        cmd = body.get("cmd")
        gen = int(body.get("generation", 0))
        now = time.time()
        if "view" in body:
            self._absorb(pr, body)
        try:
            if cmd == "heartbeat_now":
                pass
            elif cmd == "failover_begin":
                self.record(pr.ha.peer_failover_begin(now, gen), pr)
                self.changed()
                await self.reconcile()  # release the VIP before answering
            elif cmd == "failback_begin":
                self.record(pr.ha.peer_failback_begin(now, gen), pr)
            elif cmd == "take_charge":
                self.record(pr.ha.peer_failback_take_charge(now, gen), pr)
                self.changed()
                await self.reconcile()
            elif cmd == "resync_done":
                if gen < pr.ha.generation:
                    raise Refused("stale generation")
                pr.instance.set_sync_lsn(pr.instance.lsn)
                self.record(pr.ha.resync_done(now), pr)
            elif cmd in ("invoke_failover", "invoke_failback"):
                return await self._invoke_here(pr, cmd)
            else:
                raise ApiError(400, f"unknown command {cmd!r}")
        except Refused as e:
            raise ApiError(409, str(e)) from None
        self.changed()
        return self._peer_msg(pr)

    def peer_replicate(self, body: dict) -> dict:
        pr = self._pair_from(body)
        if int(body.get("generation", 0)) < pr.ha.generation or pr.ha.in_charge:
            raise ApiError(409, "stale primary: this secondary holds a newer generation")
        applied = 0
        for rec in body.get("records", []):
            applied += pr.instance.apply(rec)
        return {"ok": True, "applied": applied, "lsn": pr.instance.lsn}

    def peer_snapshot(self, body: dict) -> dict:
        """Bulk copy: catch-up (primary -> secondary) or failback (secondary -> primary, replace)."""
        pr = self._pair_from(body)
        op = body.get("op")
        gen = int(body.get("generation", 0))
        if gen < pr.ha.generation:
            raise ApiError(409, "stale generation")
        if op == "begin":
            pr._staging = [] if body.get("replace") else None  # type: ignore[attr-defined]
            pr.sync_percent = 0
            return {"sync_lsn": pr.instance.sync_lsn, **pr.instance.digest()}
        if op == "chunk":
            staging = getattr(pr, "_staging", None)
            recs = body.get("records", [])
            if staging is not None:
                staging.extend(recs)
            else:
                for r in recs:
                    pr.instance.apply(r)
            pr.sync_percent = int(body.get("percent", 0))
            return {"ok": True}
        if op == "end":
            staging = getattr(pr, "_staging", None)
            if staging is not None:
                pr.instance.replace_all(staging)
                pr._staging = None  # type: ignore[attr-defined]
            else:
                pr.instance.set_sync_lsn(int(body["sync_lsn"]))
                if pr.ha.role is Role.SECONDARY and pr.ha.owner is Role.PRIMARY and not pr.ha.in_charge:
                    self.record(pr.ha.set_synced(time.time(), True), pr)
                    if not pr.sync_done_once:  # the secondary's half of the initial synchronisation
                        pr.sync_done_once = True
                        self.emit(EventText.ACTIVE, "", pr)
            pr.sync_percent = 100
            self.changed()
            return {"ok": True, **pr.instance.digest()}
        raise ApiError(400, f"unknown op {op!r}")

    # ================================================================= procedures
    async def _proc_failover(self, pr: PairRuntime) -> None:
        """Secondary: tell the primary to shut down (if it can hear us), then take over."""
        gen = pr.ha.pending_generation or pr.ha.generation + 1
        try:
            await pr.client(timeout=1.0).call("POST", PATH_PEER_COMMAND, self._peer_msg(pr, cmd="failover_begin", generation=gen))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, AgentError) as e:
            log.info("%s: primary %s did not answer the failover (%s); taking over", self.cfg.name, pr.peer_hm_ip, e)
        if pr.ha.state is not HAState.FAILOVER_INVOKED:
            return
        self.record(pr.ha.complete_failover(time.time()), pr)
        pr.replication = "Down"
        self.changed()
        await self.reconcile()

    async def _proc_failover_shutdown(self, pr: PairRuntime) -> None:
        """Primary: the switchover stops this primary's services (simulates a failure)."""
        await self.reconcile()
        self.record(pr.ha.failover_shutdown_done(time.time()), pr)
        self.changed()

    async def _proc_failback(self, pr: PairRuntime) -> None:
        """Secondary: copy the data back to the primary, hand the VIP over, resync."""
        cl = pr.client(timeout=5.0)
        try:
            await cl.call("POST", PATH_PEER_COMMAND, self._peer_msg(pr, cmd="failback_begin", generation=pr.ha.generation))
            await self._send_snapshot(pr, cl, replace=True, records=pr.instance.snapshot())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, AgentError) as e:
            self.record(pr.ha.failback_abort(time.time(), f"Copy to the primary failed: {e}"), pr)
            self.changed()
            return
        self.record(pr.ha.failback_handover(time.time()), pr)
        pr.instance.set_sync_lsn(pr.instance.lsn)
        self.changed()
        await self.reconcile()  # release the VIP before the primary takes it
        for _ in range(20):
            try:
                await cl.call("POST", PATH_PEER_COMMAND, self._peer_msg(pr, cmd="take_charge", generation=pr.ha.generation))
                break
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, AgentError):
                await asyncio.sleep(0.1)
        self.changed()

    async def _proc_resync(self, pr: PairRuntime) -> None:
        """Primary after a failback: check the secondary holds the same data, then both Active."""
        cl = pr.client(timeout=5.0)
        try:
            info = await cl.call("POST", PATH_PEER_SNAPSHOT, self._peer_msg(pr, op="begin", generation=pr.ha.generation))
            missing = pr.instance.since(int(info.get("sync_lsn", 0)))
            if info.get("count") != pr.instance.count or missing:
                await self._send_snapshot(pr, cl, replace=False, records=missing, begun=True)
            await cl.call("POST", PATH_PEER_COMMAND, self._peer_msg(pr, cmd="resync_done", generation=pr.ha.generation))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, AgentError) as e:
            log.info("%s: resync with %s failed: %s", self.cfg.name, pr.peer_hm_ip, e)
            await asyncio.sleep(0.2)
            return
        self.record(pr.ha.resync_done(time.time()), pr)
        pr.replication = "Up"
        pr.sync_done_once = True
        self.changed()

    def _announce_initial_sync(self, pr: PairRuntime) -> None:
        """A new pair: the initial synchronisation is under way from the start (the copy runs
        once heartbeats are up), so each node's log reads in the seed's order: created,
        synchronisation in progress, heartbeats set up, Active."""
        self.emit(EventText.SYNC_IN_PROGRESS, "", pr)

    async def _proc_sync(self, pr: PairRuntime) -> None:
        """Primary: initial synchronisation / catch-up of a secondary, with progress."""
        cl = pr.client(timeout=5.0)
        first = not pr.sync_done_once
        pr.replication = "Setting up"
        pr.sync_percent = 0
        if not first:  # the first one was announced when the pair was created
            self.emit(EventText.SYNC_IN_PROGRESS, "Catching up after an interruption.", pr)
        try:
            info = await cl.call("POST", PATH_PEER_SNAPSHOT, self._peer_msg(pr, op="begin", generation=pr.ha.generation))
            sync_lsn = pr.instance.lsn
            await self._send_snapshot(pr, cl, replace=False, records=pr.instance.since(int(info.get("sync_lsn", 0))),
                                      begun=True, sync_lsn=sync_lsn)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, AgentError) as e:
            log.info("%s: sync with %s failed: %s", self.cfg.name, pr.peer_hm_ip, e)
            pr.replication = "Down"
            await asyncio.sleep(0.5)
            return
        pr.replication = "Up"
        pr.sync_percent = 100
        if pr.peer_view is not None:
            pr.peer_view.synced = True
        if first:
            pr.sync_done_once = True
            self.emit(EventText.ACTIVE, "", pr)
        self.changed()

    async def _send_snapshot(self, pr: PairRuntime, cl: AgentClient, *, replace: bool, records: list[dict],
                             begun: bool = False, sync_lsn: int | None = None) -> None:
        gen = pr.ha.generation
        if not begun:
            await cl.call("POST", PATH_PEER_SNAPSHOT, self._peer_msg(pr, op="begin", replace=replace, generation=gen))
        total = len(records)
        for i in range(0, total, SYNC_CHUNK):
            chunk = records[i:i + SYNC_CHUNK]
            pr.sync_percent = int(100 * (i + len(chunk)) / total)
            await cl.call("POST", PATH_PEER_SNAPSHOT, {"from": self.cfg.hm_ip, "op": "chunk", "records": chunk,
                                                       "percent": pr.sync_percent, "generation": gen}, auto_key=False)
        await cl.call("POST", PATH_PEER_SNAPSHOT, {"from": self.cfg.hm_ip, "op": "end", "generation": gen,
                                                   "sync_lsn": pr.instance.lsn if sync_lsn is None else sync_lsn},
                      auto_key=False)
        pr.sync_percent = 100

    # ================================================================= writes (service API on the VIP)
    async def write_element(self, vip: str, element: dict) -> dict:
        in_charge, pr, inst, _ = self.binding_for(vip)
        if not in_charge or inst is None:
            raise ApiError(503, "this node is not in charge of the virtual IP")
        if pr is not None and pr.ha.phase in ("failback", "failover"):
            raise ApiError(503, f"{pr.ha.state.value}: writes are paused, retry shortly")
        rec = inst.put(element)
        self.counters["writes"] += 1
        if pr is not None and pr.ha.role is Role.PRIMARY:
            await self._replicate(pr, rec)
        if pr is not None and not (pr.ha.in_charge and pr.ha.running):
            raise ApiError(503, "lost charge of the virtual IP during the write")
        return rec

    async def _replicate(self, pr: PairRuntime, rec: dict) -> None:
        """Synchronous replication: return once the secondary has the record, or once the
        secondary is known gone (heartbeats Down / stopped by hand)."""
        while True:
            ha = pr.ha
            if not ha.in_charge:
                raise ApiError(503, "lost charge of the virtual IP during the write")
            pv = pr.peer_view
            if not ha.heartbeat_up or pv is None or not pv.running:
                return
            try:
                status, out = await pr.client(timeout=1.0).request(
                    "POST", PATH_PEER_REPLICATE,
                    {"from": self.cfg.hm_ip, "generation": ha.generation, "records": [rec]}, auto_key=False)
                if status == 200:
                    return
                if status == 409:
                    # the secondary holds a newer generation: we must not acknowledge
                    raise ApiError(503, "the secondary is in charge; write not acknowledged")
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
            await asyncio.sleep(0.02)

    # ================================================================= operator commands (HM API)
    def configure(self, body: dict) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        role = str(body.get("role", "")).lower()
        if role not in ("primary", "secondary"):
            raise ApiError(400, "role must be primary or secondary")
        if Role(role) is not self.cfg.role:
            raise ApiError(409, "*** User has switched roles for this MSE. MSE must be stopped before switching roles. "
                                "Re-run setup to change the role.")
        peer_in = body.get("peer")
        if not isinstance(peer_in, dict):
            raise ApiError(400, "peer must be an object with name, hm_ip, password, version")
        try:
            peer = {
                "name": str(peer_in["name"]),
                "hm_ip": check_ip(peer_in["hm_ip"], "peer hm_ip", allow_non_loopback=self.allow_non_loopback),
                "password": str(peer_in["password"]),
                "version": str(peer_in["version"]),
                "udi": str(peer_in.get("udi", "")),
                "device_type": str(peer_in.get("device_type", "")),
                "vip": peer_in.get("vip"),
                "netmask": peer_in.get("netmask"),
                "direct_connect": peer_in.get("direct_connect"),
                "port": int(peer_in.get("port", self.cfg.port)),
            }
            if peer["vip"]:
                peer["vip"] = check_ip(peer["vip"], "peer vip", allow_non_loopback=self.allow_non_loopback)
            if peer["direct_connect"]:
                peer["direct_connect"] = check_ip(peer["direct_connect"], "peer direct_connect",
                                                  allow_non_loopback=self.allow_non_loopback)
            pc = PairConfig(
                Mode.parse(body.get("failover_type", "Manual")), Mode.parse(body.get("failback_type", "Manual")),
                body.get("failover_wait", 10), body.get("stabilisation_seconds", 1800),
                allow_short_wait=self.allow_short_wait, maintenance=body.get("maintenance", False),
            )
        except KeyError as e:
            raise ApiError(400, f"peer is missing {e}") from None
        except (ValueError, ConfigError) as e:
            raise ApiError(400, str(e)) from None
        if peer["hm_ip"] == self.cfg.hm_ip:
            raise ApiError(400, "a node cannot be paired with itself")
        if peer["version"] != self.cfg.version:
            raise ApiError(409, f"Primary and secondary must run the same software version ({self.cfg.version} here, {peer['version']} there)")
        if self.cfg.role is Role.SECONDARY and not peer["vip"]:
            raise ApiError(400, "the primary's vip is required on a secondary")
        existing = self.pairs.get(peer["hm_ip"])
        now = time.time()
        if existing is not None:
            existing.peer.update(peer)
            notes = existing.ha.update_config(now, pc)
            self.record(notes, existing)
            self.changed()
            return {"created": False, "peer": self.peer_info(existing)}
        if self.cfg.role is Role.PRIMARY and self.pairs:
            raise ApiError(409, "this primary already has a secondary; delete it first")
        if self.cfg.role is Role.SECONDARY and len(self.pairs) >= 2:
            raise ApiError(409, "a secondary can back at most two primaries")
        if any(p.vip == peer["vip"] for p in self.pairs.values() if peer["vip"]):
            raise ApiError(409, f"VIP {peer['vip']} is already backed by this secondary")
        recovery = body.get("recovery") is True
        if recovery and (self.cfg.role is not Role.PRIMARY or not self.cfg.recovery):
            raise ApiError(409, "Recovery restores the configuration of a primary that was set up in recovery mode "
                                "(setup: \"Start MSE in recovery mode\" yes); this server was not.")
        ha, notes = PairHA.create(self.cfg.role, pc, now)
        if recovery:
            # the secondary holds the data and the VIP: come back behind it (TERMINATED); a
            # failback copies the data back and returns the VIP
            ha.restore_behind_secondary(now, self._recovery_generation(body))
            notes = [Note(EventText.CONFIG_RESTORED, f"Recovery mode: generation {ha.generation}, "
                                                     "the secondary stays in charge until a failback.")]
        elif self.cfg.role is Role.PRIMARY and not self.unpaired_running:
            ha.running, ha.stop_reason, ha.in_charge = False, "graceful", False
            ha.resume_in_charge = True
        pr = PairRuntime(self, peer, self._free_slot(), ha)
        self.pairs[peer["hm_ip"]] = pr
        self.record(notes, pr)
        if recovery:
            pr.sync_done_once = True  # the data comes back with the failback, not an initial sync
            self.cfg.recovery = False  # restored: a later unpaired start claims the VIP again
            self.sd.save("config.json", self.cfg.to_dict())
        else:
            self._announce_initial_sync(pr)
        self.save_ha()
        self._start_heartbeats(pr)
        self._wake.set()
        return {"created": True, "peer": self.peer_info(pr)}

    @staticmethod
    def _recovery_generation(body: dict) -> int:
        try:
            generation = int(body.get("generation", 0))
        except (TypeError, ValueError):
            raise ApiError(400, "generation must be an integer") from None
        if generation < 1:
            raise ApiError(400, "recovery needs the pair's generation (the secondary's, 1 or more)")
        return generation

    async def delete_peer(self, hm_ip: str) -> dict:
        pr = self.pairs.get(hm_ip)
        if pr is None:
            raise ApiError(404, f"no peer {hm_ip}")
        if self.cfg.role is Role.SECONDARY and pr.ha.in_charge:
            raise ApiError(409, "This secondary is in charge of the primary's VIP; fail back before deleting the pair.")
        if self.cfg.role is Role.PRIMARY and pr.ha.owner is Role.SECONDARY:
            raise ApiError(409, "The secondary is in charge; fail back before deleting the pair.")
        for t in (pr.proc, pr.hb_task):
            if t:
                t.cancel()
        del self.pairs[hm_ip]
        if self.cfg.role is Role.PRIMARY:
            self.unpaired_running = pr.ha.running or pr.ha.resume_in_charge
        else:
            pr.instance.close()
        self.emit(EventText.PEER_DELETED, f"Peer {pr.peer['name']} ({hm_ip}) removed.")
        self.save_ha()
        await self.reconcile()
        return {"deleted": hm_ip}

    def _pick_pair(self, body: dict) -> PairRuntime:
        if not self.pairs:
            raise ApiError(409, "High availability is not configured on this server.")
        peer = body.get("peer") if isinstance(body, dict) else None
        if peer:
            pr = self.pairs.get(str(peer))
            if pr is None:
                raise ApiError(404, f"no peer {peer}")
            return pr
        if len(self.pairs) > 1:
            raise ApiError(400, "this secondary backs two primaries: say which with \"peer\": <primary HM IP>")
        return next(iter(self.pairs.values()))

    async def invoke(self, body: dict, what: str) -> dict:
        """Switchover / failback requested by the manager on either node."""
        pr = self._pick_pair(body)
        cmd = f"invoke_{what}"
        if isinstance(body, dict) and body.get("generation") is not None:
            try:
                gen = int(body["generation"])
            except (TypeError, ValueError):
                raise ApiError(400, "generation must be an integer") from None
            if gen < pr.ha.generation:
                raise ApiError(409, f"stale request: the pair is at generation {pr.ha.generation}, not {gen}")
        if self.cfg.role is Role.SECONDARY:
            return await self._invoke_here(pr, cmd)
        try:  # the secondary carries it out
            return await pr.client(timeout=5.0).call("POST", PATH_PEER_COMMAND, self._peer_msg(pr, cmd=cmd))
        except AgentError as e:
            raise ApiError(e.status, e.data.get("error", str(e)) if isinstance(e.data, dict) else str(e)) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise ApiError(502, f"the secondary {pr.peer_hm_ip} cannot be reached: {e}") from None

    async def _invoke_here(self, pr: PairRuntime, cmd: str) -> dict:
        now = time.time()
        try:
            if cmd == "invoke_failover":
                notes = pr.ha.invoke_failover(now)
            else:
                notes = pr.ha.invoke_failback(now)
        except Refused as e:
            raise ApiError(409, str(e)) from None
        self.record(notes, pr)
        self.changed()
        self._schedule(pr)
        return {"accepted": True, "state": pr.ha.state.value, "peer": pr.peer_hm_ip, "generation": pr.ha.generation}

    async def stop_services(self) -> dict:
        now = time.time()
        self.admin_stopped = True
        self.unpaired_running = False
        for pr in self.pairs.values():
            self.record(pr.ha.stop_services(now), pr)
        if not self.pairs:
            self.emit(EventText.SERVICES_STOPPED)
        self.save_ha()
        await self.reconcile()
        await asyncio.gather(*(self._tell_stopping(pr) for pr in self.pairs.values()), return_exceptions=True)
        return {"running": False, "states": {p.peer_hm_ip: p.ha.state.value for p in self.pairs.values()}}

    async def start_services(self) -> dict:
        now = time.time()
        self.admin_stopped = False
        self.unpaired_running = True
        for pr in self.pairs.values():
            self.record(pr.ha.start_services(now), pr)
        if not self.pairs:
            self.emit(EventText.SERVICES_STARTED)
        self.save_ha()
        await self.reconcile()
        return {"running": True, "states": {p.peer_hm_ip: p.ha.state.value for p in self.pairs.values()}}

    # ================================================================= licences and traps
    def install_licence(self, body: dict) -> dict:
        import hashlib
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "text (the licence file) is required")
        features = body.get("features", {})
        if not isinstance(features, dict):
            raise ApiError(400, "features must be an object")
        lid = hashlib.sha256(text.encode()).hexdigest()[:16]
        for lic in self.licences:
            if lic["id"] == lid:
                return lic
        lic = {"id": lid, "text": text, "features": features, "installed_at": now_iso()}
        self.licences.append(lic)
        self.sd.save("licences.json", self.licences)
        self.emit(EventText.LICENCE_INSTALLED, ", ".join(f"{k}: {v}" for k, v in features.items()))
        return lic

    def remove_licence(self, lid: str) -> dict:
        before = len(self.licences)
        self.licences = [x for x in self.licences if x["id"] != lid]
        if len(self.licences) == before:
            raise ApiError(404, f"no licence {lid}")
        self.sd.save("licences.json", self.licences)
        self.emit(EventText.LICENCE_REMOVED, lid)
        return {"deleted": lid}

    def set_trap_destinations(self, body: dict) -> dict:
        urls = body.get("urls") if isinstance(body, dict) else None
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls) or len(urls) > 8:
            raise ApiError(400, "urls must be a list of up to 8 URLs")
        try:
            for u in urls:
                check_trap_url(u, "trap destinations", allow_non_loopback=self.allow_non_loopback)
        except ConfigError as e:
            raise ApiError(400, str(e)) from None
        new = {}
        for u in urls:
            new[u] = self.traps.get(u) or {"url": u, "last_updated": now_iso(), "pushed_seq": 0}
        self.traps = new
        self._save_traps()
        self._push_wake.set()
        return self.trap_info()

    def _save_traps(self) -> None:
        self.sd.save("traps.json", {"destinations": self.traps})

    def trap_info(self) -> dict:
        return {"destinations": [dict(v) for v in self.traps.values()]}

    async def _push_loop(self) -> None:
        """Push events, signed with this node's password, to every trap destination
        (at least once, in order; the receiver de-duplicates by (node, seq))."""
        from .protocol import HEADER_NODE, sign_request
        import json as _json
        backoff: dict[str, float] = {}
        while not self._stopping:
            await wait_event(self._push_wake, 1.0)
            self._push_wake.clear()
            for url, dest in list(self.traps.items()):
                if backoff.get(url, 0) > time.monotonic():
                    continue
                pending = [e for e in self.events if e["seq"] > dest.get("pushed_seq", 0)][:200]
                if not pending:
                    continue
                body = _json.dumps({"node": self.cfg.name, "hm_ip": self.cfg.hm_ip, "events": pending},
                                   separators=(",", ":")).encode()
                path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
                headers = sign_request(self.cfg.password, "POST", path, body)
                headers[HEADER_NODE] = self.cfg.name
                headers["Content-Type"] = "application/json"
                try:
                    async with self.session.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=3)) as r:
                        if r.status < 300:
                            dest["pushed_seq"] = pending[-1]["seq"]
                            dest["last_error"] = None
                            dest["last_pushed"] = now_iso()
                            backoff.pop(url, None)
                            self._save_traps()
                            self._push_wake.set()
                            continue
                        dest["last_error"] = f"HTTP {r.status}"
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                    dest["last_error"] = str(e) or type(e).__name__
                backoff[url] = time.monotonic() + 2.0

    # ================================================================= info
    def peer_info(self, pr: PairRuntime, *, brief: bool = False) -> dict:
        ha = pr.ha
        names = instance_names(pr.slot)
        primary = self.cfg.role is Role.PRIMARY
        at = ha.allowed_switch_at()
        if ha.state is HAState.FAILOVER_ACTIVE and ha.role is Role.SECONDARY:
            status = EventText.FAILOVER_ACTIVE
        elif ha.phase == "resync":
            status = EventText.NOT_SYNCHRONIZED
        elif ha.phase == "failback":
            status = f"Failback in progress ({pr.sync_percent}% copied)"
        elif ha.phase == "failover":
            status = "Failover in progress"
        elif (primary and pr.replication == "Setting up") or (not primary and not ha.synced):
            status = f"{EventText.SYNC_IN_PROGRESS} ({pr.sync_percent}% complete)"
        elif ha.state in (HAState.PRIMARY_ACTIVE, HAState.SECONDARY_ACTIVE) and ha.heartbeat_up:
            status = EventText.ACTIVE
        else:
            status = ha.state.value
        synced = (pr.replication == "Up") if primary else ha.synced
        return {
            "peer_name": pr.peer["name"], "hm_ip": pr.peer_hm_ip, "vip": pr.vip,
            "version": pr.peer["version"], "udi": pr.peer.get("udi", ""), "device_type": pr.peer.get("device_type", ""),
            "failover_type": ha.config.failover_type.value, "failback_type": ha.config.failback_type.value,
            "failover_wait": ha.config.failover_wait, "stabilisation_seconds": ha.config.stabilisation_seconds,
            "maintenance": ha.config.maintenance,
            "instance_db_name": names["standby_db_name"] if primary else names["secondary_db_name"],
            "instance_db_port": names["standby_db_port"] if primary else names["secondary_db_port"],
            "dataguard_name": names["dataguard_name"], "primary_db_alias": names["primary_db_alias"],
            "direct_connect": pr.direct, "heartbeat": "Up" if ha.heartbeat_up else "Down",
            "mean_heartbeat_ms": pr.mean_ms, "state": ha.state.value, "running": ha.running,
            "in_charge": ha.in_charge, "owner": ha.owner.value, "generation": ha.generation,
            "data_replication": "Up" if synced and ha.heartbeat_up else ("Setting up" if pr.replication == "Setting up" else "Down"),
            "sync_percent": 100 if synced else pr.sync_percent, "status": status,
            "allowed_switch_at": iso(at) if at else None,
            "transitions": [] if brief else [{"at": now_iso(t), "state": s.value} for t, s in ha.transitions],
            "instance": {"db_name": pr.instance.db_name, **pr.instance.digest()},
        }

    def ha_info(self, *, brief: bool = False) -> dict:
        """``brief``: without each pair's state history (the poller's request, 2,000 at a time)."""
        return {
            "node": self.cfg.name, "running": self.services_running, "role": self.cfg.role.value,
            "hm_ip": self.cfg.hm_ip, "vip": self.cfg.vip, "netmask": self.cfg.netmask,
            "version": self.cfg.version, "udi": self.cfg.udi,
            "device_type": self.cfg.device_type, "direct_connect": self.cfg.direct_connect,
            "peers": [self.peer_info(p, brief=brief) for p in self.pairs.values()],
            "generation": max((p.ha.generation for p in self.pairs.values()), default=0),
            "vips_in_charge": sorted(self.desired_vips()),
            "last_seq": self.seq,
            "recovery_mode": self.cfg.recovery,
            "services": self.services_status(),
        }

    def services_status(self) -> list[dict]:
        """The services and their admin / operation status (a secondary's are DORMANT until
        it takes charge): in server-info, and in ha-info for the portal's poller."""
        running = self.services_running
        dormant = self.cfg.role is Role.SECONDARY and not any(p.ha.in_charge for p in self.pairs.values())
        svc = [("Context Aware Service", "8.0.1.79", running and not dormant)] + [
            (n, v, False) for n, v in (("WIPS", "3.0.8155.0"), ("Mobile Concierge Service", "5.0.1.23"),
                                       ("CMX Analytics", "3.0.1.68"), ("CMX Connect & Engage", "1.0.0.29"),
                                       ("HTTP Proxy Service", "1.0.0.1"))]
        return [{"name": n, "version": v, "admin_status": "Enabled" if n == "Context Aware Service" else "Disabled",
                 "operation_status": "Up" if up else "Down"} for n, v, up in svc]

    def server_info(self) -> dict:
        import resource
        running = self.services_running
        dormant = self.cfg.role is Role.SECONDARY and not any(p.ha.in_charge for p in self.pairs.values())
        elements = sum(p.instance.count for p in self.pairs.values()) if self.cfg.role is Role.SECONDARY else (
            self.own_instance.count if self.own_instance else 0)
        limit = ELEMENT_LIMITS.get(self.cfg.device_type, 2000)
        for lic in self.licences:
            try:
                limit = max(limit, int(lic["features"].get("CAS Elements", 0)))
            except (TypeError, ValueError):
                pass
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        db_bytes = sum(f.stat().st_size for f in (self.sd.root / "instances").glob("*.jsonl"))
        return {
            "node": self.cfg.name, "product_name": "Cisco Mobility Service Engine", "version": self.cfg.version,
            "hm_ip": self.cfg.hm_ip, "role": self.cfg.role.value, "ha_role": self.cfg.role.number,
            "hw_version": "V01", "product_identifier": self.cfg.product_identifier, "serial_number": self.cfg.serial,
            "udi": self.cfg.udi, "device_type": self.cfg.device_type, "legacy_port": self.cfg.port,
            "log_level": "INFO", "days_to_keep_events": 2, "session_timeout_mins": 30, "db_backup_days": 2,
            "services_running": running, "dormant": dormant,
            "services": self.services_status(),
            "start_time": now_iso(self.started_at), "current_time": now_iso(), "timezone": self.cfg.timezone,
            "restarts": self.restarts, "used_memory_mb": int(rss_mb), "db_disk_size_mb": round(db_bytes / 1e6, 3),
            "active_sessions": [],
            "trap_destinations": [{"url": v["url"], "last_updated": v.get("last_updated")} for v in self.traps.values()],
            "active_elements": elements, "element_limit": limit, "elements_not_tracked": max(0, elements - limit),
            "licences": [{k: v for k, v in lic.items() if k != "text"} for lic in self.licences],
        }

    def events_since(self, since: int, limit: int) -> dict:
        evs = [e for e in self.events if e["seq"] > since][:limit]
        if not evs and since < self.seq and (not self.events or self.events[0]["seq"] > since + 1):
            evs = [e for e in read_jsonl(self.sd.path("events.jsonl")) if e["seq"] > since][:limit]
        return {"node": self.cfg.name, "last_seq": self.seq, "events": evs}


def pid_alive(pid: int) -> bool:  # pragma: no cover - helper for the CLI
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
