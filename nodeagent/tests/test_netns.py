"""Issue 11 on test hosts in network namespaces (see netns.py): the harness itself, and the
scenarios of the issue's "What it must show" table with real agents on real interfaces:
"primary agent SIGKILLed" and "direct link pulled" (no witness), and, with a witness and no
direct link (the ``scenario`` fixture: witness, Active pair, the client writing ~50/s
through the VIP), "primary host isolated", "primary and secondary cut from each other",
"secondary killed" and "primary frozen, then woken". Each prints the client-visible outage,
the dual-ownership seconds and the acknowledged writes lost.

Needs root, CAP_NET_ADMIN, iproute2 (`ip`, `bridge`) and Debian's iputils-arping and
iputils-ping; skipped otherwise, saying exactly what is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from . import netns
from .agentutil import REPO, node_toml, pair_toml
from .netns import CLIENT, PRIMARY, SECONDARY, WITNESS, Lab

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.serial]

PW = {"nico": "pw-primary", "nico2": "pw-secondary"}
IPROUTE_KEYS = 'vip_driver = "iproute"\nhm_interface = "eth0"\n'
WITNESS_PW = "pw-witness"
WITNESS_PORT = 8002
# The two waits (failover_wait, seconds); MSEPORTAL_NETNS_WAITS="3" runs one.
WAITS = tuple(int(w) for w in os.environ.get("MSEPORTAL_NETNS_WAITS", "3,10").split(",") if w.strip())


@dataclass(frozen=True)
class Timing:
    """A pair's clocks for one failover wait, as the agent derives them (PairConfig)."""

    wait: int

    @property
    def lease(self) -> float:  # the primary's witness lease (PairConfig.lease_seconds)
        return self.wait / 3

    @property
    def hb(self) -> float:  # the heartbeat interval (PairConfig.heartbeat_interval)
        return min(1.0, max(0.1, self.wait / 10))

    @property
    def down_after(self) -> float:  # heartbeats shown Down after (heartbeat_down_after)
        return min(self.wait, max(3 * self.hb, 0.5))


@pytest.fixture(params=WAITS, ids=[f"wait{w}" for w in WAITS])
def t(request) -> Timing:
    """Each scenario runs with each of the issue's waits."""
    return Timing(request.param)


def _lab(direct: bool):
    netns.require()
    lab = Lab(direct=direct)
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()
        left = [n for n in netns.netns_list() if n in lab.names]
        assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def lab():
    """A fresh lab (LAN bridge, hp/hs/hc/hw, direct link), removed also when the test fails."""
    yield from _lab(direct=True)


@pytest.fixture
def plab():
    """A lab without the direct link, for the partitions: isolate_host and cut_pair leave the
    direct link up, so without one they cut every path between the two nodes."""
    yield from _lab(direct=False)


