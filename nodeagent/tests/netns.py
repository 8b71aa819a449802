"""Test hosts in network namespaces (issue 11 item 4; recipe in ../shared/docs/RECIPES.md).

One :class:`Lab` per test::

    LAN  netns ``mse-<pid>-<n>-lan``: Linux bridge ``br0`` with one port ``p-<host>`` per host
    hosts, one netns each (``mse-<pid>-<n>-<host>``), ``eth0`` = a veth whose other end is
    the host's port on ``br0``:
        hp  primary     198.18.N.12     (eth1 198.19.N.1, direct connect, optional)
        hs  secondary   198.18.N.13     (eth1 198.19.N.2)
        hc  client      198.18.N.100
        hw  witness     198.18.N.50
    ``lab.vip`` = 198.18.N.11 is left free for the pair's VIP.
    ``Lab(portal=True)``: the portal (this test process, its worker) on the LAN too, as
    198.18.N.1 on a veth in the root namespace whose other end is ``p-portal`` on ``br0``.

Addresses are only in 198.18.0.0/15 (benchmarking range) and exist only inside the lab's
namespaces (and, with ``portal=True``, on the lab's one root-namespace veth, whose only
route is the lab's own /24); no namespace has a default route, so nothing can leave. N is picked per lab (random, never reused by this
process); since every lab has its own namespaces, even the same N in a concurrent suite
cannot interfere. Veths are created straight into their namespaces, so no interface name
is ever taken in the root namespace either.

Faults (each from the recipe): :meth:`Lab.isolate_host` / :meth:`Lab.heal_host` (the host's
bridge port down/up; NB the direct link, if any, still works), :meth:`Lab.cut_pair` /
:meth:`Lab.heal_pair` (``bridge link set dev PORT isolated on|off`` on the primary's and
secondary's ports: they cannot see each other, both still reach the client and the
witness), :meth:`Lab.pull_direct` / :meth:`Lab.plug_direct` (``ip link set eth1 down|up``
on one side). Processes: :meth:`Lab.popen` / :meth:`Lab.run` (``ip netns exec NS argv``).
SIGSTOP/SIGCONT/SIGKILL go to :meth:`Lab.pid_of` (the netns-exec'd program itself).

:func:`missing_requirements` says what this machine lacks (root, CAP_NET_ADMIN, ip,
bridge, arping, ping); tests call :func:`require` (skips saying exactly what is missing)
and build a lab with ``with Lab() as lab:`` (everything removed also when the test fails).
:func:`remove_stale` deletes namespaces of this naming scheme left by a crashed run
(their pid is gone); :class:`Lab` calls it once per process.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import pytest

PREFIX = "mse"
NAME_RE = re.compile(rf"^{PREFIX}-(\d+)-(\d+)-([a-z]+)$")
HOSTS = ("hp", "hs", "hc", "hw")
PRIMARY, SECONDARY, CLIENT, WITNESS = HOSTS
HOST_OCTET = {"hp": 12, "hs": 13, "hc": 100, "hw": 50}
DIRECT_OCTET = {"hp": 1, "hs": 2}
VIP_OCTET = 11
LAN_PREFIX = 24
TOOLS = ("ip", "bridge", "arping", "ping")


def sh(argv: Sequence[str], *, check: bool = True, timeout: float = 20.0, **kw) -> subprocess.CompletedProcess:
    """Run a command (no shell); raise with its stderr when it fails and check is set."""
    cp = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kw)
    if check and cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({cp.returncode}): {cp.stderr.strip() or cp.stdout.strip()}")
    return cp


@lru_cache(maxsize=1)
def missing_requirements() -> str | None:
    """None when netns tests can run here, else exactly what is missing (for the skip message)."""
    missing = []
    if os.geteuid() != 0:
        missing.append(f"root (running as uid {os.geteuid()})")
    tools = [t for t in TOOLS if shutil.which(t) is None]
    if tools:
        hints = {"arping": "apt-get install iputils-arping", "ping": "apt-get install iputils-ping"}
        missing += [f"the `{t}` command" + (f" ({hints[t]})" if t in hints else "") for t in tools]
    if "ip" not in tools:
        probe = f"{PREFIX}-probe-{os.getpid()}"
        cp = sh(["ip", "netns", "add", probe], check=False)
        if cp.returncode != 0:
            missing.append(f"CAP_NET_ADMIN (`ip netns add {probe}` failed: {cp.stderr.strip()})")
        else:
            sh(["ip", "netns", "del", probe], check=False)
    if not missing:
        return None
    return "network-namespace tests need " + ", ".join(missing)


def require() -> None:
    """pytest.skip with the exact reason when this machine cannot run netns tests; a failure
    instead where they must run (CI sets MSEPORTAL_REQUIRE_NETNS)."""
    reason = missing_requirements()
    if reason:
        if os.environ.get("MSEPORTAL_REQUIRE_NETNS"):
            pytest.fail(f"MSEPORTAL_REQUIRE_NETNS is set, but {reason}")
        pytest.skip(reason)


def netns_list() -> list[str]:
    cp = sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def ours(pid: int | None = None) -> list[str]:
    """Namespaces of this naming scheme (of one pid, if given)."""
    out = []
    for name in netns_list():
        m = NAME_RE.match(name)
        if m and (pid is None or int(m.group(1)) == pid):
            out.append(name)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_netns(name: str) -> None:
    """Kill what still runs inside (by pid: only our own test processes live there), then delete."""
    for _ in range(3):
        pids = [int(p) for p in sh(["ip", "netns", "pids", name], check=False).stdout.split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    sh(["ip", "netns", "del", name], check=False)


def remove_stale() -> list[str]:
    """Delete namespaces of this scheme whose creating pid is gone (a crashed run), or that
    carry this process's pid without belonging to a live Lab (pid reuse). Returns them."""
    me = os.getpid()
    stale = []
    for name in ours():
        pid = int(NAME_RE.match(name).group(1))
        if (pid == me and name not in Lab.live_names) or (pid != me and not _alive(pid)):
            stale.append(name)
            delete_netns(name)
    return stale


