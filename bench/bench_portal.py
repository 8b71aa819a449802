"""Portal benchmarks; prints one JSON object per line.

1. poll_round: one process polls a 2,000-node farm (1,000 paired HA pairs heartbeating
   in one agent process) and writes the results — seconds per full round (target ≤ 2 s).
2. push_to_record: an agent's state change (services stopped by hand) until the portal's
   database holds the event (pushed, signed, to the ingest endpoint of a real runserver),
   and until the pair's state is refreshed by the worker (target ≤ 1 s).
3. switchover: from the API call to FAILOVER_ACTIVE recorded by the portal, minus the
   agent's own failover time read from its events (target ≤ 3 s beyond the agent's steps).

Everything runs on loopback, under var/bench (SQLite and the filesystem broker unless
DATABASE_URL / CELERY_BROKER_URL say otherwise; a PostgreSQL database is the bench's own,
<name>_bench, see benchlib). Usage: python bench/bench_portal.py
[--nodes 2000] [--rounds 3].
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VAR = REPO / "var" / "bench"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import emit, setup_django  # noqa: E402


def address(i: int, base: int) -> str:
    return f"127.{base + i // 62500}.{(i // 250) % 250}.{i % 250 + 2}"


def big_fleet(nodes: int, *, paired: bool) -> tuple[str, list[dict]]:
    """Half primaries, half secondaries; with ``paired`` the agents start paired and heartbeating."""
    pairs = nodes // 2
    lines = ["[agent]", "port = 8001", ""]
    specs = []
    for i in range(pairs):
        p_ip, s_ip, vip = address(i, 201), address(i, 211), address(i, 221)
        specs.append({"p": f"p{i}", "s": f"s{i}", "p_ip": p_ip, "s_ip": s_ip, "vip": vip})
        for name, role, ip, extra in (
            (f"p{i}", "primary", p_ip, f'vip = "{vip}"\nnetmask = "255.0.0.0"\n'),
            (f"s{i}", "secondary", s_ip, ""),
        ):
            lines += [
                "[[node]]",
                f'name = "{name}"',
                'type = "3355"',
                'version = "8.0.110.0"',
                f'role = "{role}"',
                f'hm_ip = "{ip}"',
                f'password = "pw-{name}"',
                extra,
            ]
    for spec in specs if paired else []:
        lines += [
            "[[pair]]",
            f'primary = "{spec["p"]}"',
            f'secondary = "{spec["s"]}"',
            'failover_type = "Manual"',
            'failback_type = "Manual"',
            "failover_wait = 10",
            "",
        ]
    return "\n".join(lines), specs


def start_farm(fleet_text: str, name: str, timeout: float = 180) -> subprocess.Popen:
    fleet = VAR / f"{name}.toml"
    fleet.write_text(fleet_text)
    ready = VAR / f"{name}.ready"
    ready.unlink(missing_ok=True)  # a previous farm's file would say "ready" at once
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nodeagent",
            "farm",
            "--fleet",
            str(fleet),
            "--state-root",
            str(VAR / name),
            "--ready-file",
            str(ready),
            "--log-level",
            "ERROR",
        ],
        cwd=REPO,
        stdout=(VAR / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise SystemExit(f"farm {name} did not start: {(VAR / f'{name}.log').read_text()[-2000:]}")
        time.sleep(0.2)
    return process


def stop(process: subprocess.Popen | None) -> None:
    if process and process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def register(specs: list[dict]) -> None:
    """Record the fleet in the database directly (the services' discovery is not what is measured)."""
    from hapairs.choices import instance_identity
    from hapairs.crypto import encrypt
    from hapairs.models import Appliance, HAPair

    appliances = []
    for spec in specs:
        appliances.append(
            Appliance(
                name=spec["p"],
                device_type="3355",
                hm_ip=spec["p_ip"],
                vip=spec["vip"],
                vip_prefixlen=8,
                version="8.0.110.0",
                role="primary",
                password_ciphertext=encrypt(f"pw-{spec['p']}"),
            )
        )
        appliances.append(
            Appliance(
                name=spec["s"],
                device_type="3355",
                hm_ip=spec["s_ip"],
                version="8.0.110.0",
                role="secondary",
                password_ciphertext=encrypt(f"pw-{spec['s']}"),
            )
        )
    Appliance.objects.bulk_create(appliances, batch_size=1000)
    ids = dict(Appliance.objects.values_list("name", "pk"))
    HAPair.objects.bulk_create(
        [HAPair(primary_id=ids[s["p"]], secondary_id=ids[s["s"]], slot=1, **instance_identity(1)) for s in specs],
        batch_size=1000,
    )


def bench_poll(nodes: int, rounds: int, *, paired: bool) -> None:
    from hapairs import polling
    from hapairs.models import Appliance, HAPair

    HAPair.objects.all().delete()
    Appliance.objects.all().delete()
    text, specs = big_fleet(nodes, paired=paired)
    started = time.perf_counter()
    farm = start_farm(text, "farm2000")
    farm_start = time.perf_counter() - started
    try:
        register(specs)
        time.sleep(3)  # let the pairs exchange heartbeats
        results = [polling.poll() for _ in range(rounds)]
    finally:
        stop(farm)
    seconds = [r["seconds_total"] for r in results]
    emit(
        bench="poll_round",
        nodes=nodes,
        agents_paired=paired,
        rounds=rounds,
        seconds_per_round=seconds,
        best=min(seconds),
        worst=max(seconds),
        network_seconds=[r["seconds_network"] for r in results],
        database_seconds=[r["seconds_database"] for r in results],
        unreachable=[r["unreachable"] for r in results],
        farm_start_seconds=round(farm_start, 2),
        target_seconds=2.0,
        meets_target=max(seconds) <= 2.0,
    )


def start_portal_processes(ingest_port: int) -> tuple[subprocess.Popen, subprocess.Popen]:
    env = {
        **os.environ,
        "MSEPORTAL_INGEST_URL": f"http://127.0.0.1:{ingest_port}/api/v1/ingest/events",
        "MSEPORTAL_POLL_SECONDS": "3600",
    }
    web = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{ingest_port}", "--noreload", "--nothreading"],
        cwd=REPO,
        env=env,
        stdout=(VAR / "web.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "mseportal",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"bench-{os.getpid()}@%h",
        ],
        cwd=REPO,
        env=env,
        stdout=(VAR / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import urllib.request

    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ingest_port}/healthz", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("runserver did not start: " + (VAR / "web.log").read_text()[-2000:]) from None
            time.sleep(0.2)
    time.sleep(2)  # the worker connects to the broker
    return web, worker


def wait(condition, timeout: float, every: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise SystemExit("bench: timed out")


def bench_push_and_switchover(ingest_port: int) -> None:
    from hapairs import agent_client, polling, services
    from hapairs.models import Appliance, HAEvent, HAPair, Job
    from nodeagent import protocol

    HAPair.objects.all().delete()
    Appliance.objects.all().delete()
    fleet = "\n".join(
        [
            "[agent]",
            "port = 8001",
            "",
            "[[node]]",
            'name = "bp"',
            'type = "3355"',
            'version = "8.0.110.0"',
            'role = "primary"',
            'hm_ip = "127.48.39.238"',
            'vip = "127.48.39.224"',
            'netmask = "255.255.255.0"',
            'password = "pw-bp"',
            "",
            "[[node]]",
            'name = "bs"',
            'type = "3355"',
            'version = "8.0.110.0"',
            'role = "secondary"',
            'hm_ip = "127.48.39.240"',
            'password = "pw-bs"',
            "",
        ]
    )
    farm = start_farm(fleet, "pair")
    web, worker = start_portal_processes(ingest_port)
    try:
        primary = services.appliance_add(name="bp", ip="127.48.39.238", password="pw-bp")
        _pair, job = services.ha_configure(
            primary=primary, secondary_name="bs", secondary_ip="127.48.39.240", secondary_password="pw-bs"
        )
        wait(lambda: Job.objects.get(pk=job.pk).status == "succeeded", 120, 0.1)
        pair = HAPair.objects.get()

        # push: stop the secondary's services by hand; time until the event row and the new state
        secondary = Appliance.objects.get(name="bs")
        before = HAEvent.objects.count()
        started = time.perf_counter()
        agent_client.call(
            agent_client.target_for(secondary),
            "POST",
            protocol.PATH_SERVICES_STOP,
            body={},
            idempotency_key=f"bench-stop-{time.time()}",
        )
        wait(lambda: HAEvent.objects.count() > before, 10)
        event_seconds = time.perf_counter() - started
        wait(lambda: HAPair.objects.get(pk=pair.pk).secondary_services_up is False, 10)
        state_seconds = time.perf_counter() - started
        emit(
            bench="push_to_record",
            event_stored_seconds=round(event_seconds, 3),
            state_recorded_seconds=round(state_seconds, 3),
            target_seconds=1.0,
            meets_target=state_seconds <= 1.0,
        )
        agent_client.call(
            agent_client.target_for(secondary),
            "POST",
            protocol.PATH_SERVICES_START,
            body={},
            idempotency_key=f"bench-start-{time.time()}",
        )

        def settled():
            polling.poll()
            current = HAPair.objects.get(pk=pair.pk)
            return (
                current.secondary_state == "SECONDARY_ACTIVE"
                and current.sync_percent >= 100
                and current.heartbeat == "up"
            )

        # switchover: from the request to FAILOVER_ACTIVE in the portal's records
        wait(settled, 60, 0.3)
        started = time.perf_counter()
        job = services.ha_switchover(pair=HAPair.objects.get(pk=pair.pk), reason="bench")
        wait(lambda: HAPair.objects.get(pk=pair.pk).secondary_state == "FAILOVER_ACTIVE", 60)
        total = time.perf_counter() - started
        wait(lambda: Job.objects.get(pk=job.pk).status in ("succeeded", "failed"), 60, 0.05)
        invoked = HAEvent.objects.filter(
            appliance__name="bs", description="Failover invoked; shutting down primary instance"
        ).first()
        active = HAEvent.objects.filter(
            appliance__name="bs", description="Instance is in failover active state"
        ).first()
        agent_seconds = (active.timestamp - invoked.timestamp).total_seconds() if invoked and active else None
        emit(
            bench="switchover",
            api_to_failover_active_seconds=round(total, 3),
            agent_own_seconds=round(agent_seconds, 3) if agent_seconds is not None else None,
            portal_overhead_seconds=round(total - (agent_seconds or 0), 3),
            target_overhead_seconds=3.0,
            meets_target=(total - (agent_seconds or 0)) <= 3.0,
            job_status=Job.objects.get(pk=job.pk).status,
        )
    finally:
        stop(worker)
        stop(web)
        stop(farm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ingest-port", type=int, default=8765)
    parser.add_argument(
        "--paired",
        action="store_true",
        help="also poll a farm whose 1,000 pairs heartbeat (the farm then needs a core of its own)",
    )
    args = parser.parse_args()
    if args.nodes < 2 or args.nodes % 2 or args.nodes > 20000:
        parser.error("--nodes must be an even number from 2 to 20000")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    setup_django(VAR)
    bench_poll(args.nodes, args.rounds, paired=False)
    if args.paired:
        bench_poll(args.nodes, args.rounds, paired=True)
    bench_push_and_switchover(args.ingest_port)


if __name__ == "__main__":
    main()
