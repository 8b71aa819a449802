"""Trap destinations: where the node pushes its events, and the loop that pushes them.

Each destination remembers the last event it acknowledged (``pushed_seq``, persisted in
``traps.json``); the loop sends what follows, in order and at least once, signed with this
node's password. The receiver de-duplicates by (node, seq).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import aiohttp

from .clock import now_iso
from .protocol import HEADER_NODE, HEADER_PROTOCOL, PROTOCOL_VERSION, sign_request

if TYPE_CHECKING:  # a type only: node.py imports this module
    from .node import Node


class TrapPusher:
    __slots__ = ("node", "destinations", "task", "again")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.destinations: dict[str, dict] = {}  # URL -> {url, last_updated, pushed_seq, last_error, last_pushed}
        self.task: asyncio.Task | None = None  # pushing (only while there is something to push)
        self.again = False  # a new event came while pushing

    def load(self) -> None:
        """The saved destinations; on a first start, the configured ones, from the current event on."""
        node = self.node
        traps = node.sd.load("traps.json", None)
        if traps is None:
            traps = {
                "destinations": {
                    u: {"url": u, "last_updated": now_iso(), "pushed_seq": node.seq} for u in node.cfg.trap_destinations
                }
            }
        self.destinations = traps["destinations"]

    def save(self) -> None:
        self.node.sd.save("traps.json", {"destinations": self.destinations})

    def replace(self, urls: list[str]) -> dict:
        """Set the destinations (checked by the caller); one kept keeps its progress."""
        new = {}
        for u in urls:
            new[u] = self.destinations.get(u) or {"url": u, "last_updated": now_iso(), "pushed_seq": 0}
        self.destinations = new
        self.save()
        self.kick()
        return self.info()

    def info(self) -> dict:
        return {"destinations": [dict(v) for v in self.destinations.values()]}

    def kick(self) -> None:
        """A new event (or new destinations): push it. One task while there is something to
        push or a destination to retry, none while idle (a farm has thousands of nodes)."""
        node = self.node
        if not self.destinations or node.stopping or node.session is None:
            return
        if self.task is not None and not self.task.done():
            self.again = True
            return
        self.task = asyncio.create_task(self.push_all(), name=f"{node.cfg.name}-push")

    async def push_all(self) -> None:
        """Push events, signed with this node's password, to every trap destination
        (at least once, in order; the receiver de-duplicates by (node, seq)); a destination
        that fails is retried after 2 s, until it takes them."""
        node = self.node
        backoff: dict[str, float] = {}
        while not node.stopping:
            self.again = False
            for url, dest in list(self.destinations.items()):
                if backoff.get(url, 0) > time.monotonic():
                    continue
                if await self._push_one(url, dest):
                    backoff.pop(url, None)
                else:
                    backoff[url] = time.monotonic() + 2.0
            pending = [u for u, d in self.destinations.items() if self._pending(d)]
            if not pending and not self.again:
                return
            if not self.again:
                waits = [backoff.get(u, 0) - time.monotonic() for u in pending]
                await asyncio.sleep(max(0.0, min(waits, default=0.0)))

    def _pending(self, dest: dict) -> list:
        return self.node.events.since(dest.get("pushed_seq", 0), 200)

    async def _push_one(self, url: str, dest: dict) -> bool:
        """Push what this destination has not taken yet; False if it failed."""
        node = self.node
        while pending := self._pending(dest):
            body = json.dumps(
                {"protocol": PROTOCOL_VERSION, "node": node.cfg.name, "hm_ip": node.cfg.hm_ip, "events": pending},
                separators=(",", ":"),
            ).encode()
            path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
            headers = sign_request(node.cfg.password, "POST", path, body)
            headers[HEADER_NODE] = node.cfg.name
            headers[HEADER_PROTOCOL] = str(PROTOCOL_VERSION)
            headers["Content-Type"] = "application/json"
            assert node.session is not None, "started"
            try:
                async with node.session.post(
                    url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=3)
                ) as r:
                    if r.status >= 300:
                        dest["last_error"] = f"HTTP {r.status}"
                        return False
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                dest["last_error"] = str(e) or type(e).__name__
                return False
            dest["pushed_seq"] = pending[-1]["seq"]
            dest["last_error"] = None
            dest["last_pushed"] = now_iso()
            self.save()
        return True
