"""The iproute VIP driver on a real interface, in a network namespace the test makes: the
VIP is added with its real prefix and removed with the same prefix, a killed agent's
leftover (whatever its prefix) is removed at start-up, the VIP is announced by gratuitous
ARP, and a release cancels an announcement still running.

Needs root (CAP_NET_ADMIN) and Debian's iputils-arping; skipped otherwise, saying which.
Addresses only in 198.18.0.0/15, inside the namespace; the namespace is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from . import netns
from .agentutil import REPO

pytestmark = [pytest.mark.slow, pytest.mark.netns]

NS = f"mse-vip-{os.getpid()}"
NET = f"198.18.{200 + os.getpid() % 50}"


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=20).stdout


@pytest.fixture
def host():
    """One netns with eth0 (a veth whose peer stays inside too, so the link is up)."""
    netns.require()  # skips saying what is missing; fails instead where it must run (CI)
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        sh("ip", "-n", NS, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        for dev in ("eth0", "peer0"):
            sh("ip", "-n", NS, "link", "set", dev, "up")
        sh("ip", "-n", NS, "addr", "add", f"{NET}.2/24", "dev", "eth0")
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from aiohttp import web
    from nodeagent.vip import IprouteVipDriver

    VIP = sys.argv[1]

    async def main():
        runner = web.AppRunner(web.Application())
        await runner.setup()
        drv = IprouteVipDriver(runner, 18001, "eth0", announce_count=30)
        out = {}
        await drv._run("ip", "addr", "add", f"{VIP}/32", "dev", "eth0")   # a killed agent's leftover
        out["leftover"] = await drv.entries(VIP)
        await drv.cleanup([VIP])
        out["after_cleanup"] = await drv.entries(VIP)
        await drv.bind(VIP, "255.255.255.0")
        out["bound"] = await drv.entries(VIP)
        reader, writer = await asyncio.open_connection(VIP, 18001)         # it listens on the VIP
        writer.close()
        await asyncio.sleep(0.3)
        out["announcing"] = not drv.announcing[VIP].done()                  # arping still sending
        await drv.release(VIP)                                              # cancels it, same prefix
        out["released"] = await drv.entries(VIP)
        try:
            await asyncio.open_connection(VIP, 18001)
            out["still_listening"] = True
        except OSError:
            out["still_listening"] = False
        await runner.cleanup()
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def test_the_vip_goes_on_with_its_prefix_comes_off_with_it_and_leftovers_are_removed(host):
    # given a host with eth0, and a VIP left on it by a killed agent (as /32)
    vip = f"{NET}.11"
    run = subprocess.run(
        ["ip", "netns", "exec", host, sys.executable, "-c", SCRIPT, vip],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    # then start-up removed the leftover, whatever its prefix
    assert out["leftover"] == [["eth0", 32]] and out["after_cleanup"] == []
    # taking it adds the pair's real prefix, listens on it and announces it
    assert out["bound"] == [["eth0", 24]] and out["announcing"] is True
    # releasing it removes that same entry (not a /32 that is not there), stops listening
    # and stops the announcement: the node never announces a VIP it gave up
    assert out["released"] == [] and out["still_listening"] is False
    left = [pid for pid in sh("ip", "netns", "pids", host).split() if _comm(pid) == "arping"]
    assert left == [], "an arping of the released VIP is still running in the namespace"


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
