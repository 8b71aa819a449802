"""Heartbeats between the nodes of a pair.

The secondary heartbeats each primary it backs (:meth:`Heartbeats.loop`, one task per
pair); the primary answers from :meth:`Heartbeats.peer_heartbeat` with its own side. Both
fold what they hear into the pair's state machine with :meth:`Heartbeats.absorb`.
:meth:`Heartbeats.peer_msg` is the envelope of every peer message (heartbeats, commands,
snapshots): this node's view of the pair, its instance digest, slot and response time.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from .errors import ApiError
from .hastate import PeerView
from .protocol import PATH_PEER_COMMAND, PATH_PEER_HEARTBEAT, Cause, EventCode, HeartbeatPath, PeerCommand, Role

PATH_NAMES = {HeartbeatPath.HM: "Health Monitor network", HeartbeatPath.DIRECT: "direct-connect link"}

if TYPE_CHECKING:  # types only: node.py imports this module
    from .node import Node
    from .pair import PairRuntime


class Heartbeats:
    def __init__(self, node: Node) -> None:
        self.node = node

    def start(self, pr: PairRuntime) -> None:
        """Start a pair's heartbeat tasks, one per path (a secondary's only; the primary answers)."""
        node = self.node
        if node.cfg.role is Role.SECONDARY and not pr.hb_tasks:
            pr.hb_tasks = [
                asyncio.create_task(self.loop(pr, path), name=f"{node.cfg.name}-hb-{path.value}-{pr.peer_hm_ip}")
                for path in pr.paths
            ]

    def peer_msg(self, pr: PairRuntime, **extra: Any) -> dict[str, Any]:
        """A ``protocol.PeerMessage``; a command carries the cause driving the pair, so the
        peer's events name it too."""
        cfg = self.node.cfg
        msg: dict[str, Any] = {
            "from": cfg.hm_ip,
            "name": cfg.name,
            "view": pr.ha.view().to_dict(),
            "digest": pr.instance.digest(),
            "slot": pr.slot,
            "mean_ms": pr.mean_ms,
            **extra,
        }
        if "cmd" in extra and "cause" not in extra:
            msg["cause"] = pr.cause
        return msg

    def absorb(self, pr: PairRuntime, msg: dict) -> None:
        view = PeerView.from_dict(msg["view"])
        pr.peer_view = view
        pr.peer_digest = msg.get("digest") or {}
        if msg.get("mean_ms") is not None and pr.ha.role is Role.PRIMARY:
            pr.peer_mean_ms = msg["mean_ms"]
        if pr.ha.role is Role.PRIMARY and msg.get("slot"):
            pr.slot = int(msg["slot"])
        self.node.record(pr.ha.on_heartbeat(time.time(), view), pr)

    async def loop(self, pr: PairRuntime, path: HeartbeatPath) -> None:
        """The secondary heartbeats each primary on one path; the answer carries the primary's side.
        Either path's heartbeats keep the pair alive: losing one is an event, not a failover."""
        node = self.node
        while not node.stopping:
            interval = pr.ha.config.heartbeat_interval
            started = time.monotonic()
            client = pr.client(timeout=max(0.2, min(1.0, interval * 2)), path=path)
            msg = self.peer_msg(pr, path=path.value)
            try:
                t0 = time.monotonic()  # the response time: from sending the heartbeat to its answer
                status, out = await client.request("POST", PATH_PEER_HEARTBEAT, msg, auto_key=False)
                rtt = time.monotonic() - t0
                if status == 200 and isinstance(out, dict) and "view" in out:
                    pr.path_heard[path] = time.time()
                    pr.rtts.append(rtt)
                    node.counters["heartbeats_sent"] += 1
                    self.absorb(pr, out)
                    node.schedule(pr)
                    node.changed()
                else:
                    # an answer, but not a heartbeat (e.g. 404 "not paired" while the pair is
                    # being deleted): the peer is alive, so it must not be taken over
                    pr.ha.peer_alive(time.time())
                    node.counters["heartbeats_failed"] += 1
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError):
                node.counters["heartbeats_failed"] += 1
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    def watch_paths(self, pr: PairRuntime, now: float) -> None:
        """A pair with two paths: one going quiet while the other still carries heartbeats is
        an event (and the portal's alert), never a failover; its return is one too. (Both
        quiet is "Heartbeats lost", which the state machine records.)"""
        if len(pr.paths) < 2 or not (pr.ha.running and pr.ha.heartbeat_up):
            return
        for path in pr.paths:
            up, shown = pr.path_up(path, now), pr.path_shown_up.get(path)
            if shown is None:
                if up:
                    pr.path_shown_up[path] = True
            elif shown and not up:
                pr.path_shown_up[path] = False
                others = ", ".join(PATH_NAMES[p] for p in pr.paths if p is not path and pr.path_up(p, now))
                self.node.emit(
                    EventCode.HEARTBEAT_PATH_DOWN,
                    f"No heartbeats on the {PATH_NAMES[path]} for "
                    f"{pr.ha.config.heartbeat_down_after:g} s; the {others} still carries them: no failover.",
                    pr,
                )
            elif not shown and up:
                pr.path_shown_up[path] = True
                self.node.emit(EventCode.HEARTBEAT_PATH_UP, f"Heartbeats on the {PATH_NAMES[path]} again.", pr)

    def peer_heartbeat(self, body: dict) -> dict:
        """The peer heartbeat endpoint (the primary's side): absorb, answer with ours."""
        node = self.node
        pr = node.pair_from(body)
        try:
            path = HeartbeatPath(body.get("path", HeartbeatPath.HM.value))
        except ValueError:
            raise ApiError(400, f"unknown heartbeat path {body.get('path')!r}") from None
        self.absorb(pr, body)
        pr.path_heard[path] = time.time()
        node.schedule(pr)
        node.changed()
        return self.peer_msg(pr)

    async def tell_stopping(self, pr: PairRuntime, cause: Cause | None = None) -> None:
        """Stopping by hand or on SIGTERM: an immediate heartbeat, so the peer knows at once."""
        msg = self.peer_msg(pr, cmd=PeerCommand.HEARTBEAT_NOW.value, cause=cause)
        try:
            await pr.client(timeout=0.5).request("POST", PATH_PEER_COMMAND, msg, auto_key=False)
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
