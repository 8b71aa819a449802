"""Takeover hooks: the operator's scripts run when this node takes charge of a pair.

``pre_takeover`` runs once the takeover is decided and before the VIP is taken, and is
awaited for at most the node's ``hook_timeout`` seconds (then killed): the place to fence
the old primary (a power switch, a switch port) or to tell a load balancer. Its outcome does
not stop the takeover: a failover that a script could veto would leave the VIP unserved
whenever the script is broken. ``post_takeover`` runs once the VIP is held, and is not
awaited. Each run is an event (``hook_ran``): which hook, its exit status or that it timed
out or could not start, how long it took, and the first line it wrote.

A hook is run with no shell, no stdin, its name as its only argument and an environment of
its own: ``MSE_HOOK``, ``MSE_NODE``, ``MSE_ROLE``, ``MSE_PEER``, ``MSE_PEER_HM_IP``,
``MSE_VIP``, ``MSE_GENERATION`` (and PATH=/usr/sbin:/usr/bin:/sbin:/bin).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import TYPE_CHECKING

from .protocol import EventCode

if TYPE_CHECKING:
    from .node import Node
    from .pair import PairRuntime

log = logging.getLogger("nodeagent.hooks")
OUTPUT_KEPT = 200  # characters of a hook's first line kept in its event


async def run_hook(node: Node, name: str, pr: PairRuntime) -> None:
    """Run the node's ``name`` hook, if it has one, and record how it went."""
    path = node.cfg.hooks.get(name)
    if not path:
        return
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "MSE_HOOK": name,
        "MSE_NODE": node.cfg.name,
        "MSE_ROLE": node.cfg.role.value,
        "MSE_PEER": str(pr.peer.get("name", "")),
        "MSE_PEER_HM_IP": pr.peer_hm_ip,
        "MSE_VIP": pr.vip or "",
        "MSE_GENERATION": str(pr.ha.generation),
    }
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            path,
            name,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        outcome = f"could not start {path}: {e.strerror or e}"
        log.warning("%s: %s hook %s", node.cfg.name, name, outcome)
        node.emit(EventCode.HOOK_RAN, f"{name}: {outcome}", pr)
        return
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=node.cfg.hook_timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the script and what it started (its own session)
        await proc.wait()
        outcome = f"timed out after {node.cfg.hook_timeout:g} s, killed"
    else:
        took = time.monotonic() - started
        first = out.decode(errors="replace").strip().splitlines()[0][:OUTPUT_KEPT] if out.strip() else ""
        outcome = f"exit {proc.returncode} in {took:.2f} s" + (f": {first}" if first else "")
    log.info("%s: %s hook: %s", node.cfg.name, name, outcome)
    node.emit(EventCode.HOOK_RAN, f"{name}: {outcome}", pr)


def start_hook(node: Node, name: str, pr: PairRuntime) -> None:
    """``run_hook`` in the background (``post_takeover``: the takeover does not wait for it)."""
    if not node.cfg.hooks.get(name):
        return
    task = asyncio.create_task(run_hook(node, name, pr), name=f"{node.cfg.name}-{name}")
    node._tasks.append(task)
    task.add_done_callback(node._tasks.remove)
