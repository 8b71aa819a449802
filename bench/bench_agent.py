"""Node agent benchmarks; prints one JSON line per figure and records them (docs/benchmarks.md).

    python bench/bench_agent.py [--wait 10] [--farm-nodes 2000] [--steady 600] [--hog 120]
                                [--only failover,heartbeat,farm]

* failover: two `serve` processes (automatic failover, the given wait); a writer writes to
  the VIP without pause; the primary is SIGKILLed; the unavailability window is the time
  from the kill to the first write acknowledged by the secondary, beside its floor (the
  wait) as a ratio (target <= 1.1), and acknowledged writes missing afterwards (target 0).
* heartbeat: the mean heartbeat response time (signed UDP datagram to the primary, its ack
  back, to its arrival as the kernel stamped it) over the last 50 heartbeats on loopback,
  beside its floor measured in the same run, the same way:
  a bare asyncio UDP echo between two processes at the same pace (target <= 0.5 ms).
* farm: one `farm` process running N nodes (N/2 pairs, failover Automatic, wait 10 s):
  ready time (every node listening and 50 sampled pairs Up; target <= 30 s); then --steady
  seconds watched (50 sampled pairs Up each minute, CPU of the farm process; target <= 50 %
  of one core); then --hog seconds with a CPU hog process on every core; then every pair
  checked: a false failover (a secondary in charge, a generation above 1, a failover event)
  fails the bench. RSS per node is printed raw and net of a bare interpreter with the same
  imports (the floor; target <= 60 KB). A farm that does not start, a sampled pair that is
  not Up, or a false failover exits 1. The farm's state directories go on /dev/shm when
  there is one (see farm_state_root), and the row says where they were.

Everything runs on loopback (127.0.0.0/8), in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import record  # noqa: E402

from nodeagent import heartbeat  # noqa: E402
from nodeagent.client import AgentClient  # noqa: E402

ROWS: list[dict] = []  # what record() writes to docs/benchmarks.md

PORT = 8001
ELEMENTS = "/api/contextaware/v1/elements"


def emit(**kw):
    print(json.dumps(kw), flush=True)


def env():
    return {**os.environ, "PYTHONPATH": str(REPO)}


def serve(fleet: Path, name: str, tmp: Path) -> subprocess.Popen:
    log = open(tmp / f"{name}.log", "ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nodeagent",
            "serve",
            "--fleet",
            str(fleet),
            "--node",
            name,
            "--state-dir",
            str(tmp / name),
        ],
        cwd=tmp,
        env=env(),
        stdout=log,
        stderr=log,
    )


async def ha_info(session, host, password):
    return await AgentClient(session, host, password, timeout=2).call("GET", "/hm/v1/ha-info")


async def wait_paired(session, p, s, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            a = (await ha_info(session, *p))["peers"][0]
            b = (await ha_info(session, *s))["peers"][0]
            if a["data_replication"] == "Up" and b["state"] == "SECONDARY_ACTIVE" and b["data_replication"] == "Up":
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("pair did not come up")


def two_node_fleet(tmp: Path, wait: float) -> tuple[Path, dict]:
    net = f"127.{random.randint(100, 199)}.{random.randint(1, 250)}"
    ips = {"p": f"{net}.2", "vip": f"{net}.1", "s": f"{net}.3"}
    fleet = tmp / "pair.toml"
    fleet.write_text(f"""
[[node]]
name = "bp"
type = "VA-High"
version = "8.0.110.0"
role = "primary"
hm_ip = "{ips["p"]}"
vip = "{ips["vip"]}"
netmask = "255.255.255.0"
password = "bench-p"

[[node]]
name = "bs"
type = "VA-High"
version = "8.0.110.0"
role = "secondary"
hm_ip = "{ips["s"]}"
password = "bench-s"

