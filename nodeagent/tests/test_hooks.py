"""Takeover hooks: the operator's scripts, run by a real secondary as it takes over (real
processes, real events): pre_takeover awaited before the VIP is taken, post_takeover once
it is held, each recorded with its outcome; one that hangs is killed at hook_timeout and the
takeover goes on; one that cannot start says why."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import aiohttp

from nodeagent import protocol as P
from nodeagent.client import AgentClient
from nodeagent.config import parse_fleet
from nodeagent.node import Node
from nodeagent.server import NodeServer

from .agentutil import free_subnet
from .test_server import pair_up, until

SCRIPT = """#!/bin/sh
echo "$1 $MSE_HOOK $MSE_NODE $MSE_ROLE $MSE_PEER $MSE_PEER_HM_IP $MSE_VIP $MSE_GENERATION" >> {log}
{extra}
echo "hello from $1"
"""


def script(tmp_path, name: str, extra: str = "") -> str:
    path = tmp_path / f"{name}.sh"
    path.write_text(SCRIPT.format(log=tmp_path / "hooks.log", extra=extra))
    path.chmod(0o755)
    return str(path)


@asynccontextmanager
async def paired(tmp_path, *, prim: dict | None = None, sec: dict | None = None, **pair):
    """A primary and a secondary in this process (``prim`` / ``sec``: more of their fleet
    keys), paired: (net, nodes, clients)."""
    net = free_subnet()
    fleet = parse_fleet({"node": [
        {"name": "prim", "type": "3355", "version": "8.0.110.0", "role": "primary", "hm_ip": f"{net}.2",
         "vip": f"{net}.1", "netmask": "255.255.255.0", "password": "pw-prim", **(prim or {})},
        {"name": "sec", "type": "3355", "version": "8.0.110.0", "role": "secondary", "hm_ip": f"{net}.3",
         "password": "pw-sec", **(sec or {})},
    ]})  # fmt: skip
    servers = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        try:
            for name in ("prim", "sec"):
                node = Node(fleet.nodes[name], tmp_path / name, session=session, allow_short_wait=True)
                node.load([])
                srv = NodeServer(node)
                await srv.start()
                servers.append(srv)
            nodes = {s.node.cfg.name: s.node for s in servers}
            clients = {n: AgentClient(session, node.cfg.hm_ip, node.cfg.password) for n, node in nodes.items()}
            await pair_up(nodes, clients, **pair)
            yield net, nodes, clients
        finally:
            for s in servers:
                await s.close()


async def takeover(tmp_path, hooks: dict, hook_timeout: float = 10.0):
    """The switchover of a pair whose secondary has ``hooks``: the secondary's events."""
    async with paired(tmp_path, sec={"hooks": hooks, "hook_timeout": hook_timeout}) as (net, nodes, clients):
        asked = time.monotonic()
        status, out = await clients["prim"].request("POST", P.PATH_FAILOVER, {})
        assert status == 202, out
        sec = nodes["sec"]
        await until(lambda: f"{net}.1" in sec.vip_driver.bound, 15, "the VIP taken")
        took = time.monotonic() - asked
        await until(lambda: len([e for e in sec.events if e["code"] == "hook_ran"]) >= len(hooks), 10,
                    "the hooks' events")  # fmt: skip
        await asyncio.sleep(0.1)
        return list(sec.events), took, f"{net}.1", f"{net}.2"


def test_the_takeover_hooks_run_in_order_with_what_they_need_and_are_recorded(tmp_path):
    hooks = {"pre_takeover": script(tmp_path, "pre"), "post_takeover": script(tmp_path, "post")}
    events, _took, vip, prim_ip = asyncio.run(takeover(tmp_path, hooks))
    lines = (tmp_path / "hooks.log").read_text().splitlines()
    assert lines == [
        f"pre_takeover pre_takeover sec secondary prim {prim_ip} {vip} 1",  # before: the old generation
        f"post_takeover post_takeover sec secondary prim {prim_ip} {vip} 2",  # after: it holds the VIP
    ]
    codes = [e["code"] for e in events]
    # pre before the takeover's events, post after the VIP is taken
    assert codes.index("hook_ran") < codes.index("failover_active") < codes.index("vip_taken")
    ran = [e["remarks"] for e in events if e["code"] == "hook_ran"]
    assert ran[0].startswith("pre_takeover: exit 0 in ") and ran[0].endswith(": hello from pre_takeover")
    assert ran[1].startswith("post_takeover: exit 0 in ") and codes.index("vip_taken") < len(codes) - 1


def test_a_hook_that_hangs_is_killed_at_its_timeout_and_the_takeover_goes_on(tmp_path):
    hooks = {"pre_takeover": script(tmp_path, "hang", extra="sleep 60")}
    events, took, _vip, _ip = asyncio.run(takeover(tmp_path, hooks, hook_timeout=1))
    ran = [e["remarks"] for e in events if e["code"] == "hook_ran"]
    assert ran == ["pre_takeover: timed out after 1 s, killed"]
    assert "failover_active" in [e["code"] for e in events] and took < 5


def test_a_hook_that_cannot_start_says_why_and_the_takeover_goes_on(tmp_path):
    missing = str(tmp_path / "no-such-script")
    events, _took, _vip, _ip = asyncio.run(takeover(tmp_path, {"pre_takeover": missing}))
    ran = [e["remarks"] for e in events if e["code"] == "hook_ran"]
    assert ran == [f"pre_takeover: could not start {missing}: No such file or directory"]
    assert "failover_active" in [e["code"] for e in events]


def test_a_primary_given_the_pair_back_by_a_failback_runs_its_post_takeover_hook(tmp_path):
    async def go():
        hooks = {"hooks": {"post_takeover": script(tmp_path, "back")}}
        async with paired(tmp_path, prim=hooks, stabilisation_seconds=1) as (net, nodes, clients):
            prim, sec = nodes["prim"], nodes["sec"]
            status, out = await clients["prim"].request("POST", P.PATH_FAILOVER, {})
            assert status == 202, out
            await until(lambda: f"{net}.1" in sec.vip_driver.bound, 15, "the secondary holds the VIP")
            assert not (tmp_path / "hooks.log").exists()  # the primary's hook: not on losing it
            status, out = await clients["prim"].request("POST", P.PATH_SERVICES_START, {})
            assert status == 200, out
            pr = next(iter(prim.pairs.values()))
            await until(lambda: pr.ha.state.value == "TERMINATED", 15, "the primary back as TERMINATED")

            async def failed_back():
                st, _ = await clients["prim"].request("POST", P.PATH_FAILBACK, {})
                return st == 202

            await until(failed_back, 15, "a failback accepted (after the 1 s stabilisation)")
            await until(lambda: f"{net}.1" in prim.vip_driver.bound, 20, "the primary holds the VIP again")
            await until(lambda: any(e["code"] == "hook_ran" for e in prim.events), 10, "its hook's event")
            ran = [e["remarks"] for e in prim.events if e["code"] == "hook_ran"]
            assert len(ran) == 1 and ran[0].startswith("post_takeover: exit 0 in ")
            line = (tmp_path / "hooks.log").read_text().splitlines()
            assert line == [f"post_takeover post_takeover prim primary sec {net}.3 {net}.1 {pr.ha.generation}"]

    asyncio.run(go())
