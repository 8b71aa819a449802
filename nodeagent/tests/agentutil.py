"""Helpers for tests that run real nodes: free loopback subnets, fleet files, processes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from nodeagent.client import AgentClient

REPO = Path(__file__).resolve().parents[2]
PORT = 8001


def free_subnet() -> str:
    """A 127.X.Y.0/24 where nothing listens on .1-.40 port 8001 (random, so tests don't collide)."""
    rnd = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        net = f"127.{rnd.randint(100, 250)}.{rnd.randint(1, 250)}"
        if all(port_free(f"{net}.{i}") for i in (1, 2, 3, 4, 5, 6, 7, 8)):
            return net
    raise RuntimeError("no free loopback subnet")


def port_free(host: str, port: int = PORT) -> bool:
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def node_toml(name, type_, role, hm_ip, password, vip=None, direct_connect=None, version="8.0.110.0"):
    lines = [
        "[[node]]",
        f'name = "{name}"',
        f'type = "{type_}"',
        f'version = "{version}"',
        f'role = "{role}"',
        f'hm_ip = "{hm_ip}"',
        f'password = "{password}"',
    ]
    if vip:
        lines += [f'vip = "{vip}"', 'netmask = "255.255.255.0"']
    if direct_connect:
        lines.append(f'direct_connect = "{direct_connect}"')
    return "\n".join(lines) + "\n"


def pair_toml(primary, secondary, failover="Automatic", failback="Manual", wait=3, stab=1800):
    return (
        f'[[pair]]\nprimary = "{primary}"\nsecondary = "{secondary}"\nfailover_type = "{failover}"\n'
        f'failback_type = "{failback}"\nfailover_wait = {wait}\nstabilisation_seconds = {stab}\n'
    )


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling until the deadline
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Proc:
    """A `python -m nodeagent serve` process."""

    def __init__(self, fleet: Path, node: str, state_dir: Path, cwd: Path, extra=()):
        self.args = [
            sys.executable,
            "-m",
            "nodeagent",
            "serve",
            "--fleet",
            str(fleet),
            "--node",
            node,
            "--state-dir",
            str(state_dir),
            "--allow-short-wait",
            *extra,
        ]
        self.cwd = cwd
        self.log = open(cwd / f"{node}.log", "ab")
        self.p = None
        self.start()

    def start(self):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.p = subprocess.Popen(self.args, cwd=self.cwd, env=env, stdout=self.log, stderr=self.log)

    def kill(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(5)

    def term(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            self.p.wait(10)

    def stop(self):
        self.kill()
        self.log.close()


def sync(coro):
    return asyncio.run(coro)


async def _call(host, password, method, path, body=None, **kw):
    async with aiohttp.ClientSession() as s:
        client = AgentClient(s, host, password, timeout=kw.pop("timeout", 5.0), tls=kw.pop("tls", True))
        return await client.request(method, path, body, **kw)


def call(host, password, method, path, body=None, **kw):
    """(status, json) of one signed request."""
    return sync(_call(host, password, method, path, body, **kw))


def ha_info(host, password):
    st, out = call(host, password, "GET", "/hm/v1/ha-info", timeout=2.0)
    assert st == 200, out
    return out