[[pair]]
primary = "bp"
secondary = "bs"
failover_type = "Automatic"
failback_type = "Manual"
failover_wait = {wait}
""")
    return fleet, ips


async def bench_pair(wait: float, do_failover: bool, do_heartbeat: bool, heartbeat_settle: float = 55.0) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as d:
        tmp = Path(d)
        fleet, ips = two_node_fleet(tmp, wait)
        procs = [serve(fleet, "bp", tmp), serve(fleet, "bs", tmp)]
        try:
            async with aiohttp.ClientSession() as session:
                P, S = (ips["p"], "bench-p"), (ips["s"], "bench-s")
                await wait_paired(session, P, S)
                if do_heartbeat:
                    # the figure is the mean of the last 50 heartbeats (one a second at wait 10):
                    # let 50 steady ones replace those of the pairing (first connection, sync)
                    await asyncio.sleep(heartbeat_settle)
                    s = (await ha_info(session, *S))["peers"][0]
                    floor = await udp_echo_floor(tmp, interval=min(1.0, max(0.1, wait / 10)))
                    value = s["mean_heartbeat_ms"]
                    if value is None:
                        raise SystemExit("bench: the secondary measured no heartbeat response time")
                    row = {"figure": "mean heartbeat response (last 50, loopback)", "value": value, "unit": "ms",
                           "floor": round(floor, 3), "ratio": round(value / floor, 2), "target": "≤ 0.5 ms",
                           "ok": value <= 0.5, "note": "signed UDP datagram to the primary and its ack; "
                           "floor: a bare asyncio UDP echo between two processes at the same pace; both to the reply's "
                           "arrival as the kernel stamped it (SO_TIMESTAMPNS)"}  # fmt: skip
                    emit(**row)
                    ROWS.append(row)
                if do_failover:
                    await failover_window(session, ips, procs[0], wait)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                    p.wait()


async def failover_window(session, ips, primary: subprocess.Popen, wait: float) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(b"admin:bench-p").decode()}
    url = f"http://{ips['vip']}:{PORT}{ELEMENTS}"
    acked: list[str] = []
    first_by_secondary: list[float] = []
    stop = asyncio.Event()

    async def writer():
        i = 0
        async with aiohttp.ClientSession(headers=auth) as s:
            while not stop.is_set():
                mac = "02:" + ":".join(f"{(i >> sh) & 255:02x}" for sh in (32, 24, 16, 8, 0))
                try:
                    async with s.post(
                        url, json={"mac": mac, "x": i, "y": 0, "floor": 1}, timeout=aiohttp.ClientTimeout(total=1)
                    ) as r:
                        if r.status == 201:
                            body = await r.json()
                            acked.append(mac)
                            i += 1
                            if body["served_by"] == "bs" and not first_by_secondary:
                                first_by_secondary.append(time.monotonic())
                            continue
                except (TimeoutError, aiohttp.ClientError, OSError):
                    pass
                await asyncio.sleep(0.005)

    w = asyncio.create_task(writer())
    await asyncio.sleep(2.0)
    kill_at = time.monotonic()
    primary.send_signal(signal.SIGKILL)
    deadline = kill_at + wait * 3 + 5
    while not first_by_secondary and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    stop.set()
    await w
    if not first_by_secondary:
        raise SystemExit("bench: the secondary never answered on the VIP after the primary was killed")
    window = first_by_secondary[0] - kill_at
    row = {"figure": "unavailability after SIGKILL of the primary", "value": round(window, 3), "unit": "s",
           "floor": wait, "ratio": round(window / wait, 3), "target": "≤ 1.1 × the wait", "ok": window / wait <= 1.1}  # fmt: skip
    emit(**row)
    ROWS.append(row)
    async with aiohttp.ClientSession(headers=auth) as s:
        async with s.get(url + "?limit=100000000") as r:
            data = await r.json()
    have = {e["mac"] for e in data["elements"]}
    lost = sum(1 for m in acked if m not in have)
    row = {"figure": f"acknowledged writes lost (of {len(acked)})", "value": lost, "target": "0", "ok": lost == 0}
    emit(**row)
    ROWS.append(row)
    if lost:
        raise SystemExit(f"bench: {lost} acknowledged writes lost in the failover")


ECHO_SERVER = """
import asyncio, sys
class Echo(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, addr): self.t.sendto(data, addr)
async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Echo, local_addr=(sys.argv[1], int(sys.argv[2])))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def udp_echo_floor(tmp: Path, interval: float, count: int = 50) -> float:
    """The floor of a heartbeat's response: a bare asyncio UDP echo in another process, the
    same size of datagram, one every ``interval`` (as heartbeats go); the mean in ms."""
    host = f"127.{random.randint(100, 199)}.{random.randint(1, 250)}.9"
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, host, "8001"], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"ready":
            raise SystemExit("bench: the UDP echo server did not start")
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[float] = asyncio.Queue()
        # measured as the agent measures its heartbeats: to the reply's arrival as the kernel
        # stamped it (heartbeat.arrival), where the kernel gives stamps
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect((host, 8001))
        stamped = heartbeat.STAMP_OPTION is not None
        if stamped:
            sock.setsockopt(socket.SOL_SOCKET, heartbeat.STAMP_OPTION, 1)

        def readable() -> None:
            if stamped:
                _, ancillary, _, _ = sock.recvmsg(2048, heartbeat.STAMP_SPACE)
                arrived = heartbeat.arrival(ancillary)
            else:
                sock.recv(2048)
                arrived = None
            got.put_nowait(arrived if arrived is not None else time.time())

        loop.add_reader(sock.fileno(), readable)
        payload = os.urandom(400)  # a heartbeat datagram's size
        rtts = []
        try:
            for _ in range(count + 5):
                t0 = time.time()
                sock.send(payload)
                rtts.append(await asyncio.wait_for(got.get(), 2) - t0)
                await asyncio.sleep(interval)
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
        rtts = rtts[5:]
        return sum(rtts) / len(rtts) * 1000
    finally:
        server.kill()
        server.wait()


