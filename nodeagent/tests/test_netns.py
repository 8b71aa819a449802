"""Issue 11 on test hosts in network namespaces (see netns.py): the harness itself, and the
scenario "primary agent SIGKILLed" with real agents on real interfaces.

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
from pathlib import Path

import pytest

from . import netns
from .agentutil import REPO, node_toml, pair_toml
from .netns import CLIENT, PRIMARY, SECONDARY, WITNESS, Lab

pytestmark = [pytest.mark.slow, pytest.mark.netns]

WAIT = 3  # failover_wait, seconds
PW = {"nico": "pw-primary", "nico2": "pw-secondary"}
IPROUTE_KEYS = 'vip_driver = "iproute"\nhm_interface = "eth0"\n'


@pytest.fixture
def lab():
    """A fresh lab (LAN bridge, hp/hs/hc/hw, direct link), removed also when the test fails."""
    netns.require()
    lab = Lab(direct=True)
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()
        left = [n for n in netns.netns_list() if n in lab.names]
        assert not left, f"namespaces left behind: {left}"


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

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.logpath.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return f"--- {self.node} log (last {n} lines) ---\n" + "\n".join(lines[-n:])


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
        infos = ha_infos(lab, (PRIMARY, "nico"), (SECONDARY, "nico2"))
        last = infos
        p, s = infos["nico"], infos["nico2"]
        if p and s and p["peers"] and s["peers"]:
            pp, sp = p["peers"][0], s["peers"][0]
            if (
                pp["state"] == "PRIMARY_ACTIVE"
                and sp["state"] == "SECONDARY_ACTIVE"
                and sp["heartbeat"] == "Up"
                and pp["data_replication"] == "Up"
                and sp["data_replication"] == "Up"
                and pp["in_charge"]
                and lab.has_addr(PRIMARY, lab.vip)
            ):
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

    def both_seconds(self) -> float:
        s = self.samples
        return sum(b[0] - a[0] for a, b in zip(s, s[1:], strict=False) if a[1] and a[2])


def test_primary_agent_sigkilled_vip_moves_to_the_secondary(lab, tmp_path):
    hp, hs = lab.host(PRIMARY), lab.host(SECONDARY)
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        node_toml("nico", "VA-High", "primary", hp.ip, PW["nico"], vip=lab.vip, direct_connect=hp.direct_ip)
        + IPROUTE_KEYS
        + 'direct_interface = "eth1"\n'
        + node_toml("nico2", "VA-High", "secondary", hs.ip, PW["nico2"], direct_connect=hs.direct_ip)
        + IPROUTE_KEYS
        + 'direct_interface = "eth1"\n'
        + pair_toml("nico", "nico2", failover="Automatic", failback="Manual", wait=WAIT, stab=1800)
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

        netns.wait_for(secondary_serves, WAIT + 1 + 10)
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

    listing = client_py(lab, "elements", "--vip", lab.vip, "--password", PW["nico"])
    have = set(listing["macs"])
    lost = [r["mac"] for r in acked if r["mac"] not in have]
    after = [r for r in recs if r["t0"] >= t_kill]
    rate = len(recs) / max(1e-9, recs[-1]["t1"] - recs[0]["t0"])
    print(
        f"\n[netns] primary agent SIGKILLed, Automatic, wait {WAIT} s:"
        f"\n  VIP answers from the secondary {takeover:.3f} s after the kill (limit {WAIT + 1} s)"
        f"\n  client-visible outage {outage:.3f} s (outage/wait {outage / WAIT:.2f});"
        f" failed requests after the kill: {sum(not r['ok'] for r in after)}"
        f"\n  dual-ownership {dual:.3f} s"
        f"\n  acknowledged writes lost {len(lost)} of {len(acked)} ({len(recs)} requests, {rate:.1f}/s)"
        f"\n  client neighbour entry for the VIP {neigh_now} (secondary eth0 {hs_mac}, primary eth0 {lab.mac(PRIMARY)})"
        f"\n  VIP address on both hosts' eth0 for {sampler.both_seconds():.2f} s"
        f" (the killed agent's host keeps it until the agent starts again)"
    )
    if first_fail:
        print(f"  first failure after the kill: {first_fail.get('err') or first_fail.get('status')}")
    assert took is not None, "the VIP never answered from the secondary\n" + secondary.log_tail()
    assert takeover <= WAIT + 1, f"VIP answered from the secondary {takeover:.2f}s after the kill (wait {WAIT} s)"
    assert neigh_now == hs_mac, "the client's neighbour entry for the VIP shows the secondary's eth0 MAC"
    assert listing["status"] == 200 and listing["served_by"] == "nico2"
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    assert dual == 0.0
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


def _pair_fleet(lab: Lab, tmp_path: Path) -> Path:
    hp, hs = lab.host(PRIMARY), lab.host(SECONDARY)
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        node_toml("nico", "VA-High", "primary", hp.ip, PW["nico"], vip=lab.vip, direct_connect=hp.direct_ip)
        + IPROUTE_KEYS
        + 'direct_interface = "eth1"\n'
        + node_toml("nico2", "VA-High", "secondary", hs.ip, PW["nico2"], direct_connect=hs.direct_ip)
        + IPROUTE_KEYS
        + 'direct_interface = "eth1"\n'
        + pair_toml("nico", "nico2", failover="Automatic", failback="Manual", wait=WAIT, stab=1800)
    )
    return fleet


def test_the_direct_link_pulled_is_an_event_not_a_failover(lab, tmp_path):
    # given an Active pair heartbeating over both the LAN and the direct cable
    fleet = _pair_fleet(lab, tmp_path)
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
        time.sleep(WAIT + 1.5)  # longer than the Long Failover Wait

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
            f"\n[netns] direct link pulled: path-down event after {time.monotonic() - t_pull:.1f} s at most; "
            f"states {p['state']} / {s['state']}; no takeover"
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