class Host:
    def __init__(self, key: str, ns: str, ip: str | None, direct_ip: str | None = None) -> None:
        self.key = key
        self.ns = ns
        self.ip = ip
        self.direct_ip = direct_ip
        self.port = f"p-{key}"  # its port on br0, in the LAN namespace

    def __repr__(self) -> str:
        return f"Host({self.key}, {self.ns}, {self.ip})"


class Lab:
    """A LAN bridge, the four hosts and (optionally) the direct link; see the module doc."""

    _counter = 0
    _used_n: set[int] = set()
    _stale_done = False
    live_names: set[str] = set()

    def __init__(self, direct: bool = True, n: int | None = None, *, portal: bool = False) -> None:
        Lab._counter += 1
        self.seq = Lab._counter
        self.portal = portal
        self.n = n if n is not None else self._pick_n(root_free=portal)
        Lab._used_n.add(self.n)
        self.direct = direct
        self.base = f"{PREFIX}-{os.getpid()}-{self.seq}"
        self.lan_ns = f"{self.base}-lan"
        self.net = f"198.18.{self.n}"
        self.direct_net = f"198.19.{self.n}"
        self.vip = f"{self.net}.{VIP_OCTET}"
        self.netmask = "255.255.255.0"
        self.hosts = {
            k: Host(
                k,
                f"{self.base}-{k}",
                f"{self.net}.{HOST_OCTET[k]}",
                f"{self.direct_net}.{DIRECT_OCTET[k]}" if direct and k in DIRECT_OCTET else None,
            )
            for k in HOSTS
        }
        # the portal's end in the root namespace (a unique, short interface name) and address
        self.portal_if = f"{PREFIX}{os.getpid() % 100000}p{self.seq % 1000}"
        self.portal_ip = f"{self.net}.1"
        self.procs: list[subprocess.Popen] = []
        self.built = False

    @staticmethod
    def _pick_n(root_free: bool = False) -> int:
        """A third octet no lab of this process uses; with ``root_free``, also one the root
        namespace has no route for (another process's portal lab, or anything else)."""
        rnd = random.Random(os.getpid() ^ time.monotonic_ns())
        free = [n for n in range(1, 255) if n not in Lab._used_n] or list(range(1, 255))
        if root_free:
            taken = {r.get("dst", "") for r in json.loads(sh(["ip", "-j", "-4", "route", "show"]).stdout or "[]")}
            free = [n for n in free if not any(d.startswith(f"198.18.{n}.") for d in taken)] or free
        return rnd.choice(free)

    # --- building and tearing down -------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    @property
    def names(self) -> list[str]:
        return [self.lan_ns] + [h.ns for h in self.hosts.values()]

    def build(self) -> None:
        if not Lab._stale_done:
            Lab._stale_done = True
            remove_stale()
        for name in self.names:  # pid reuse: a leftover with our exact name
            if name in netns_list():
                delete_netns(name)
        Lab.live_names.update(self.names)
        for name in self.names:
            sh(["ip", "netns", "add", name])
            sh(["ip", "-n", name, "link", "set", "lo", "up"])
        lan = self.lan_ns
        sh(["ip", "-n", lan, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", lan, "link", "set", "br0", "up"])
        for h in self.hosts.values():
            sh(["ip", "-n", lan, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.ns])
            sh(["ip", "-n", lan, "link", "set", h.port, "master", "br0", "up"])
            sh(["ip", "-n", h.ns, "addr", "add", f"{h.ip}/{LAN_PREFIX}", "dev", "eth0"])
            sh(["ip", "-n", h.ns, "link", "set", "eth0", "up"])
        if self.direct:
            p, s = self.hosts[PRIMARY], self.hosts[SECONDARY]
            sh(["ip", "-n", p.ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns", s.ns])
            for h in (p, s):
                sh(["ip", "-n", h.ns, "addr", "add", f"{h.direct_ip}/{LAN_PREFIX}", "dev", "eth1"])
                sh(["ip", "-n", h.ns, "link", "set", "eth1", "up"])
        if self.portal:
            sh(["ip", "link", "add", self.portal_if, "type", "veth", "peer", "name", "p-portal", "netns", lan])
            sh(["ip", "-n", lan, "link", "set", "p-portal", "master", "br0", "up"])
            sh(["ip", "addr", "add", f"{self.portal_ip}/{LAN_PREFIX}", "dev", self.portal_if])
            sh(["ip", "link", "set", self.portal_if, "up"])
        self.built = True

    def destroy(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        if self.portal:  # also gone with the LAN namespace (a veth dies with its peer)
            sh(["ip", "link", "del", self.portal_if], check=False)
        existing = set(netns_list())
        for name in self.names:
            if name in existing:
                delete_netns(name)
            Lab.live_names.discard(name)
        self.built = False

    # --- addressing ----------------------------------------------------------------
    def host(self, h: str | Host) -> Host:
        return h if isinstance(h, Host) else self.hosts[h]

    def ns(self, h: str | Host) -> str:
        return self.lan_ns if h == "lan" else self.host(h).ns

    def ip(self, h: str | Host) -> str:
        return self.host(h).ip

    # --- processes -----------------------------------------------------------------
    def argv(self, h: str | Host, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(h), *argv]

    def run(self, h: str | Host, argv: Sequence[str], *, check: bool = False, timeout: float = 20.0, **kw):
        """``ip netns exec NS argv`` to completion → CompletedProcess (text)."""
        return sh(self.argv(h, argv), check=check, timeout=timeout, **kw)

    def popen(self, h: str | Host, argv: Sequence[str], **kw) -> subprocess.Popen:
        """``ip netns exec NS argv`` in the background; killed by :meth:`destroy`."""
        p = subprocess.Popen(self.argv(h, argv), **kw)
        self.procs.append(p)
        return p

    @staticmethod
    def pid_of(p: subprocess.Popen, timeout: float = 5.0) -> int:
        """The pid of the program ``ip netns exec`` runs (iproute2 execs it in place, so
        it is the Popen's pid; checked against /proc so a signal never hits ``ip``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                exe = Path(f"/proc/{p.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError as e:
                raise RuntimeError(f"process {p.pid} is gone") from e
            if exe and Path(exe).name != "ip":  # empty while it execs
                return p.pid
            if time.monotonic() > deadline:
                raise RuntimeError(f"process {p.pid} still runs `ip` after {timeout}s")
            time.sleep(0.01)

    # --- looking at the network ----------------------------------------------------
    def mac(self, h: str | Host, dev: str = "eth0") -> str:
        out = json.loads(sh(["ip", "-n", self.ns(h), "-j", "link", "show", "dev", dev]).stdout)
        return out[0]["address"].lower()

    def neigh(self, h: str | Host, ip: str) -> str | None:
        """The lladdr the host's neighbour table shows for ip (None: no entry or no lladdr)."""
        out = json.loads(sh(["ip", "-n", self.ns(h), "-j", "neigh", "show", "to", ip]).stdout or "[]")
        for e in out:
            if e.get("dst") == ip and e.get("lladdr"):
                return e["lladdr"].lower()
        return None

    def addrs(self, h: str | Host, dev: str = "eth0") -> list[str]:
        """IPv4 addresses on dev, as ``a.b.c.d/prefix``."""
        out = json.loads(sh(["ip", "-n", self.ns(h), "-j", "-4", "addr", "show", "dev", dev]).stdout or "[]")
        return [f"{a['local']}/{a['prefixlen']}" for i in out for a in i.get("addr_info", [])]

    def has_addr(self, h: str | Host, ip: str, dev: str = "eth0") -> bool:
        return any(a.split("/")[0] == ip for a in self.addrs(h, dev))

    def ping(self, h: str | Host, ip: str, *, count: int = 1, wait: float = 1.0) -> bool:
        """One ping from host h to ip (an address of this lab only)."""
        self._check_ours(ip)
        cp = self.run(h, ["ping", "-n", "-q", "-c", str(count), "-W", str(wait), ip], timeout=count * wait + 10)
        return cp.returncode == 0

    def _check_ours(self, ip: str) -> None:
        if not (ip.startswith(self.net + ".") or ip.startswith(self.direct_net + ".")):
            raise ValueError(f"{ip} is not an address of this lab ({self.net}.0/24, {self.direct_net}.0/24)")

    # --- faults --------------------------------------------------------------------
    def isolate_host(self, h: str | Host) -> None:
        """The host's bridge port down: it reaches nobody over the LAN (the direct link stays)."""
        sh(["ip", "-n", self.lan_ns, "link", "set", self.host(h).port, "down"])

    def heal_host(self, h: str | Host) -> None:
        sh(["ip", "-n", self.lan_ns, "link", "set", self.host(h).port, "up"])

    def _isolated(self, flag: str) -> None:
        for k in (PRIMARY, SECONDARY):
            sh(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.lan_ns,
                    "bridge",
                    "link",
                    "set",
                    "dev",
                    self.hosts[k].port,
                    "isolated",
                    flag,
                ]
            )

    def cut_pair(self) -> None:
        """Primary and secondary cannot see each other over the LAN; both still reach the
        client and the witness (bridge ports isolated; the direct link is untouched)."""
        self._isolated("on")

    def heal_pair(self) -> None:
        self._isolated("off")

    def pull_direct(self, side: str = PRIMARY) -> None:
        """Pull the direct-connect cable: ``ip link set eth1 down`` on one side."""
        if not self.direct:
            raise RuntimeError("this lab has no direct link")
        sh(["ip", "-n", self.ns(side), "link", "set", "eth1", "down"])

    def plug_direct(self, side: str = PRIMARY) -> None:
        sh(["ip", "-n", self.ns(side), "link", "set", "eth1", "up"])


# --- what the client saw (the figures every scenario prints) ------------------------
def read_records(path: Path) -> list[dict]:
    """The writer's JSON lines (a last line cut by a kill is skipped)."""
    out = []
    if not path.exists():  # the writer has not started yet
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def ownership(records: list[dict], gap: float = 0.5) -> dict[str, list[tuple[float, float]]]:
    """Per node, the times it was accepting writes: from each acknowledgement to its next
    one when they are at most ``gap`` apart (a node that acknowledges the requests it gets
    is taking writes in between, also when other requests went elsewhere)."""
    by: dict[str, list[float]] = {}
    for r in records:
        if r["ok"]:
            by.setdefault(r["served_by"], []).append(r["t1"])
    out = {}
    for node, ts in by.items():
        ts.sort()
        iv = [(t, t) for t in ts] + [(a, b) for a, b in zip(ts, ts[1:], strict=False) if b - a <= gap]
        out[node] = _union(iv)
    return out


def dual_ownership_seconds(records: list[dict], gap: float = 0.5) -> float:
    """How long two nodes accepted writes for the VIP at once (as this client saw it)."""
    own = list(ownership(records, gap).values())
    total = 0.0
    for i in range(len(own)):
        for j in range(i + 1, len(own)):
            for a0, a1 in own[i]:
                for b0, b1 in own[j]:
                    total += max(0.0, min(a1, b1) - max(a0, b0))
    return total


def outage_after(records: list[dict], t_fault: float) -> tuple[float, dict | None, dict | None]:
    """Client-visible outage: the first request that failed at or after t_fault (its start)
    to the first acknowledged one after it (its end). (0, None, None) when none failed."""
    recs = sorted(records, key=lambda r: r["t0"])
    first_fail = next((r for r in recs if not r["ok"] and r["t1"] >= t_fault), None)
    if first_fail is None:
        return 0.0, None, None
    first_ok = next((r for r in recs if r["ok"] and r["t0"] > first_fail["t0"]), None)
    if first_ok is None:
        return float("inf"), first_fail, None
    return first_ok["t1"] - first_fail["t0"], first_fail, first_ok


def wait_for(pred, timeout: float, interval: float = 0.1):
    """pred() until it is true (returned) or timeout (returns the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)