def farm_fleet(tmp: Path, n: int) -> Path:
    pairs = n // 2
    lines = ["[agent]", "port = 8001", ""]
    for i in range(pairs):
        a, b = divmod(i, 250)
        lines += [
            "[[node]]",
            f'name = "fp{i}"',
            'type = "3310"',
            'version = "8.0.110.0"',
            'role = "primary"',
            f'hm_ip = "127.241.{a}.{b + 1}"',
            f'vip = "127.242.{a}.{b + 1}"',
            'netmask = "255.0.0.0"',
            f'password = "farm-p{i}"',
            "",
            "[[node]]",
            f'name = "fs{i}"',
            'type = "3355"',
            'version = "8.0.110.0"',
            'role = "secondary"',
            f'hm_ip = "127.243.{a}.{b + 1}"',
            f'password = "farm-s{i}"',
            "",
            "[[pair]]",
            f'primary = "fp{i}"',
            f'secondary = "fs{i}"',
            'failover_type = "Automatic"',
            "failover_wait = 10",
            "",
        ]
    f = tmp / "farm.toml"
    f.write_text("\n".join(lines))
    return f


@contextlib.contextmanager
def farm_state_root(tmp: Path):
    """Where the farm's 2,000 state directories go, and what that is: RAM-backed /dev/shm when
    there is one. Each real appliance writes its own disk; one ext4 disk taking every node's
    files (each state save is a new inode, and ext4 scans past the inodes freed in the last
    seconds for each new one) measured 19 s of start-up on tmpfs and 27-65 s on ext4 here,
    the difference in kernel time, growing with every run that had just deleted a farm."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="bench-farm-state-", dir=shm))
        try:
            yield root, "tmpfs (/dev/shm)"
        finally:
            shutil.rmtree(root, ignore_errors=True)
    else:
        yield tmp / "state", f"the filesystem of {tmp}"


def du_mb(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return round(total / 2**20)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


BARE = "import sys, time; sys.path.insert(0, sys.argv[1]); import nodeagent.cli; print('ready', flush=True); time.sleep(60)"


def bare_rss_kb() -> int:
    """The floor of the farm's memory: an interpreter with the agent's imports and no node."""
    p = subprocess.Popen([sys.executable, "-c", BARE, str(REPO)], stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None
        p.stdout.readline()
        return rss_kb(p.pid)
    finally:
        p.kill()
        p.wait()


def farm_hosts(i: int) -> tuple[str, str]:
    a, b = divmod(i, 250)
    return f"127.241.{a}.{b + 1}", f"127.243.{a}.{b + 1}"


async def pair_up(session, i: int) -> str | None:
    """None if pair i is Up (both Active, heartbeats and replication Up), else what is not."""
    p_ip, s_ip = farm_hosts(i)
    try:
        s = (await ha_info(session, s_ip, f"farm-s{i}"))["peers"][0]
        p = (await ha_info(session, p_ip, f"farm-p{i}"))["peers"][0]
    except Exception as e:  # noqa: BLE001 - not up (yet)
        return f"pair {i}: {type(e).__name__}"
    if s["state"] != "SECONDARY_ACTIVE" or p["state"] != "PRIMARY_ACTIVE":
        return f"pair {i}: {p['state']} / {s['state']}"
    if s["heartbeat"] != "Up" or s["data_replication"] != "Up":
        return f"pair {i}: heartbeat {s['heartbeat']}, replication {s['data_replication']}"
    return None


async def sample_up(session, pairs: int, k: int = 50) -> list[str]:
    sample = random.sample(range(pairs), min(k, pairs))
    return [why for why in await asyncio.gather(*(pair_up(session, i) for i in sample)) if why]


async def false_failovers(session, pairs: int) -> list[str]:
    """Every secondary: still backing its primary at generation 1, no failover in its events."""
    sem = asyncio.Semaphore(40)

    async def one(i: int) -> str | None:
        _, s_ip = farm_hosts(i)
        async with sem:
            try:
                client = AgentClient(session, s_ip, f"farm-s{i}", timeout=10)
                peer = (await client.call("GET", "/hm/v1/ha-info"))["peers"][0]
                events = (await client.call("GET", "/hm/v1/events?since=0&limit=1000"))["events"]
            except Exception as e:  # noqa: BLE001 - unreachable counts against the farm
                return f"pair {i}: {type(e).__name__}: {e}"
        failovers = [e["code"] for e in events if e["code"].startswith("failover")]
        if peer["state"] != "SECONDARY_ACTIVE" or peer.get("generation", 1) != 1 or failovers:
            return f"pair {i}: {peer['state']}, generation {peer.get('generation')}, events {failovers[:3]}"
        return None

    return [why for why in await asyncio.gather(*(one(i) for i in range(pairs))) if why]


async def bench_farm(n: int, steady: float, hog: float) -> None:
    pairs = n // 2
    floor_kb = bare_rss_kb()
    with tempfile.TemporaryDirectory(prefix="bench-farm-") as d, farm_state_root(Path(d)) as (state, on):
        tmp = Path(d)
        fleet = farm_fleet(tmp, n)
        ready = tmp / "ready"
        log = open(tmp / "farm.log", "ab")
        t0 = time.monotonic()
        p = subprocess.Popen(
            [sys.executable, "-m", "nodeagent", "farm", "--fleet", str(fleet), "--state-root", str(state),
             "--ready-file", str(ready), "--log-level", "WARNING"],
            cwd=tmp, env=env(), stdout=log, stderr=log,
        )  # fmt: skip
        hogs: list[subprocess.Popen] = []
        try:
            async with aiohttp.ClientSession() as session:
                not_up: list[str] = ["not started"]
                while not ready.exists() or not_up:
                    if p.poll() is not None:
                        raise SystemExit(f"bench: the farm exited: {(tmp / 'farm.log').read_text()[-800:]}")
                    if time.monotonic() - t0 > 300:
                        raise SystemExit(f"bench: the farm was not ready in 300 s: {not_up[:3]}")
                    await asyncio.sleep(0.5)
                    if ready.exists():
                        not_up = await sample_up(session, pairs)
                started = time.monotonic() - t0
                rows = [{"figure": f"farm ready ({n} nodes, {pairs} pairs, wait 10 s)", "value": round(started, 1),
                         "unit": "s", "target": "≤ 30 s", "ok": started <= 30,
                         "note": f"state directories on {on}: {du_mb(state)} MB"}]  # fmt: skip
                emit(**rows[-1])
                # steady state: sampled each minute, the farm's CPU over the whole window
                await asyncio.sleep(5)
                c0, w0 = cpu_seconds(p.pid), time.monotonic()
                samples, bad = 0, []
                while time.monotonic() - w0 < steady:
                    await asyncio.sleep(min(60.0, max(0.0, steady - (time.monotonic() - w0))))
                    c1, w1 = cpu_seconds(p.pid), time.monotonic()  # before the sample's own requests
                    bad += await sample_up(session, pairs)
                    samples += 1
                cpu = round(100 * (c1 - c0) / (w1 - w0), 1)
                rss = rss_kb(p.pid)
                rows += [
                    {"figure": f"sampled pairs Up (50 × {samples} samples over {steady:g} s)",
                     "value": 50 * samples - len(bad), "floor": 50 * samples, "ratio": round(1 - len(bad) / (50 * samples), 3),
                     "target": "100 %", "ok": not bad},
                    {"figure": "farm CPU in steady state", "value": cpu, "unit": "% of one core", "target": "≤ 50 %",
                     "ok": cpu <= 50},
                    {"figure": "farm RSS per node", "value": round(rss / n, 1), "unit": "KB",
                     "floor": round(floor_kb / n, 1), "ratio": round(rss / floor_kb, 2), "target": "≤ 60 KB",
                     "ok": rss / n <= 60, "note": f"RSS {rss // 1024} MB; bare interpreter with the imports {floor_kb // 1024} MB"},
                    {"figure": "farm RSS per node, net of the bare interpreter", "value": round((rss - floor_kb) / n, 1),
                     "unit": "KB", "target": "≤ 60 KB", "ok": (rss - floor_kb) / n <= 60},
                ]  # fmt: skip
                for row in rows[1:]:
                    emit(**row)
                # a CPU hog on every core
                hog_cpu = None
                if hog > 0:
                    hogs = [
                        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)
                    ]
                    c0, w0 = cpu_seconds(p.pid), time.monotonic()
                    hog_bad: list[str] = []
                    while time.monotonic() - w0 < hog:
                        await asyncio.sleep(min(30.0, max(0.0, hog - (time.monotonic() - w0))))
                        hog_bad += await sample_up(session, pairs)
                    hog_cpu = round(100 * (cpu_seconds(p.pid) - c0) / (time.monotonic() - w0), 1)
                    for h in hogs:
                        h.kill()
                        h.wait()
                    hogs = []
                    bad += hog_bad
                    rows.append({"figure": f"sampled pairs Up with a CPU hog on each of {os.cpu_count()} cores ({hog:g} s)",
                                 "value": "all" if not hog_bad else f"{len(hog_bad)} not Up", "target": "100 %",
                                 "ok": not hog_bad, "farm_cpu_percent": hog_cpu})  # fmt: skip
                    emit(**rows[-1])
                false = await false_failovers(session, pairs)
                rows.append({"figure": f"false failovers over {steady + hog:g} s (every pair checked)",
                             "value": len(false), "target": "0", "ok": not false})  # fmt: skip
                emit(**rows[-1], examples=false[:5])
                ROWS.extend(rows)
                if bad or false:
                    raise SystemExit(f"bench: the farm is not working: {(bad + false)[:5]}")
        finally:
            for h in hogs:
                h.kill()
            p.send_signal(signal.SIGKILL)
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wait", type=float, default=10.0, help="Long Failover Wait for the failover run (2-120)")
    ap.add_argument("--farm-nodes", type=int, default=2000)
    ap.add_argument("--steady", type=float, default=600.0, help="seconds of steady state watched (default 600)")
    ap.add_argument("--hog", type=float, default=120.0, help="seconds with a CPU hog on every core (default 120)")
    ap.add_argument("--only", default="failover,heartbeat,farm")
    ap.add_argument(
        "--heartbeat-settle",
        type=float,
        default=55.0,
        help="seconds of steady heartbeats before reading the mean of the last 50 (default 55)",
    )
    a = ap.parse_args()
    only = set(a.only.split(","))
    if a.heartbeat_settle < 0:
        ap.error("--heartbeat-settle must be zero or more seconds")
    if a.farm_nodes < 2 or a.steady < 60 or a.hog < 0:
        ap.error("--farm-nodes must be 2 or more, --steady 60 s or more, --hog 0 s or more")
    # two sections of docs/benchmarks.md, each written by the run that measured it
    if only & {"failover", "heartbeat"}:
        try:
            asyncio.run(bench_pair(a.wait, "failover" in only, "heartbeat" in only, a.heartbeat_settle))
        finally:
            if ROWS:
                record("agent_pair", ROWS, title="Node agent: a pair's failover and heartbeats",
                       notes=f"Two `serve` processes on loopback, failover Automatic, wait {a.wait:g} s. No database.")  # fmt: skip
    if "farm" in only:
        ROWS.clear()
        try:
            asyncio.run(bench_farm(a.farm_nodes, a.steady, a.hog))
        finally:
            if ROWS:
                record("agent_farm", ROWS, title=f"Node agent: a farm of {a.farm_nodes} nodes in one process",
                       notes=f"`nodeagent farm`, {a.farm_nodes // 2} pairs, failover Automatic, wait 10 s; "
                             f"{a.steady:g} s of steady state, {a.hog:g} s with a CPU hog on every core; state directories "
                             f"on /dev/shm when there is one (see farm_state_root). No database.")  # fmt: skip


if __name__ == "__main__":
    main()
