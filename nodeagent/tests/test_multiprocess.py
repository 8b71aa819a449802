"""Real `serve` processes on loopback: SIGKILL failover, the §5 walk-through, 2:1.

Each test gets its own random 127.X.Y.0/24 so runs never collide.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time

import aiohttp
import pytest

from nodeagent.clock import now_iso

from .agentutil import PORT, REPO, Proc, call, free_subnet, ha_info, node_toml, pair_toml, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # times a restart: alone (make test)

ELEMENTS = "/api/contextaware/v1/elements"


def basic(password):
    return {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}


def gethainfo(fleet, node, state_dir, cwd):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nodeagent",
            "gethainfo",
            "--fleet",
            str(fleet),
            "--node",
            node,
            "--state-dir",
            str(state_dir),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=20,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def cli_out(*args, cwd):
    out = subprocess.run(
        [sys.executable, "-m", "nodeagent", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=20,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def peer_of(info, i=0):
    return info["peers"][i]


@pytest.fixture
def pair_fleet(tmp_path):
    net = free_subnet()
    ips = {"p": f"{net}.2", "vip": f"{net}.1", "s": f"{net}.3"}
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        node_toml("nico", "VA-High", "primary", ips["p"], "pw-primary", vip=ips["vip"])
        + node_toml("nico2", "VA-High", "secondary", ips["s"], "pw-secondary")
        + pair_toml("nico", "nico2", failover="Automatic", failback="Manual", wait=3, stab=2)
    )
    procs = {}

    def start(name):
        procs[name] = Proc(fleet, name, tmp_path / name, tmp_path)
        return procs[name]

    yield fleet, ips, start, procs
    for p in procs.values():
        p.stop()


def wait_paired(ips, timeout=15):
    def ok():
        s = peer_of(ha_info(ips["s"], "pw-secondary"))
        p = peer_of(ha_info(ips["p"], "pw-primary"))
        return (
            p["state"] == "PRIMARY_ACTIVE"
            and s["state"] == "SECONDARY_ACTIVE"
            and s["heartbeat"] == "Up"
            and p["data_replication"] == "Up"
            and s["data_replication"] == "Up"
        )

    wait_until(ok, timeout, what="pair PRIMARY_ACTIVE / SECONDARY_ACTIVE with replication Up")


async def writer(vip, password, acked: list, stop: asyncio.Event, served_by: list):
    """Writes one element after another to the VIP; remembers each acknowledged one."""
    i = 0
    url = f"http://{vip}:{PORT}{ELEMENTS}"
    async with aiohttp.ClientSession(headers=basic(password)) as s:
        while not stop.is_set():
            mac = f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
            try:
                async with s.post(
                    url, json={"mac": mac, "x": i, "y": -i, "floor": 1}, timeout=aiohttp.ClientTimeout(total=1.0)
                ) as r:
                    if r.status == 201:
                        acked.append(mac)
                        served_by.append((time.monotonic(), (await r.json())["served_by"]))
                        i += 1
                        continue
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.01)


def test_sigkill_of_primary_moves_the_vip_and_loses_no_acknowledged_write(pair_fleet, tmp_path):
    fleet, ips, start, procs = pair_fleet
    start("nico")
    start("nico2")
    wait_paired(ips)

    async def scenario():
        acked, served_by = [], []
        stop = asyncio.Event()
        w = asyncio.create_task(writer(ips["vip"], "pw-primary", acked, stop, served_by))
        await asyncio.sleep(0.8)
        before = len(acked)
        assert before > 20, "writes go to the VIP while the pair is healthy"
        killed_at = time.monotonic()
        procs["nico"].kill()  # SIGKILL
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(b == "nico2" for _, b in served_by):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        stop.set()
        await w
        return acked, served_by, killed_at

    acked, served_by, killed_at = asyncio.run(scenario())
    first_secondary = next(t for t, b in served_by if b == "nico2")
    gap = first_secondary - killed_at
    assert 1.5 < gap < 3 * 1.1 + 0.5, f"VIP answered from the secondary {gap:.2f}s after the SIGKILL (wait 3 s)"
    # the VIP answers from the secondary, which is FAILOVER_ACTIVE
    out = gethainfo(fleet, "nico2", tmp_path / "nico2", tmp_path)
    assert out.startswith("Health Monitor is running. Retrieving HA related information")
    assert "Current state: FAILOVER_ACTIVE" in out and "Heartbeat status: Down" in out
    # every acknowledged write is there
    st, listing = call(ips["vip"], "x", "GET", "/", tls=False)  # the VIP serves the service API, not the HM API
    assert st == 404

    async def fetch_all():
        async with aiohttp.ClientSession(headers=basic("pw-primary")) as s:
            async with s.get(f"http://{ips['vip']}:{PORT}{ELEMENTS}?limit=1000000") as r:
                assert r.status == 200
                return await r.json()

    data = asyncio.run(fetch_all())
    assert data["served_by"] == "nico2"
    have = {e["mac"] for e in data["elements"]}
    lost = [m for m in acked if m not in have]
    assert not lost, f"{len(lost)} acknowledged writes lost"
    assert len(acked) > 20
    print(f"acked={len(acked)} gap={gap:.3f}s")
    # the killed primary's saved configuration still says it was PRIMARY_ACTIVE
    out = gethainfo(fleet, "nico", tmp_path / "nico", tmp_path)
    assert out.startswith("Health Monitor is not running. Following information is from the last saved configuration")
    assert "Last shutdown state: PRIMARY_ACTIVE" in out
    # brought back, the primary stays TERMINATED: the secondary holds a newer generation
    start("nico")
    wait_until(
        lambda: (lambda p: p["state"] == "TERMINATED" and p["heartbeat"] == "Up")(
            peer_of(ha_info(ips["p"], "pw-primary"))
        ),
        10,
        what="primary TERMINATED with heartbeats Up",
    )
    p = peer_of(ha_info(ips["p"], "pw-primary"))
    s = peer_of(ha_info(ips["s"], "pw-secondary"))
    assert not p["in_charge"] and s["in_charge"] and p["generation"] == s["generation"] == 2


def post_element(vip, password, mac, x):
    async def go():
        async with aiohttp.ClientSession(headers=basic(password)) as s:
            async with s.post(f"http://{vip}:{PORT}{ELEMENTS}", json={"mac": mac, "x": x, "y": 0, "floor": 2}) as r:
                return r.status, await r.json()

    return asyncio.run(go())


def get_elements(vip, password):
    async def go():
        async with aiohttp.ClientSession(headers=basic(password)) as s:
            async with s.get(f"http://{vip}:{PORT}{ELEMENTS}?limit=100000") as r:
                return r.status, await r.json()

    return asyncio.run(go())


def is_subsequence(wanted, seq):
    it = iter(seq)
    return all(any(x == w for x in it) for w in wanted)


def test_section5_walkthrough_through_the_api(pair_fleet, tmp_path):
    fleet, ips, start, procs = pair_fleet
    start("nico")
    start("nico2")
    wait_paired(ips)
    P, S = (ips["p"], "pw-primary"), (ips["s"], "pw-secondary")
    out = cli_out("getserverinfo", "--host", ips["s"], "--password", "pw-secondary", cwd=tmp_path)
    assert out.startswith(
        "Health Monitor is running\nRetrieving MSE Services status.\n"
        "MSE services are up and in DORMANT mode, getting the status\n"
    )
    assert "High Availability Role: 2\n" in out and f"Health Monitor Ip Address: {ips['s']}\n" in out
    out = cli_out("getserverinfo", "--host", ips["p"], "--password", "pw-primary", cwd=tmp_path)
    assert "MSE services are up, getting the status" in out and "High Availability Role: 1\n" in out
    for i in range(5):
        assert post_element(ips["vip"], "pw-primary", f"02:00:00:00:00:{i:02x}", i)[0] == 201

    # 2-3. switchover from the manager (sent to the primary, carried out by the secondary)
    st, out = call(*P, "POST", "/hm/v1/ha/failover", {})
    assert st == 202, out
    wait_until(lambda: peer_of(ha_info(*S))["state"] == "FAILOVER_ACTIVE", 10, what="secondary FAILOVER_ACTIVE")
    wait_until(lambda: not ha_info(*P)["running"], 5, what="primary services stopped")
    p = peer_of(ha_info(*P))
    assert p["state"] == "FAILOVER_ACTIVE" and not p["in_charge"]
    out = gethainfo(fleet, "nico", tmp_path / "nico", tmp_path)
    assert out.startswith("Health Monitor is not running. Following information is from the last saved configuration")
    assert out.rstrip().endswith("Last shutdown state: FAILOVER_ACTIVE")
    assert "Heartbeat status" not in out
    # the VIP now answers from the secondary, with the data
    st, data = get_elements(ips["vip"], "pw-primary")
    assert st == 200 and data["served_by"] == "nico2" and data["count"] == 5
    assert post_element(ips["vip"], "pw-primary", "02:00:00:00:01:00", 100)[0] == 201  # written during failover

    # 4. primary brought back up: TERMINATED, secondary still FAILOVER_ACTIVE
    st, out = call(*P, "POST", "/hm/v1/services/start", {})
    assert st == 200, out
    wait_until(
        lambda: peer_of(ha_info(*P))["state"] == "TERMINATED" and peer_of(ha_info(*P))["heartbeat"] == "Up",
        10,
        what="primary TERMINATED",
    )
    assert peer_of(ha_info(*S))["state"] == "FAILOVER_ACTIVE"

    # failback right after the failover: refused, saying when it will be allowed
    st, out = call(*P, "POST", "/hm/v1/ha/failback", {})
    if st == 409:
        assert "not allowed until" in out["error"]
        allowed = peer_of(ha_info(*S))["allowed_switch_at"]
        assert allowed in out["error"]
        wait_until(
            lambda: call(*P, "POST", "/hm/v1/ha/failback", {})[0] == 202, 10, interval=0.2, what="failback accepted"
        )
    else:
        assert st == 202, out

    # 5-7. FAILBACK_ACTIVE -> FAILBACK_COMPLETE / SECONDARY_ALONE -> PRIMARY_ACTIVE / SECONDARY_ACTIVE
    wait_until(
        lambda: (
            peer_of(ha_info(*P))["state"] == "PRIMARY_ACTIVE" and peer_of(ha_info(*S))["state"] == "SECONDARY_ACTIVE"
        ),
        15,
        what="back to PRIMARY_ACTIVE / SECONDARY_ACTIVE",
    )
    p, s = peer_of(ha_info(*P)), peer_of(ha_info(*S))
    assert p["in_charge"] and not s["in_charge"] and p["generation"] == s["generation"] == 3
    p_states = [t["state"] for t in p["transitions"]]
    s_states = [t["state"] for t in s["transitions"]]
    assert is_subsequence(
        [
            "PRIMARY_ACTIVE",
            "FAILOVER_INVOKED",
            "FAILOVER_ACTIVE",
            "TERMINATED",
            "FAILBACK_ACTIVE",
            "FAILBACK_COMPLETE",
            "PRIMARY_ACTIVE",
        ],
        p_states,
    ), p_states
    assert is_subsequence(
        [
            "SECONDARY_ACTIVE",
            "FAILOVER_INVOKED",
            "FAILOVER_ACTIVE",
            "FAILBACK_ACTIVE",
            "SECONDARY_ALONE",
            "SECONDARY_ACTIVE",
        ],
        s_states,
    ), s_states
    # the write made during the failover came back with the failback
    st, data = get_elements(ips["vip"], "pw-primary")
    assert data["served_by"] == "nico" and data["count"] == 6
    # the secondary's events, in the seed's words and order
    st, ev = call(*S, "GET", "/hm/v1/events?since=0")
    descs = [e["description"] for e in ev["events"]]
    assert is_subsequence(
        [
            "Configuration successfully created",
            "Heartbeats have been setup successfully",
            "Failover invoked; shutting down primary instance",
            "Failover has been invoked. Reconfiguring instance database",
            "Failover invoked; starting application instance",
            "Instance is in failover active state",
            "Failback in progress; starting primary database instance",
        ],
        descs,
    ), descs
    seqs = [e["seq"] for e in ev["events"]]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.fixture
def two_to_one(tmp_path):
    net = free_subnet()
    ips = {"3310": f"{net}.2", "vip3310": f"{net}.1", "3350": f"{net}.4", "vip3350": f"{net}.5", "3355": f"{net}.6"}
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        node_toml("mse3310", "3310", "primary", ips["3310"], "pw-3310", vip=ips["vip3310"], version="7.2.103.0")
        + node_toml("mse3350", "3350", "primary", ips["3350"], "pw-3350", vip=ips["vip3350"], version="7.2.103.0")
        + node_toml("mse3355", "3355", "secondary", ips["3355"], "pw-3355", version="7.2.103.0")
        + pair_toml("mse3310", "mse3355", failover="Automatic", wait=2)
        + pair_toml("mse3350", "mse3355", failover="Automatic", wait=2)
    )
    procs = {n: Proc(fleet, n, tmp_path / n, tmp_path) for n in ("mse3310", "mse3350", "mse3355")}
    yield fleet, ips, procs
    for p in procs.values():
        p.stop()


def test_two_to_one_secondary_takes_over_one_primary_alone(two_to_one, tmp_path):
    fleet, ips, procs = two_to_one
    S = (ips["3355"], "pw-3355")

    def all_active():
        peers = ha_info(*S)["peers"]
        return len(peers) == 2 and all(
            p["state"] == "SECONDARY_ACTIVE" and p["data_replication"] == "Up" for p in peers
        )

    wait_until(all_active, 15, what="3355 backing both primaries")
    for i in range(10):
        assert post_element(ips["vip3310"], "pw-3310", f"02:33:10:00:00:{i:02x}", i)[0] == 201
    for i in range(7):
        assert post_element(ips["vip3350"], "pw-3350", f"02:33:50:00:00:{i:02x}", i)[0] == 201
    out = gethainfo(fleet, "mse3355", tmp_path / "mse3355", tmp_path)
    assert "Number of paired peers: 2" in out
    assert (
        "Instance database name: mseos3\nInstance database port: 1524\nDataguard configuration name: dg_mse3\nPrimary database alias: mseop3s"
        in out
    )
    assert (
        "Instance database name: mseos4\nInstance database port: 1525\nDataguard configuration name: dg_mse4\nPrimary database alias: mseop4s"
        in out
    )
    # each instance holds its own primary's data
    inst = {p["peer_name"]: p["instance"] for p in ha_info(*S)["peers"]}
    assert inst["mse3310"]["count"] == 10 and inst["mse3350"]["count"] == 7

    procs["mse3310"].kill()
    wait_until(
        lambda: {p["peer_name"]: p["state"] for p in ha_info(*S)["peers"]}["mse3310"] == "FAILOVER_ACTIVE",
        10,
        what="3355 takes over the 3310",
    )
    states = {p["peer_name"]: p["state"] for p in ha_info(*S)["peers"]}
    assert states == {"mse3310": "FAILOVER_ACTIVE", "mse3350": "SECONDARY_ACTIVE"}
    st, data = get_elements(ips["vip3310"], "pw-3310")
    assert st == 200 and data["served_by"] == "mse3355" and data["count"] == 10
    st, data = get_elements(ips["vip3350"], "pw-3350")
    assert st == 200 and data["served_by"] == "mse3350" and data["count"] == 7
    assert peer_of(ha_info(ips["3350"], "pw-3350"))["state"] == "PRIMARY_ACTIVE"

    # health checks: the 3355 is in charge of one VIP now
    async def health(host, path):
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://{host}:{PORT}{path}", ssl=False) as r:
                return r.status, await r.json()

    st, body = asyncio.run(health(ips["3355"], "/primary"))
    assert st == 200 and body["in_charge"] == [ips["vip3310"]]
    assert asyncio.run(health(ips["3355"], "/secondary"))[0] == 503
    assert asyncio.run(health(ips["3350"], "/primary"))[0] == 200


def test_a_reset_of_one_primarys_copy_on_a_2_to_1_secondary_leaves_the_other_untouched(two_to_one, tmp_path):
    fleet, ips, procs = two_to_one
    S = (ips["3355"], "pw-3355")

    def instances():
        return {
            p["peer_name"]: (p["state"], p["data_replication"], p["instance"]["count"]) for p in ha_info(*S)["peers"]
        }

    wait_until(lambda: all(v[:2] == ("SECONDARY_ACTIVE", "Up") for v in instances().values()) and len(instances()) == 2,
               15, what="3355 backing both primaries")  # fmt: skip
    for i in range(10):
        assert post_element(ips["vip3310"], "pw-3310", f"02:33:10:00:01:{i:02x}", i)[0] == 201
    for i in range(7):
        assert post_element(ips["vip3350"], "pw-3350", f"02:33:50:00:01:{i:02x}", i)[0] == 201
    wait_until(lambda: {k: v[2] for k, v in instances().items()} == {"mse3310": 10, "mse3350": 7}, 10,
               what="both copies complete")  # fmt: skip

    def histories():
        return {p["peer_name"]: p["transitions"] for p in ha_info(*S)["peers"]}

    before = histories()
    generation = {p["peer_name"]: p["generation"] for p in ha_info(*S)["peers"]}
    # the 3310's copy is reset, emptied: only the 3310's pairing and instance are touched
    reset_at = now_iso()
    st, out = call(*S, "POST", f"/hm/v1/ha/peers/{ips['3310']}/reset-sync", {"empty_data": True})
    assert st == 200 and out == {"reset": ips["3310"], "empty_data": True, "records": 0}, out
    assert instances()["mse3350"] == ("SECONDARY_ACTIVE", "Up", 7)
    # the 3310's per-primary state was made again (its history starts at the reset), at the
    # same generation; the 3350's is the one it had
    after = histories()
    assert after["mse3350"] == before["mse3350"]
    assert after["mse3310"][0]["at"] >= reset_at > before["mse3310"][-1]["at"], (before, after)
    assert {p["peer_name"]: p["generation"] for p in ha_info(*S)["peers"]} == generation
    # the 3310 copies it again; the 3350's pair never moved
    wait_until(lambda: instances()["mse3310"] == ("SECONDARY_ACTIVE", "Up", 10), 15, what="the 3310's copy again")
    assert instances()["mse3350"] == ("SECONDARY_ACTIVE", "Up", 7)
    st, events = call(*S, "GET", "/hm/v1/events?since=0&limit=1000")
    resets = [e for e in events["events"] if e["code"] == "sync_reset"]
    assert [e["peer"] for e in resets] == [ips["3310"]] and "its data emptied" in resets[0]["remarks"]
    # a primary has nothing to reset, and neither does an unknown peer
    assert call(ips["3350"], "pw-3350", "POST", f"/hm/v1/ha/peers/{ips['3355']}/reset-sync", {})[0] == 409
    assert call(*S, "POST", "/hm/v1/ha/peers/127.0.0.9/reset-sync", {})[0] == 404
