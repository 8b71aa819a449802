"""Taking and releasing a virtual IP.

A driver binds the service API on ``VIP:port`` while this node is in charge of the VIP and
releases it when it is not. Two drivers:

* :class:`LoopbackVipDriver` (default, used in tests): the VIP is a 127.0.0.0/8 address,
  which Linux routes to ``lo`` without set-up. Binding the listener *is* taking the VIP:
  when the owner closes it (or dies), another process can bind the same address at once.
  A bind that fails with "address in use" means somebody still holds the VIP; the node
  retries on its next tick and never serves the VIP meanwhile.

* :class:`IprouteVipDriver` (real deployments, not exercised by the tests): adds the address
  to an interface (``ip addr add VIP/PREFIX dev IFACE``), announces it with gratuitous ARP
  (``arping -U -c 3 -I IFACE VIP``, from iputils), then binds the listener; releasing closes
  the listener and deletes the address. Needs CAP_NET_ADMIN. A killed agent leaves the
  address on the interface: run ``ip addr del`` for every configured VIP at start-up
  (:meth:`cleanup`) before the node decides whether it is in charge.

:class:`VipReconciler` drives the driver, level-triggered: after every change it makes the
bound VIPs equal to what :meth:`Node.desired_vips <nodeagent.node.Node.desired_vips>` says
this node must serve now, releasing first, and retrying a VIP that cannot be taken yet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from .protocol import EventCode

if TYPE_CHECKING:  # types only: node.py imports this module
    from .node import Node
    from .pair import PairRuntime

log = logging.getLogger("nodeagent.vip")


class VipDriver:
    """Interface: bind/release the service listener for a VIP."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.port = port
        self.sites: dict[str, web.TCPSite] = {}

    @property
    def bound(self) -> set[str]:
        return set(self.sites)

    async def bind(self, vip: str, netmask: str | None = None) -> None:
        raise NotImplementedError

    async def release(self, vip: str) -> None:
        raise NotImplementedError

    async def release_all(self) -> None:
        for vip in list(self.sites):
            await self.release(vip)

    async def cleanup(self, vips: list[str]) -> None:
        """Remove leftovers of a previous run (nothing to do on loopback)."""


class LoopbackVipDriver(VipDriver):
    async def bind(self, vip: str, netmask: str | None = None) -> None:
        if vip in self.sites:
            return
        if not ipaddress.IPv4Address(vip).is_loopback:
            raise OSError(f"the loopback VIP driver only binds 127.0.0.0/8 addresses, not {vip}")
        site = web.TCPSite(self.runner, vip, self.port, reuse_address=True, backlog=512)
        await site.start()  # raises OSError (EADDRINUSE) if somebody else still holds it
        self.sites[vip] = site
        log.info("VIP %s:%s taken", vip, self.port)

    async def release(self, vip: str) -> None:
        site = self.sites.pop(vip, None)
        if site is not None:
            await site.stop()
            log.info("VIP %s:%s released", vip, self.port)


class IprouteVipDriver(LoopbackVipDriver):
    """Adds/removes the VIP on a real interface with iproute2 (see module doc)."""

    def __init__(self, runner: web.AppRunner, port: int, interface: str) -> None:
        super().__init__(runner, port)
        self.interface = interface

    async def _run(self, *argv: str, check: bool = True) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if check and proc.returncode != 0:
            raise OSError(f"{' '.join(argv)} failed: {err.decode(errors='replace').strip()}")

    async def bind(self, vip: str, netmask: str | None = None) -> None:
        if vip in self.sites:
            return
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{netmask or '255.255.255.255'}").prefixlen
        await self._run("ip", "addr", "add", f"{vip}/{prefix}", "dev", self.interface)
        await self._run("arping", "-U", "-c", "3", "-I", self.interface, vip, check=False)
        site = web.TCPSite(self.runner, vip, self.port, reuse_address=True)
        await site.start()
        self.sites[vip] = site

    async def release(self, vip: str) -> None:
        site = self.sites.pop(vip, None)
        if site is not None:
            await site.stop()
        await self._run("ip", "addr", "del", f"{vip}/32", "dev", self.interface, check=False)

    async def cleanup(self, vips: list[str]) -> None:
        for vip in vips:
            await self._run("ip", "addr", "del", f"{vip}/32", "dev", self.interface, check=False)


class VipReconciler:
    """Takes and releases the node's VIPs with its driver (``node.vip_driver``, set by the server)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.retry_at: dict[str, float] = {}  # VIP -> monotonic time of the next attempt to take it

    async def reconcile(self) -> None:
        node = self.node
        drv = node.vip_driver
        if drv is None:
            return
        want = node.desired_vips()
        for vip in list(drv.bound - set(want)):
            await drv.release(vip)
            node.emit(
                EventCode.VIP_RELEASED, vip, want.get(vip, (None, None))[1] if vip in want else self.pair_by_vip(vip)
            )
        now = time.monotonic()
        for vip, (mask, pr) in want.items():
            if vip in drv.bound or self.retry_at.get(vip, 0) > now:
                continue
            try:
                await drv.bind(vip, mask)
            except OSError as e:
                self.retry_at[vip] = now + 0.05
                log.warning("%s: cannot take VIP %s yet: %s", node.cfg.name, vip, e)
            else:
                self.retry_at.pop(vip, None)
                node.emit(EventCode.VIP_TAKEN, vip, pr)

    def pair_by_vip(self, vip: str) -> PairRuntime | None:
        for pr in self.node.pairs.values():
            if pr.vip == vip:
                return pr
        return None