# --- the harness on its own -----------------------------------------------------------
def test_harness_lan_faults_without_agents(lab):
    hp, hs, hc, hw = (lab.host(k) for k in (PRIMARY, SECONDARY, CLIENT, WITNESS))
    assert all(lab.addrs(h) == [f"{h.ip}/24"] for h in (hp, hs, hc, hw))
    assert lab.run(hp, ["ip", "-o", "link", "show", "lo"]).stdout.count("UP") >= 1
    assert lab.run(hp, ["ip", "route", "show", "default"]).stdout.strip() == "", "no way out of the lab"

    def reach(a, b, ip=None):
        return lab.ping(a, ip or lab.ip(b))

    # healthy LAN: everybody reaches everybody; the direct link works
    for a, b in ((hp, hs), (hs, hp), (hc, hp), (hc, hs), (hp, hw), (hs, hw), (hc, hw)):
        assert reach(a, b), f"{a.key} -> {b.key} over the bridge"
    assert reach(hp, hs, hs.direct_ip) and reach(hs, hp, hp.direct_ip), "direct link"
    assert lab.neigh(hc, hp.ip) == lab.mac(hp) and lab.neigh(hc, hs.ip) == lab.mac(hs)
    assert lab.mac(hp, "eth1") != lab.mac(hp, "eth0")

    # cut_pair: primary and secondary cannot see each other over the LAN, both still reach
    # the client and the witness; the direct link is another path and still works
    lab.cut_pair()
    assert not reach(hp, hs) and not reach(hs, hp)
    for a, b in ((hc, hp), (hc, hs), (hp, hw), (hs, hw), (hp, hc), (hs, hc)):
        assert reach(a, b), f"{a.key} -> {b.key} with the pair cut"
    assert reach(hp, hs, hs.direct_ip)
    lab.heal_pair()
    assert reach(hp, hs) and reach(hs, hp)

    # isolate_host: the primary reaches nobody over the LAN, nobody reaches it; the others
    # still reach each other (the direct link, if any, is untouched)
    lab.isolate_host(hp)
    for a, b in ((hp, hs), (hp, hc), (hp, hw), (hc, hp), (hs, hp), (hw, hp)):
        assert not reach(a, b), f"{a.key} -> {b.key} with {hp.key} isolated"
    assert reach(hc, hs) and reach(hs, hw)
    assert reach(hp, hs, hs.direct_ip), "isolate_host leaves the direct link up"
    lab.heal_host(hp)
    assert reach(hp, hs) and reach(hc, hp)

    # pull_direct: the direct link is down, the LAN is fine
    lab.pull_direct()
    assert not reach(hp, hs, hs.direct_ip) and not reach(hs, hp, hp.direct_ip)
    assert reach(hp, hs)
    lab.plug_direct()
    assert netns.wait_for(lambda: reach(hp, hs, hs.direct_ip), 5)

    # a VIP moved by hand as the recipe does, announced with arping: the client follows it
    vip = lab.vip
    assert lab.run(hp, ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"]).returncode == 0
    assert reach(hc, hp, vip) and lab.neigh(hc, vip) == lab.mac(hp)
    assert lab.run(hp, ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"]).returncode == 0
    assert lab.run(hs, ["ip", "addr", "add", f"{vip}/24", "dev", "eth0"]).returncode == 0
    lab.run(hs, ["arping", "-U", "-c", "2", "-w", "2", "-I", "eth0", vip])
    assert lab.neigh(hc, vip) == lab.mac(hs)
    assert reach(hc, hs, vip)

    # processes run inside their host, and pid_of names the program, not `ip`
    p = lab.popen(hs, ["sleep", "30"])
    pid = Lab.pid_of(p)
    assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep")
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    assert str(pid) in netns.sh(["ip", "netns", "pids", hs.ns]).stdout.split()


def test_harness_portal_port_reaches_the_lan_and_leaves_nothing_behind():
    # a lab with the portal on its LAN: this (root-namespace) process reaches the hosts
    netns.require()
    lab = Lab(direct=False, portal=True)
    try:
        lab.build()
        assert lab.portal_ip.startswith("198.18.") and len(lab.portal_if) <= 15
        ping = ["ping", "-n", "-q", "-c", "1", "-W", "1"]
        assert netns.sh([*ping, lab.ip(PRIMARY)], check=False).returncode == 0, "the portal reaches the primary"
        assert lab.ping(SECONDARY, lab.portal_ip), "the secondary reaches the portal"
        routes = json.loads(netns.sh(["ip", "-j", "-4", "route", "show", "dev", lab.portal_if]).stdout)
        assert [r["dst"] for r in routes] == [f"{lab.net}.0/24"], "the lab's /24 is the root namespace's only new route"
        # cutting the pair leaves the portal's port alone: it still sees both nodes
        lab.cut_pair()
        assert netns.sh([*ping, lab.ip(SECONDARY)], check=False).returncode == 0
        assert not lab.ping(PRIMARY, lab.ip(SECONDARY))
    finally:
        lab.destroy()
    links = netns.sh(["ip", "-o", "link", "show"]).stdout
    assert lab.portal_if not in links, "the root-namespace veth went with the lab"
    assert f"198.18.{lab.n}." not in netns.sh(["ip", "-4", "route", "show"]).stdout


# --- agents in the namespaces ---------------------------------------------------------
class Agent:
    """`python -m nodeagent serve` as a real process inside its host's namespace."""

    def __init__(self, lab: Lab, host: str, node: str, fleet: Path, tmp: Path) -> None:
        self.lab, self.host, self.node, self.fleet, self.tmp = lab, host, node, fleet, tmp
        self.logpath = tmp / f"{node}.log"
        self.p: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "nodeagent", "serve",
            "--fleet", str(self.fleet), "--node", self.node, "--state-dir", str(self.tmp / self.node),
            "--allow-short-wait", "--log-level", "INFO",
        ]  # fmt: skip
        log = open(self.logpath, "ab")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.p = self.lab.popen(self.host, argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def kill(self) -> float:
        """SIGKILL the agent (the python inside the namespace); returns the monotonic time."""
        pid = Lab.pid_of(self.p)
        t = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        self.p.wait(5)
        return t

    def freeze(self) -> float:
        """SIGSTOP the agent; returns the monotonic time."""
        t = time.monotonic()
        os.kill(Lab.pid_of(self.p), signal.SIGSTOP)
        return t

    def wake(self) -> float:
        """SIGCONT the agent; returns the monotonic time."""
        t = time.monotonic()
        os.kill(Lab.pid_of(self.p), signal.SIGCONT)
        return t

    def log_tail(self, n: int = 40) -> str:
        return log_tail(self.logpath, self.node, n)


def log_tail(path: Path, who: str, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log of {who})"
    return f"--- {who} log (last {n} lines) ---\n" + "\n".join(lines[-n:])


def client_py(lab: Lab, *args: str, timeout: float = 20.0) -> object:
    """Run netns_client.py in the client namespace; its JSON output."""
    cp = lab.run(
        CLIENT,
        [sys.executable, "-m", "nodeagent.tests.netns_client", *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=timeout,
    )
    if cp.returncode != 0:
        raise RuntimeError(f"netns_client {args[0]} failed: {cp.stderr.strip()}")
    return json.loads(cp.stdout)


def ha_infos(lab: Lab, *hosts: tuple[str, str]) -> dict[str, dict | None]:
    """node -> ha-info (None when unreachable), asked from the client host."""
    out = client_py(lab, "ha-info", *(f"{lab.ip(h)}:{PW[node]}" for h, node in hosts))
    by_ip = {r["host"]: (r["info"] if r["status"] == 200 else None) for r in out}
    return {node: by_ip[lab.ip(h)] for h, node in hosts}


def pair_active(lab: Lab) -> tuple[bool, dict]:
    """(the pair is Active: primary in charge with the VIP, secondary in step; both ha-infos)."""
    infos = ha_infos(lab, (PRIMARY, "nico"), (SECONDARY, "nico2"))
    p, s = infos["nico"], infos["nico2"]
    if not (p and s and p["peers"] and s["peers"]):
        return False, infos
    pp, sp = p["peers"][0], s["peers"][0]
    return (
        pp["state"] == "PRIMARY_ACTIVE"
        and sp["state"] == "SECONDARY_ACTIVE"
        and sp["heartbeat"] == "Up"
        and pp["data_replication"] == "Up"
        and sp["data_replication"] == "Up"
        and pp["in_charge"]
        and lab.has_addr(PRIMARY, lab.vip)
    ), infos


def wait_active(lab: Lab, agents: list[Agent], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        dead = [a for a in agents if not a.alive()]
        if dead:
            raise AssertionError(
                "agent(s) exited at start-up: " + ", ".join(f"{a.node} (rc {a.p.returncode})" for a in dead)
                + "\n" + "\n".join(a.log_tail() for a in dead)
            )  # fmt: skip
        active, last = pair_active(lab)
        if active:
            return
        time.sleep(0.3)
    raise AssertionError(
        f"pair not Active within {timeout}s; last ha-info: {json.dumps(last)[:2000]}\n"
        + "\n".join(a.log_tail() for a in agents)
    )


class AddrSampler(threading.Thread):
    """Samples which hosts have the VIP on eth0 (for the figure 'address on both')."""

    def __init__(self, lab: Lab, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.lab, self.period = lab, period
        self.samples: list[tuple[float, bool, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                self.samples.append(
                    (t, self.lab.has_addr(PRIMARY, self.lab.vip), self.lab.has_addr(SECONDARY, self.lab.vip))
                )
            except Exception:  # noqa: BLE001 - namespaces going away at the end
                pass
            self.stop.wait(self.period)

    def both_seconds(self, since: float = 0.0) -> float:
        s = [x for x in self.samples if x[0] >= since]
        return sum(b[0] - a[0] for a, b in zip(s, s[1:], strict=False) if a[1] and a[2])


def test_primary_agent_sigkilled_vip_moves_to_the_secondary(lab, tmp_path, t):
    hp, hs = lab.host(PRIMARY), lab.host(SECONDARY)
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        node_toml("nico", "VA-High", "primary", hp.ip, PW["nico"], vip=lab.vip, direct_connect=hp.direct_ip)
        + IPROUTE_KEYS
        + 'direct_interface = "eth1"\n'
        + node_toml("nico2", "VA-High", "secondary", hs.ip, PW["nico2"], direct_connect=hs.direct_ip)
        + IPROUTE_KEYS
        + 'direct_interface = "eth1"\n'
        + pair_toml("nico", "nico2", failover="Automatic", failback="Manual", wait=t.wait, stab=1800)
    )
    primary = Agent(lab, PRIMARY, "nico", fleet, tmp_path)
    secondary = Agent(lab, SECONDARY, "nico2", fleet, tmp_path)
    primary.start()
    secondary.start()
    wait_active(lab, [primary, secondary])

    records_path = tmp_path / "writes.jsonl"
    writer = lab.popen(
        CLIENT,
        [sys.executable, "-m", "nodeagent.tests.netns_client", "writer",
         "--vip", lab.vip, "--password", PW["nico"], "--out", str(records_path), "--rate", "50"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    sampler = AddrSampler(lab)
    sampler.start()
    try:
        assert netns.wait_for(lambda: sum(r["ok"] for r in netns.read_records(records_path)) >= 100, 15), (
            "the client writes through the VIP while the pair is Active: " + str(netns.read_records(records_path)[-3:])
        )
        before = netns.read_records(records_path)
        assert {r["served_by"] for r in before if r["ok"]} == {"nico"}
        assert lab.neigh(CLIENT, lab.vip) == lab.mac(PRIMARY), "the client reaches the VIP at the primary's MAC"

        t_kill = primary.kill()

        def secondary_serves():
            return any(r["ok"] and r["served_by"] == "nico2" for r in netns.read_records(records_path))

        netns.wait_for(secondary_serves, t.wait + 1 + 10)
        time.sleep(2.0)  # keep writing through the new owner for a while
    finally:
        if writer.poll() is None:
            os.kill(Lab.pid_of(writer), signal.SIGTERM)
            writer.wait(10)
        sampler.stop.set()
        sampler.join(5)

    recs = netns.read_records(records_path)
    acked = [r for r in recs if r["ok"]]
    took = next((r for r in sorted(acked, key=lambda r: r["t1"]) if r["served_by"] == "nico2"), None)
    takeover = (took["t1"] - t_kill) if took else float("inf")
    outage, first_fail, first_ok = netns.outage_after(recs, t_kill)
    dual = netns.dual_ownership_seconds(recs)
    neigh_now, hs_mac = lab.neigh(CLIENT, lab.vip), lab.mac(SECONDARY)
    both = sampler.both_seconds()
    left_primary = next((x[0] for x in sampler.samples if x[0] >= t_kill and not x[1]), float("inf")) - t_kill

    listing = client_py(lab, "elements", "--vip", lab.vip, "--password", PW["nico"])
    have = set(listing["macs"])
    lost = [r["mac"] for r in acked if r["mac"] not in have]
    after = [r for r in recs if r["t0"] >= t_kill]
    rate = len(recs) / max(1e-9, recs[-1]["t1"] - recs[0]["t0"])
    print(
        f"\n[netns] primary agent SIGKILLed, Automatic, wait {t.wait} s:"
        f"\n  VIP answers from the secondary {takeover:.3f} s after the kill (limit {t.wait + 1} s)"
        f"\n  client-visible outage {outage:.3f} s (outage/wait {outage / t.wait:.2f});"
        f" failed requests after the kill: {sum(not r['ok'] for r in after)}"
        f"\n  dual-ownership {dual:.3f} s"
        f"\n  acknowledged writes lost {len(lost)} of {len(acked)} ({len(recs)} requests, {rate:.1f}/s)"
        f"\n  client neighbour entry for the VIP {neigh_now} (secondary eth0 {hs_mac}, primary eth0 {lab.mac(PRIMARY)})"
        f"\n  VIP address left the killed agent's host {fmt_s(left_primary)} after the kill (its kernel"
        f" lifetime, {max(1, t.wait // 3)} s, no longer renewed); on both hosts' eth0 for {both:.2f} s"
    )
    if first_fail:
        print(f"  first failure after the kill: {first_fail.get('err') or first_fail.get('status')}")
    assert took is not None, "the VIP never answered from the secondary\n" + secondary.log_tail()
    assert takeover <= t.wait + 1, f"VIP answered from the secondary {takeover:.2f}s after the kill (wait {t.wait} s)"
    assert neigh_now == hs_mac, "the client's neighbour entry for the VIP shows the secondary's eth0 MAC"
    assert listing["status"] == 200 and listing["served_by"] == "nico2"
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    assert dual == 0.0
    assert both == 0.0, f"the VIP was on both hosts for {both:.2f} s: the killed agent's host kept it"
    assert left_primary < t.wait, f"the killed agent's host dropped the VIP {left_primary:.2f} s after the kill"
    assert len(acked) > 150

    # brought back, the primary removes its leftover VIP at start-up and stays TERMINATED
    primary.start()

    def back():
        info = ha_infos(lab, (PRIMARY, "nico"))["nico"]
        return (
            info
            and info["peers"]
            and info["peers"][0]["state"] == "TERMINATED"
            and info["peers"][0]["heartbeat"] == "Up"
        )

    assert netns.wait_for(back, 20), "restarted primary TERMINATED with heartbeats Up\n" + primary.log_tail()
    assert not lab.has_addr(PRIMARY, lab.vip), "the restarted primary removed the leftover VIP from eth0"
    assert lab.has_addr(SECONDARY, lab.vip)
    assert client_py(lab, "elements", "--vip", lab.vip, "--password", PW["nico"])["served_by"] == "nico2"


def _pair_fleet(lab: Lab, tmp_path: Path, *, wait: int, witness: str | None = None) -> Path:
    """The pair nico/nico2 on the lab's hosts (Automatic failover, wait ``wait``); over the
    direct link too when the lab has one; with ``witness`` ("IP:PORT") as its only witness."""
    hp, hs = lab.host(PRIMARY), lab.host(SECONDARY)
    direct = 'direct_interface = "eth1"\n' if lab.direct else ""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        node_toml("nico", "VA-High", "primary", hp.ip, PW["nico"], vip=lab.vip, direct_connect=hp.direct_ip)
        + IPROUTE_KEYS
        + direct
        + node_toml("nico2", "VA-High", "secondary", hs.ip, PW["nico2"], direct_connect=hs.direct_ip)
        + IPROUTE_KEYS
        + direct
        + pair_toml("nico", "nico2", failover="Automatic", failback="Manual", wait=wait, stab=1800)
        + (f'witnesses = ["{witness}"]\nwitness_password = "{WITNESS_PW}"\n' if witness else "")
    )
    return fleet


def test_the_direct_link_pulled_is_an_event_not_a_failover(lab, tmp_path, t):
    # given an Active pair heartbeating over both the LAN and the direct cable
    fleet = _pair_fleet(lab, tmp_path, wait=t.wait)
    primary = Agent(lab, PRIMARY, "nico", fleet, tmp_path)
    secondary = Agent(lab, SECONDARY, "nico2", fleet, tmp_path)
    primary.start()
    secondary.start()
    try:
        wait_active(lab, [primary, secondary])

        def peers():
            infos = ha_infos(lab, (PRIMARY, "nico"), (SECONDARY, "nico2"))
            return infos["nico"]["peers"][0], infos["nico2"]["peers"][0]

        assert netns.wait_for(lambda: all(p["paths"] == {"hm": "Up", "direct": "Up"} for p in peers()), 10)

        # when the direct cable is pulled, the LAN fine
        lab.pull_direct()
        t_pull = time.monotonic()
        assert netns.wait_for(lambda: all(p["paths"] == {"hm": "Up", "direct": "Down"} for p in peers()), 10), peers()
        time.sleep(t.wait + 1.5)  # longer than the Long Failover Wait

        # then nothing failed over and nothing changed state: the LAN still carries the heartbeats
        p, s = peers()
        assert (p["state"], s["state"], p["in_charge"], s["heartbeat"]) == (
            "PRIMARY_ACTIVE",
            "SECONDARY_ACTIVE",
            True,
            "Up",
        )
        assert lab.has_addr(PRIMARY, lab.vip) and not lab.has_addr(SECONDARY, lab.vip)
        events = client_py(lab, "events", f"{lab.ip(SECONDARY)}:{PW['nico2']}")
        codes = [e["code"] for e in events]
        assert "heartbeat_path_down" in codes, codes
        assert not {"heartbeats_lost", "failover_shutting_down_primary", "failover_active"} & set(codes), codes
        down = next(e for e in events if e["code"] == "heartbeat_path_down")
        assert "direct-connect link" in down["remarks"] and "no failover" in down["remarks"]
        print(
            f"\n[netns] direct link pulled, LAN fine; Automatic, wait {t.wait} s: path-down event after"
            f" {time.monotonic() - t_pull:.1f} s at most; states {p['state']} / {s['state']}; no takeover"
        )

        # and plugging it back is an event too
        lab.plug_direct()
        assert netns.wait_for(
            lambda: (
                "heartbeat_path_up"
                in [e["code"] for e in client_py(lab, "events", f"{lab.ip(SECONDARY)}:{PW['nico2']}")]
            ),
            10,
        )
    finally:
        for agent in (primary, secondary):
            if agent.alive():
                agent.kill()


# --- partitions, with a witness (issue 11 "What it must show") ---------------------------
CLIENT_TIMEOUT = 0.5  # the client writer's request timeout: a request into a black hole
# (an isolated or frozen owner) fails after this long, so the takeover is seen within it


class WitnessProc:
    """`python -m nodeagent witness` in the witness namespace."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.address = f"{lab.ip(WITNESS)}:{WITNESS_PORT}"
        self.logpath = tmp / "witness.log"
        self.p: subprocess.Popen | None = None

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "nodeagent", "witness", "--listen", self.address,
            "--password", WITNESS_PW, "--state-file", str(self.tmp / "witness.json"),
        ]  # fmt: skip
        with open(self.logpath, "ab") as log:
            self.p = self.lab.popen(
                WITNESS,
                argv,
                cwd=REPO,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def state(self) -> dict:
        """The witness's view of every pair (asked from the client host)."""
        return client_py(self.lab, "witness-state", self.address, WITNESS_PW)

    def log_tail(self, n: int = 40) -> str:
        return log_tail(self.logpath, "witness", n)


class Writer:
    """The netns client's writer in a host's namespace: ~50 writes/s to the VIP, one JSON line
    per request (see netns_client.py); its MACs start with ``mac_prefix``."""

    def __init__(self, lab: Lab, host: str, out: Path, mac_prefix: str, timeout: float) -> None:
        self.host, self.out = host, out
        self.p = lab.popen(
            host,
            [sys.executable, "-m", "nodeagent.tests.netns_client", "writer", "--vip", lab.vip,
             "--password", PW["nico"], "--out", str(out), "--rate", "50", "--mac-prefix", mac_prefix,
             "--timeout", str(timeout)],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
        )  # fmt: skip

    def records(self) -> list[dict]:
        return netns.read_records(self.out)

    def acked(self) -> list[dict]:
        return [r for r in self.records() if r["ok"]]

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.kill(Lab.pid_of(self.p), signal.SIGTERM)
                self.p.wait(10)
            except (RuntimeError, ProcessLookupError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait(5)


def stored_macs(agent: Agent) -> set[str]:
    """The element MACs in an agent's instance logs (read from its state directory)."""
    out: set[str] = set()
    for f in (agent.tmp / agent.node / "instances").glob("*.jsonl"):
        out |= {r["mac"] for r in netns.read_records(f) if "mac" in r}
    return out


def event_offset(events: list[dict], code: str, wall0: float) -> float | None:
    """Seconds from wall-clock time ``wall0`` to the first event ``code`` at or after it."""
    for e in events:
        at = datetime.fromisoformat(e["timestamp"]).timestamp()
        if e["code"] == code and at >= wall0 - 0.01:
            return at - wall0
    return None


def fmt_s(v: float | None) -> str:
    return "never" if v is None or v == float("inf") else f"{v:+.3f} s"


class Scenario:
    """A witness, the pair (Automatic failover, wait ``t.wait``, the witness's default ``safe``
    mode) Active on a lab without the direct link, the client writing through the VIP and
    which host holds the VIP sampled. See the ``scenario`` fixture."""

    def __init__(self, lab: Lab, tmp: Path, t: Timing) -> None:
        self.lab, self.tmp, self.t = lab, tmp, t
        self.witness = WitnessProc(lab, tmp)
        fleet = _pair_fleet(lab, tmp, wait=t.wait, witness=self.witness.address)
        self.primary = Agent(lab, PRIMARY, "nico", fleet, tmp)
        self.secondary = Agent(lab, SECONDARY, "nico2", fleet, tmp)
        self.writers: list[Writer] = []
        self.sampler = AddrSampler(lab)
        self.stopped = False

    def start(self) -> None:
        t0 = time.monotonic()
        self.witness.start()
        self.primary.start()
        self.secondary.start()
        wait_active(self.lab, [self.primary, self.secondary])
        key = f"{self.lab.ip(PRIMARY)}/{self.lab.ip(SECONDARY)}"

        def leased():
            rec = self.witness.state()["pairs"].get(key)
            return rec and rec["lease_seconds_left"] > 0 and not rec["solo"]

        assert netns.wait_for(leased, 10), (
            f"the primary holds the witness's lease: {self.witness.state()}" + self.logs()
        )
        self.sampler.start()
        self.client = self.write_from(CLIENT)
        self.setup_seconds = time.monotonic() - t0

    def write_from(self, host: str, mac_prefix: str = "02:00:00", timeout: float = CLIENT_TIMEOUT) -> Writer:
        """Start a writer in ``host``'s namespace; returns once it had 30 writes acknowledged."""
        w = Writer(self.lab, host, self.tmp / f"writes-{host}.jsonl", mac_prefix, timeout)
        self.writers.append(w)
        assert netns.wait_for(lambda: len(w.acked()) >= 30, 10), (
            f"the writer in {host} writes through the VIP: {w.records()[-3:]}" + self.logs()
        )
        return w

    # --- looking at it --------------------------------------------------------------
    def peer(self, host: str, node: str) -> dict | None:
        info = ha_infos(self.lab, (host, node))[node]
        return info["peers"][0] if info and info["peers"] else None

    def events(self, host: str, node: str) -> list[dict]:
        return client_py(self.lab, "events", f"{self.lab.ip(host)}:{PW[node]}")

    def listing(self) -> tuple[str | None, set[str]]:
        """Who serves the VIP's element listing, and its MACs."""
        out = client_py(self.lab, "elements", "--vip", self.lab.vip, "--password", PW["nico"])
        assert out["status"] == 200, out
        return out["served_by"], set(out["macs"])

    def serves_since(self, node: str, t: float) -> bool:
        return any(r["ok"] and r["served_by"] == node and r["t0"] >= t for r in self.client.records())

    def first_answer(self, node: str, t: float) -> float:
        """Seconds from t to the client's first write acknowledged by ``node`` (inf: none)."""
        return min((r["t1"] for r in self.client.acked() if r["served_by"] == node and r["t0"] >= t), default=t + 1e9) - t  # fmt: skip

    def vip_on(self, host: str, t: float, held: bool = True) -> float:
        """Seconds from t to the first sample where ``host`` holds (or, held=False, does not
        hold) the VIP on eth0 (inf: never)."""
        i = 1 if host == PRIMARY else 2
        return next((s[0] for s in self.sampler.samples if s[0] >= t and s[i] == held), float("inf")) - t

    def records(self) -> list[dict]:
        """Every writer's requests."""
        return [r for w in self.writers for r in w.records()]

    def acked(self) -> list[dict]:
        return [r for r in self.records() if r["ok"]]

    def acked_by(self, node: str, since: float = float("-inf")) -> list[dict]:
        return [r for r in self.acked() if r["served_by"] == node and r["t1"] >= since]

    def logs(self) -> str:
        """For a failure message: each node's pair status and last events, the witness's view,
        and the processes' logs."""
        out = []
        for host, node in ((PRIMARY, "nico"), (SECONDARY, "nico2")):
            try:
                p = self.peer(host, node)
                keep = ("state", "in_charge", "generation", "heartbeat", "data_replication", "status", "instance")
                out.append(f"--- {node}: {json.dumps({k: p[k] for k in keep}) if p else 'unreachable'}")
                out += [f"  {e['timestamp']} {e['code']}: {e['remarks']}" for e in self.events(host, node)[-15:]]
            except Exception as e:  # noqa: BLE001 - a report, best effort
                out.append(f"--- {node}: {e}")
        try:
            out.append(f"--- witness: {json.dumps(self.witness.state())}")
        except Exception as e:  # noqa: BLE001
            out.append(f"--- witness: {e}")
        return "\n" + "\n".join(out + [x.log_tail(15) for x in (self.primary, self.secondary, self.witness)])

    # --- the end ----------------------------------------------------------------------
    def stop_writing(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for w in self.writers:
            w.stop()
        self.sampler.stop.set()
        if self.sampler.is_alive():
            self.sampler.join(5)

    def figures(self, title: str, t_fault: float, have: set[str], *more: str) -> tuple[float, float, list[str]]:
        """Print the scenario's figures; (client-visible outage, dual-ownership s, lost MACs)."""
        recs = self.client.records()
        acked = self.acked()
        lost = [r["mac"] for r in acked if r["mac"] not in have]
        outage, first_fail, _ = netns.outage_after(recs, t_fault)
        dual = netns.dual_ownership_seconds(self.records())
        after = [r for r in recs if r["t0"] >= t_fault]
        rate = len(recs) / max(1e-9, recs[-1]["t1"] - recs[0]["t0"])
        first = f" (first: {first_fail.get('err') or first_fail.get('status')})" if first_fail else ""
        lines = [
            f"\n[netns] {title}; Automatic, wait {self.t.wait} s, one witness (safe), no direct link"
            f" (set-up {self.setup_seconds:.1f} s):",
            f"  client-visible outage {outage:.3f} s (outage/wait {outage / self.t.wait:.2f});"
            f" failed client requests after the fault: {sum(not r['ok'] for r in after)}{first}",
            f"  dual-ownership {dual:.3f} s",
            f"  acknowledged writes lost {len(lost)} of {len(acked)}"
            f" ({len(recs)} client requests, {rate:.1f}/s, timeout {CLIENT_TIMEOUT:g} s)",
            *(f"  {m}" for m in more),
        ]
        print("\n".join(lines))
        return outage, dual, lost


@pytest.fixture
def scenario(plab, tmp_path, t):
    """A started :class:`Scenario`; its writers stopped and its agents killed at the end."""
    sc = Scenario(plab, tmp_path, t)
    try:
        sc.start()
        yield sc
    finally:
        sc.stop_writing()
        for agent in (sc.primary, sc.secondary):
            if agent.alive():
                agent.kill()


def test_primary_host_isolated_fences_itself_and_the_secondary_takes_over(scenario):
    sc, lab = scenario, scenario.lab
    t = sc.t
    # a second writer inside the primary's own namespace, to its own VIP: the isolated
    # primary's only possible client (a long timeout: we want the primary's answer)
    own = sc.write_from(PRIMARY, mac_prefix="02:00:01", timeout=2.0)

    # when the primary's bridge port goes down
    t_iso, w_iso = time.monotonic(), time.time()
    lab.isolate_host(PRIMARY)
    netns.wait_for(lambda: sc.serves_since("nico2", t_iso), t.wait + 2 + 5)
    time.sleep(1.0)  # the secondary serves for a while

    # and its host comes back on the LAN
    t_heal = time.monotonic()
    lab.heal_host(PRIMARY)

    def terminated():
        p = sc.peer(PRIMARY, "nico")
        return p if p and p["state"] == "TERMINATED" and p["heartbeat"] == "Up" else None

    back = netns.wait_for(terminated, 10)
    t_back = time.monotonic()
    time.sleep(1.0)  # both on the LAN, the client still writing
    sc.stop_writing()

    ev_s = sc.events(SECONDARY, "nico2")
    takeover = sc.first_answer("nico2", t_iso)
    nico_after_lease = sc.acked_by("nico", since=t_iso + t.lease)
    last_nico = max((r["t1"] for r in sc.acked_by("nico")), default=t_iso) - t_iso
    # while isolated (after the lease) nobody may acknowledge the primary's own client; after
    # the heal its requests reach the VIP at the secondary over the LAN, never the primary
    own_after = [r for r in own.records() if t_iso + t.lease <= r["t0"] and r["t1"] < t_heal]
    own_acked_after = [r for r in own_after if r["ok"]] + [
        r for r in own.acked() if r["t1"] >= t_iso + t.lease and r["served_by"] != "nico2"
    ]
    own_after_heal = [r for r in own.acked() if r["t0"] >= t_heal]
    withdrawn = sc.vip_on(PRIMARY, t_iso, held=False)
    p_holds_after_heal = [round(s[0] - t_heal, 2) for s in sc.sampler.samples if s[0] >= t_heal and s[1]]
    both_after_heal = sc.sampler.both_seconds(since=t_heal)
    served_by, have = sc.listing()
    late = t.wait + 1 < takeover <= t.wait + 2
    _, dual, lost = sc.figures(
        "primary host isolated (its bridge port down)",
        t_iso,
        have,
        f"VIP answers from the secondary {takeover:.3f} s after the isolation (limit wait + 1 = {t.wait + 1} s)",
        f"secondary: takeover confirmed by the witness {fmt_s(event_offset(ev_s, 'takeover_confirmed', w_iso))},"
        f" failover active {fmt_s(event_offset(ev_s, 'failover_active', w_iso))}, VIP on its eth0"
        f" {fmt_s(sc.vip_on(SECONDARY, t_iso))} after the isolation",
        f"isolated primary: VIP withdrawn {fmt_s(withdrawn)} after the isolation (lease {t.lease:g} s);"
        f" its last acknowledgement {fmt_s(last_nico)}; acknowledged after the lease: {len(nico_after_lease)};"
        f" own-netns writer while isolated after the lease: {len(own_acked_after)} acknowledged of {len(own_after)}"
        f" (answers {sorted({str(r.get('status') or r.get('err', '?').split(':')[0]) for r in own_after})});"
        f" after heal acknowledged by {sorted({r['served_by'] for r in own_after_heal})}",
        f"on heal: TERMINATED after {t_back - t_heal:.3f} s; VIP on the primary after heal in"
        f" {len(p_holds_after_heal)} samples; on both hosts for {both_after_heal:.3f} s (heartbeat interval {t.hb:g} s)",
    )
    if late:
        print(
            f"  NOTE: the takeover took {takeover:.3f} s: more than wait + 1 = {t.wait + 1} s,"
            f" within wait + 2 = {t.wait + 2} s"
        )
    assert takeover <= t.wait + 1, f"the secondary took over {takeover:.2f} s after the isolation" + sc.logs()
    assert not nico_after_lease, f"the isolated primary acknowledged after its lease: {nico_after_lease[:3]}"
    assert own_after and not own_acked_after, f"the primary's own client was acknowledged: {own_acked_after[:3]}"
    assert withdrawn < t.wait, "the isolated primary withdraws its VIP strictly before the secondary's wait ends"
    assert back, "on heal the primary comes back TERMINATED" + sc.logs()
    assert not lab.has_addr(PRIMARY, lab.vip) and lab.has_addr(SECONDARY, lab.vip)
    assert not p_holds_after_heal, f"the healed primary held the VIP again ({p_holds_after_heal[:5]} s after heal)"
    assert both_after_heal <= t.hb
    assert not sc.acked_by("nico", since=t_heal), "the healed primary acknowledged writes"
    assert served_by == "nico2"
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    assert dual == 0.0


def test_primary_and_secondary_cut_from_each_other_no_takeover(scenario):
    sc, lab = scenario, scenario.lab
    t = sc.t
    # when the two nodes cannot see each other, both still reaching the client and the witness
    t_cut = time.monotonic()
    lab.cut_pair()
    seen = []
    asked = False
    while time.monotonic() < t_cut + t.wait * 3:
        if not asked and time.monotonic() > t_cut + t.wait + 0.5:
            # an operator asks the secondary for a switchover: the primary does not answer it, and the
            # witnesses, who still see the primary, refuse it (the secondary must not take over)
            asked = client_py(lab, "switchover", f"{lab.ip(SECONDARY)}:{PW['nico2']}")
        s = sc.peer(SECONDARY, "nico2")
        seen.append((round(time.monotonic() - t_cut, 1), s and s["state"], s and s["in_charge"]))
        time.sleep(0.5)
    t_heal = time.monotonic()
    events = sc.events(SECONDARY, "nico2")
    codes = [e["code"] for e in events]
    refused = [e for e in events if e["code"] == "takeover_refused"]
    t_solo = t_cut + t.down_after + 2 * t.hb + 0.2  # heartbeats Down, then a solo lease within a witness round
    alone = [r for r in sc.acked_by("nico", since=t_solo) if r["t1"] < t_heal]
    # then nobody took over, and the primary kept serving under its solo lease
    assert not [x for x in seen if x[1] == "FAILOVER_ACTIVE" or x[2]], f"the secondary took over: {seen}"
    # (the asked switchover records its start, "failover invoked", then its refusal: never active)
    assert "failover_active" not in codes and codes.count("failover_shutting_down_primary") <= 1, codes
    assert refused and "witness sees the primary" in refused[0]["remarks"], refused or codes
    assert asked and asked["status"] == 202, asked
    assert any("Switchover not carried out" in e["remarks"] for e in refused), [e["remarks"] for e in refused]
    assert len(alone) > 0.6 * 50 * (t_heal - t_solo), "the primary keeps serving under its solo lease"
    assert sc.sampler.both_seconds() == 0.0 and not lab.has_addr(SECONDARY, lab.vip)

    # and once healed, the pair is Active again: the secondary caught up
    lab.heal_pair()
    active = netns.wait_for(lambda: pair_active(lab)[0], 6)
    t_active = time.monotonic()
    caught_up = netns.wait_for(lambda: {r["mac"] for r in sc.acked()} <= stored_macs(sc.secondary), 2)
    sc.stop_writing()
    served_by, have = sc.listing()
    missing = {r["mac"] for r in sc.acked()} - stored_macs(sc.secondary)
    report = sc.logs() if not (active and caught_up) else ""
    _, dual, lost = sc.figures(
        "primary and secondary cut from each other (both reach the client and the witness)",
        t_cut,
        have,
        f"secondary for {t.wait * 3} s: states {sorted({str(x[1]) for x in seen})}, in charge {any(x[2] for x in seen)};"
        f" {len(refused)} takeover_refused event(s), first: {refused[0]['remarks'] if refused else None!r}",
        f"primary alone (solo lease): {len(alone)} writes acknowledged over {t_heal - t_solo:.1f} s;"
        f" VIP on both hosts' eth0 for {sc.sampler.both_seconds():.3f} s",
        f"after heal: pair Active again {f'after {t_active - t_heal:.1f} s' if active else 'NOT within 6 s'};"
        f" acknowledged writes missing from the secondary's instance: {len(missing)}",
    )
    assert served_by == "nico"
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    assert dual == 0.0
    assert active and caught_up, (
        f"after heal_pair the pair is not Active again / the secondary lacks {len(missing)} acknowledged writes"
        + report
    )


def test_secondary_killed_the_primary_keeps_serving(scenario):
    sc, lab = scenario, scenario.lab
    t = sc.t
    t_kill = sc.secondary.kill()
    time.sleep(t.wait + 1)  # longer than the wait: the primary's lease holds
    p = sc.peer(PRIMARY, "nico")
    t_end = time.monotonic()
    sc.stop_writing()

    events = sc.events(PRIMARY, "nico")
    served_by, have = sc.listing()
    recent = sc.acked_by("nico", since=t_end - 1.0)
    bound = t.down_after + 2 * t.hb  # heartbeats shown Down, then a solo lease within a witness round (and a tick)
    outage = netns.outage_after(sc.client.records(), t_kill)[0]
    _, dual, lost = sc.figures(
        "secondary agent killed",
        t_kill,
        have,
        f"primary: {p and p['state']}, in charge {p and p['in_charge']}, data replication"
        f" {p and p['data_replication']}; acknowledged in the last second: {len(recent)}",
        f"primary's events: {[e['code'] for e in events[-4:]]}",
        f"outage limit {bound:g} s, the agent's own bound: heartbeats shown Down after {t.down_after:g} s"
        f" (writes wait for the secondary until then), then a solo lease within a witness round {t.hb:g} s"
        f" and a tick",
    )
    assert outage <= bound, f"client-visible outage {outage:.3f} s" + sc.logs()
    assert p and p["state"] == "PRIMARY_ACTIVE" and p["in_charge"], p
    assert p["data_replication"] == "Down", p
    assert len(recent) >= 35, "the primary keeps serving"
    assert lab.has_addr(PRIMARY, lab.vip) and served_by == "nico"
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    assert dual == 0.0
    # writes wait until heartbeats are shown Down, then go on under a lease asked for alone at once
    assert outage <= t.down_after + 0.5, f"client-visible outage {outage:.3f} s after the secondary was killed"


def test_primary_frozen_longer_than_the_wait_then_woken(scenario):
    sc, lab = scenario, scenario.lab
    t = sc.t
    own = sc.write_from(PRIMARY, mac_prefix="02:00:01", timeout=2.0)  # the primary's own client, to its VIP
    hs_mac = lab.mac(SECONDARY)
    t_stop, w_stop = sc.primary.freeze(), time.time()
    try:
        netns.wait_for(lambda: sc.serves_since("nico2", t_stop), t.wait + 2 + 3)
        time.sleep(max(0.0, t_stop + t.wait * 2.5 - time.monotonic()))
    finally:
        t_wake, w_wake = sc.primary.wake(), time.time()
    neigh = []
    for _ in range(6):  # the client's neighbour entry for the VIP over ~2 s after the wake
        neigh.append((round(time.monotonic() - t_wake, 2), lab.neigh(CLIENT, lab.vip)))
        time.sleep(0.4)

    def stepped_down():
        # not in charge, at the secondary's generation (a primary never creates one), without the
        # VIP; TERMINATED, or FAILOVER_ACTIVE when the failover request the secondary sent during
        # the freeze reached it on waking (it stops its services, as a switchover does)
        p, s = sc.peer(PRIMARY, "nico"), sc.peer(SECONDARY, "nico2")
        ok = (p and s and not p["in_charge"] and p["generation"] == s["generation"]
              and p["state"] in ("TERMINATED", "FAILOVER_ACTIVE") and not lab.has_addr(PRIMARY, lab.vip))  # fmt: skip
        return p if ok else None

    down = netns.wait_for(stepped_down, 3)
    sc.stop_writing()

    ev_s, ev_p = sc.events(SECONDARY, "nico2"), sc.events(PRIMARY, "nico")
    p_now = sc.peer(PRIMARY, "nico")
    takeover = sc.first_answer("nico2", t_stop)
    after_wake = [r for r in sc.client.acked() if r["t0"] >= t_wake]
    by_primary = sc.acked_by("nico", since=t_wake)
    own_after = [r for r in own.acked() if r["t0"] >= t_wake]
    last_nico = max((r["t1"] for r in sc.acked_by("nico")), default=t_stop) - t_stop
    released = sc.vip_on(PRIMARY, t_wake, held=False)
    woken = [f"{e['code']}" for e in ev_p if datetime.fromisoformat(e["timestamp"]).timestamp() >= w_wake - 0.01]
    served_by, have = sc.listing()
    _, dual, lost = sc.figures(
        f"primary frozen (SIGSTOP) for {t_wake - t_stop:.1f} s, then woken (SIGCONT)",
        t_stop,
        have,
        f"VIP answers from the secondary {takeover:.3f} s after the freeze (limit wait + 2 = {t.wait + 2} s);"
        f" secondary: takeover confirmed {fmt_s(event_offset(ev_s, 'takeover_confirmed', w_stop))},"
        f" failover active {fmt_s(event_offset(ev_s, 'failover_active', w_stop))}",
        f"after the wake: {len(after_wake)} client writes acknowledged, by {sorted({r['served_by'] for r in after_wake})};"
        f" by the primary (any writer): {len(by_primary)}; own-netns writer: {len(own_after)} acknowledged"
        f" (by {sorted({r['served_by'] for r in own_after})}); the primary's last acknowledgement"
        f" {fmt_s(last_nico)} after the freeze",
        f"client neighbour entry for the VIP after the wake: {sorted({m for _, m in neigh})} in {len(neigh)} samples"
        f" over {neigh[-1][0]:.1f} s (secondary {hs_mac}, primary {lab.mac(PRIMARY)})",
        f"woken primary: VIP removed {fmt_s(released)} after the wake; events since: {woken};"
        f" now {p_now and p_now['state']} (generation {p_now and p_now['generation']}, in charge"
        f" {p_now and p_now['in_charge']}); VIP on both hosts' eth0 for {sc.sampler.both_seconds():.2f} s;"
        f" the address left the frozen host {fmt_s(sc.vip_on(PRIMARY, t_stop, held=False))} after the freeze"
        f" (its kernel lifetime, no longer renewed)",
    )
    report = sc.logs() if not down else ""
    assert takeover <= t.wait + 2, f"the secondary took over {takeover:.2f} s after the freeze" + sc.logs()
    assert not by_primary, f"the woken primary acknowledged writes: {by_primary[:3]}" + sc.logs()
    assert after_wake and {r["served_by"] for r in after_wake} == {"nico2"}
    assert all(mac == hs_mac for _, mac in neigh), f"the client's neighbour entry moved: {neigh}"
    assert released < 1.0 and not lab.has_addr(PRIMARY, lab.vip), "the woken primary removed the VIP"
    assert served_by == "nico2"
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    assert dual == 0.0
    assert sc.sampler.both_seconds() == 0.0, "the frozen host kept the VIP while the secondary held it"
    assert sc.vip_on(PRIMARY, t_stop, held=False) < t.wait, (
        "the frozen host's kernel dropped the VIP before the takeover"
    )
    assert down, f"the woken primary is {p_now and p_now['state']}, not stepped down" + report
