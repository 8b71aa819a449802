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
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from . import netns
from .agentutil import REPO

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.serial]

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


HOLD = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from aiohttp import web
    from nodeagent.vip import IprouteVipDriver

    VIP = sys.argv[1]

    async def main():
        runner = web.AppRunner(web.Application())
        await runner.setup()
        drv = IprouteVipDriver(runner, 18001, "eth0", announce_count=1)
        drv.lifetime_of = lambda vip: 1
        woken = []
        drv.on_expired = lambda: woken.append(time.monotonic())
        out = {}
        # a stalled agent (its loop blocked for most of the lifetime) does not renew late
        await drv.bind(VIP, "255.255.255.0")
        await asyncio.sleep(0.1)
        time.sleep(0.9)
        await asyncio.sleep(0.5)
        out["stalled"] = {"expired": sorted(drv.expired), "woken": len(woken)}
        await drv.release(VIP)
        out["released"] = await drv.entries(VIP)
        # a running agent keeps its address: renewed every third of the lifetime
        await drv.bind(VIP, "255.255.255.0")
        await asyncio.sleep(3.0)
        out["kept"] = await drv.entries(VIP)
        out["expired_while_running"] = sorted(drv.expired)
        print(json.dumps(out), flush=True)
        await asyncio.sleep(60)  # killed here by the test

    asyncio.run(main())
    """
)


def _vip_entries(host: str, vip: str) -> list[dict]:
    shown = json.loads(sh("ip", "-n", host, "-j", "-4", "addr", "show", "dev", "eth0") or "[]")
    return [a for link in shown for a in link.get("addr_info", []) if a.get("local") == vip]


def test_the_vip_address_is_a_lease_a_killed_agents_host_drops_it_by_itself(host):
    # given an agent holding the VIP with a 1 s address lifetime (a wait of 3 s)
    vip = f"{NET}.11"
    p = subprocess.Popen(
        ["ip", "netns", "exec", host, sys.executable, "-c", HOLD, vip],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = p.stdout.readline()
        assert line, p.stderr.read() if p.poll() is not None else "no output"
        out = json.loads(line)
        # a renewal due after the agent was stalled for most of the lifetime is not made:
        # the VIP is marked expired and the node's loop woken (the reconciler releases it)
        assert out["stalled"] == {"expired": [vip], "woken": 1}, out
        assert out["released"] == []
        # while the agent runs, the address stays (renewed), with a lifetime of at most 1 s
        assert out["kept"] == [["eth0", 24]] and out["expired_while_running"] == []
        left = _vip_entries(host, vip)
        assert left and left[0]["valid_life_time"] <= 1, left
        # when the agent is SIGKILLed, nothing renews it: the kernel deletes the address, so
        # the dead agent's host stops answering ARP for the VIP without anybody's help
        t_kill = time.monotonic()
        os.kill(p.pid, signal.SIGKILL)
        p.wait(5)
        assert netns.wait_for(lambda: not _vip_entries(host, vip), 4.0), _vip_entries(host, vip)
        gone = time.monotonic() - t_kill
        print(f"\n[vip] address lifetime 1 s: the killed agent's VIP left its host {gone:.2f} s after the kill")
        assert gone < 3.0, f"the killed agent's VIP stayed {gone:.2f} s (wait 3 s)"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
