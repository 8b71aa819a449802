"""Taking and releasing a virtual IP.

A driver binds the service API on ``VIP:port`` while this node is in charge of the VIP and
releases it when it is not. Two drivers:

* :class:`LoopbackVipDriver` (default, used in tests): the VIP is a 127.0.0.0/8 address,
  which Linux routes to ``lo`` without set-up. Binding the listener *is* taking the VIP:
  when the owner closes it (or dies), another process can bind the same address at once.
  A bind that fails with "address in use" means somebody still holds the VIP; the node
  retries on its next tick and never serves the VIP meanwhile.

* :class:`IprouteVipDriver` (``vip_driver = "iproute"``, real interfaces; tested on hosts
  in network namespaces): the address on the Health Monitor interface with its real prefix,
  announced by gratuitous ARP, removed with the same prefix; leftovers of a killed agent
  removed at start-up before the node decides whether it is in charge. The address is a
  lease too: added with a short kernel lifetime that the running agent keeps renewing, so
  the host of a killed or frozen agent stops answering ARP for the VIP on its own, before
  the secondary's wait ends.

:class:`VipReconciler` drives the driver, level-triggered: after every change it makes the
bound VIPs equal to what :meth:`Node.desired_vips <nodeagent.node.Node.desired_vips>` says
this node must serve now, releasing first, and retrying a VIP that cannot be taken yet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import shutil
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .protocol import EventCode
from .tlsport import TlsOnlySite

if TYPE_CHECKING:  # types only: node.py imports this module
    from .node import Node
    from .pair import PairRuntime

log = logging.getLogger("nodeagent.vip")


class VipDriver:
    """Interface: bind/release the service listener for a VIP."""

    def __init__(
        self, runner: web.AppRunner, port: int, *, ssl_context: Callable[[], ssl.SSLContext] | None = None
    ) -> None:
        self.runner = runner
        self.port = port
        # the node's certificate: the service API on a VIP speaks HTTPS too (a client that
        # sends a password checks it: the portal's drill probe pins it), and plain HTTP
        self.ssl_context = ssl_context
        self.sites: dict[str, web.BaseSite] = {}
        # told when a VIP is taken or released (the server maps the VIP to its node)
        self.taken: Callable[[str, bool], None] = lambda vip, taken: None

    @property
    def bound(self) -> set[str]:
        return set(self.sites)

    async def bind(self, vip: str, netmask: str | None = None) -> None:
        raise NotImplementedError

    def site_for(self, vip: str) -> web.BaseSite:
        if self.ssl_context is None:
            return web.TCPSite(self.runner, vip, self.port, reuse_address=True, backlog=512)
        return TlsOnlySite(self.runner, vip, self.port, ssl_context=self.ssl_context, backlog=512, plain=True)

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
        site = self.site_for(vip)
        await site.start()  # raises OSError (EADDRINUSE) if somebody else still holds it
        self.sites[vip] = site
        log.info("VIP %s:%s taken", vip, self.port)

    async def release(self, vip: str) -> None:
        site = self.sites.pop(vip, None)
        if site is not None:
            await site.stop()
            log.info("VIP %s:%s released", vip, self.port)


class IprouteVipDriver(VipDriver):
    """The VIP on a real interface with iproute2 (needs CAP_NET_ADMIN):

    * taking it: remove any entry of the address left on an interface, ``ip addr add
      VIP/PREFIX dev IFACE`` with the pair's real prefix, listen on it, then announce it with
      gratuitous ARP (``arping -U``, in the background: serving does not wait for it, and a
      release cancels an announcement still running, so a node that stepped down never
      announces the VIP again);
    * releasing it: stop listening first (nothing acknowledged after this), then ``ip addr
      del`` with the same prefix it was added with, and check it is gone — a release that
      leaves the address behind raises, and the reconciler retries it;
    * while it holds it: the address has a kernel lifetime (``valid_lft``, :attr:`lifetime_of`
      seconds: the node gives a third of the pair's wait) that a task renews every third of
      it. An agent that dies (SIGKILL, OOM) or freezes stops renewing, and its kernel deletes
      the address by itself well before the secondary takes over: no host answers ARP for a
      VIP its agent no longer serves. A renewal that comes too late (this agent itself was
      stalled for nearly the lifetime) is not made: the VIP is marked :attr:`expired` and the
      reconciler releases it and waits before taking it again, so a node waking from a freeze
      first learns whether the other one took over;
    * at start-up (:meth:`cleanup`, before the node decides whether it is in charge): every
      entry of a configured VIP on any interface, whatever its prefix, is removed.
    """

    def __init__(
        self,
        runner: web.AppRunner,
        port: int,
        interface: str,
        *,
        announce_count: int = 3,
        reannounce_seconds: float = 10.0,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        super().__init__(runner, port, ssl_context=ssl_context)
        self.interface = interface
        self.announce_count = announce_count
        # while it holds the VIP, the node re-announces it now and then: a killed agent's host
        # keeps the address (and its kernel answers ARP) until its agent starts again
        self.reannounce_seconds = reannounce_seconds
        # asked before every re-announcement (the node sets it): a node woken from a freeze
        # must not announce a VIP that another node may own by now
        self.may_announce: Callable[[str], bool] = lambda vip: True
        # the address's kernel lifetime, seconds (the node sets it: a third of the pair's wait)
        self.lifetime_of: Callable[[str], int] = lambda vip: 10
        self.on_expired: Callable[[], None] = lambda: None  # the node wakes its loop
        self.expired: set[str] = set()  # held, but its renewal came too late: the reconciler releases it
        self.keeping: dict[str, asyncio.Task] = {}
        self.prefixes: dict[str, int] = {}
        self.announcing: dict[str, asyncio.Task] = {}
        self.stale: set[str] = set()  # released, but the address could not be removed yet: retried
        for tool, package in (("ip", "iproute2"), ("arping", "iputils-arping")):
            if shutil.which(tool) is None:
                raise OSError(f"the iproute VIP driver needs {tool!r} (Debian: apt-get install {package})")

    async def _run(self, *argv: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise OSError(f"{' '.join(argv)} failed: {err.decode(errors='replace').strip()}")
        return out.decode(errors="replace")

    async def entries(self, vip: str) -> list[tuple[str, int]]:
        """(interface, prefix) of every entry of ``vip`` on this host."""
        shown = json.loads(await self._run("ip", "-j", "-4", "addr", "show") or "[]")
        return [
            (link["ifname"], int(info["prefixlen"]))
            for link in shown
            for info in link.get("addr_info", [])
            if info.get("local") == vip
        ]

    async def _remove_everywhere(self, vip: str) -> None:
        for ifname, prefix in await self.entries(vip):
            await self._run("ip", "addr", "del", f"{vip}/{prefix}", "dev", ifname)
        left = await self.entries(vip)
        if left:
            raise OSError(f"VIP {vip} is still on {', '.join(f'{i} (/{p})' for i, p in left)} after ip addr del")

    async def bind(self, vip: str, netmask: str | None = None) -> None:
        if vip in self.sites:
            return
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{netmask or '255.255.255.255'}").prefixlen
        await self._remove_everywhere(vip)  # a leftover with another prefix would survive a release
        self.stale.discard(vip)
        self.expired.discard(vip)
        lifetime = max(1, int(self.lifetime_of(vip)))
        t_added = time.monotonic()
        await self._run("ip", "addr", "add", f"{vip}/{prefix}", "dev", self.interface, *self._lft(lifetime))
        self.prefixes[vip] = prefix
        site = self.site_for(vip)
        try:
            await site.start()
        except OSError:
            await self._remove_everywhere(vip)
            self.prefixes.pop(vip, None)
            raise
        self.sites[vip] = site
        self.keeping[vip] = asyncio.create_task(self._keep(vip, prefix, lifetime, t_added), name=f"lft-{vip}")
        self.announcing[vip] = asyncio.create_task(self._announce(vip), name=f"arping-{vip}")
        log.info("VIP %s/%s taken on %s (address lifetime %s s, renewed)", vip, prefix, self.interface, lifetime)

    @staticmethod
    def _lft(lifetime: int) -> tuple[str, ...]:
        return ("valid_lft", str(lifetime), "preferred_lft", str(lifetime))

    async def _keep(self, vip: str, prefix: int, lifetime: int, renewed: float) -> None:
        """Renew the address's lifetime every third of it. A renewal due later than the
        lifetime allows (less than a quarter second left: this agent was stalled) is not
        made: the address may be gone already, and another node may own the VIP by now."""
        while True:
            await asyncio.sleep(lifetime / 3)
            now = time.monotonic()
            if now - renewed > lifetime - 0.25:
                log.warning("VIP %s: address lifetime renewal %.1f s late (the agent was stalled)", vip,
                            now - renewed - lifetime / 3)  # fmt: skip
                self.expired.add(vip)
                self.on_expired()
                return
            try:
                await self._run("ip", "addr", "change", f"{vip}/{prefix}", "dev", self.interface, *self._lft(lifetime))
            except OSError as e:
                log.warning("VIP %s: cannot renew the address lifetime: %s", vip, e)
                continue
            renewed = now

    async def _announce(self, vip: str) -> None:
        """Gratuitous ARP: the LAN's neighbours now send the VIP's traffic to this MAC; then
        once every ``reannounce_seconds`` while this node holds it (cancelled on release)."""
        await self._arping(vip, self.announce_count)
        while True:
            await asyncio.sleep(self.reannounce_seconds)
            if self.may_announce(vip):
                await self._arping(vip, 1)

    async def _arping(self, vip: str, count: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            "arping",
            "-U",
            "-c",
            str(count),
            "-I",
            self.interface,
            vip,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, err = await proc.communicate()
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode not in (0, 1):  # 1: no reply, which an unsolicited ARP never gets
            log.warning("arping for VIP %s failed: %s", vip, err.decode(errors="replace").strip())

    async def release(self, vip: str) -> None:
        for task in (self.announcing.pop(vip, None), self.keeping.pop(vip, None)):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        site = self.sites.pop(vip, None)
        if site is not None:
            await site.stop()  # first: nothing is acknowledged on the VIP from here on
        prefix = self.prefixes.pop(vip, None)
        if prefix is not None:
            try:
                await self._run("ip", "addr", "del", f"{vip}/{prefix}", "dev", self.interface)
            except OSError as e:
                log.warning("%s; looking for the VIP on every interface", e)
        try:
            await self._remove_everywhere(vip)
        except OSError:
            self.stale.add(vip)
            raise
        self.stale.discard(vip)
        self.expired.discard(vip)
        log.info("VIP %s released from %s", vip, self.interface)

    @property
    def bound(self) -> set[str]:
        return set(self.sites) | self.stale

    async def cleanup(self, vips: list[str]) -> None:
        for vip in dict.fromkeys(vips):
            await self._remove_everywhere(vip)


class VipReconciler:
    """Takes and releases the node's VIPs with its driver (``node.vip_driver``, set by the server)."""

    __slots__ = ("node", "lock", "retry_at")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.retry_at: dict[str, float] = {}  # VIP -> monotonic time of the next attempt to take it
        # one reconcile at a time: a driver's bind/release wait on subprocesses, and two
        # interleaved passes could remove the address the other just added
        self.lock = asyncio.Lock()

    def needed(self) -> bool:
        """Would a pass change anything now? (Cheap: every step of every node asks.)"""
        drv = self.node.vip_driver
        if drv is None:
            return False
        if getattr(drv, "expired", None):
            return True
        want = self.node.desired_vips()
        bound = drv.bound
        if any(vip not in want for vip in bound):
            return True
        now = time.monotonic()
        return any(vip not in bound and self.retry_at.get(vip, 0) <= now for vip in want)

    async def reconcile(self) -> None:
        async with self.lock:
            await self._reconcile()

    async def _reconcile(self) -> None:
        node = self.node
        drv = node.vip_driver
        if drv is None:
            return
        want = node.desired_vips()
        now = time.monotonic()
        for vip in list(getattr(drv, "expired", ())):
            # its address lifetime ran out: this agent was stalled (frozen) for about a third of
            # the wait. Release it, and before taking it again give the node the time to hear
            # whether its peer took over meanwhile (a fenced primary does not want it at all)
            drv.taken(vip, False)
            try:
                await drv.release(vip)
            except OSError as e:
                log.error("%s: VIP %s not fully released yet: %s", node.cfg.name, vip, e)
                continue
            pr = self.pair_by_vip(vip)
            hold = pr.ha.config.heartbeat_down_after if pr else 1.0
            self.retry_at[vip] = now + hold
            node.emit(EventCode.VIP_RELEASED, f"{vip}: the address lifetime ran out (the agent was stalled)", pr)
        for vip in list(drv.bound - set(want)):
            try:
                await drv.release(vip)
            except OSError as e:  # not listening any more, but the address is still there: retried
                drv.taken(vip, False)
                log.error("%s: VIP %s not fully released yet: %s", node.cfg.name, vip, e)
                continue
            drv.taken(vip, False)
            node.emit(EventCode.VIP_RELEASED, vip, self.pair_by_vip(vip))
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
                drv.taken(vip, True)
                node.emit(EventCode.VIP_TAKEN, vip, pr)

    def pair_by_vip(self, vip: str) -> PairRuntime | None:
        for pr in self.node.pairs.values():
            if pr.vip == vip:
                return pr
        return None
