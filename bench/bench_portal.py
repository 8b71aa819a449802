"""Portal benchmarks; prints one JSON object per line and records the figures (benchlib.record).

1. poll (sharded): --nodes agents (10,000) in --farms `nodeagent farm` processes, polled by
   --workers real `celery -A mseportal worker` processes (4) on the configured broker and
   database, MSEPORTAL_POLL_SHARDS shards (16), a round fired every --interval seconds (10)
   as beat fires fleet_poll. After --warmup rounds, each of --rounds rounds is checked: every
   appliance's last poll must fall inside the interval (else the bench fails, exit 1), and
   each shard's times (network, database, queued, done) are printed. The floor, in the same
   run: a bare aiohttp fan-out (signed GET of the same endpoint over HTTPS, same nodes, the
   same shards split over as many processes, connections kept open as the poller keeps
   them); the poll's network seconds are printed as a ratio to it (target ≤ 3).
2. push_to_record: an agent's state change (services stopped by hand) until the portal's
   database holds the event (pushed, signed, to the ingest endpoint of a real runserver),
   and until the pair's state is refreshed by the worker (target ≤ 1 s).
3. switchover: from the API call to FAILOVER_ACTIVE recorded by the portal, minus the
   agent's own failover time read from its events (target ≤ 3 s beyond the agent's steps).

Everything runs on loopback, under var/bench (SQLite and the filesystem broker unless
DATABASE_URL / CELERY_BROKER_URL say otherwise; run it on PostgreSQL and Redis, as CI
does: a PostgreSQL database is the bench's own, <name>_bench, see benchlib). The farms'
TLS keys are kept in var/bench-poll-farms between runs (--fresh-farms makes new ones).
Usage: python bench/bench_portal.py [--nodes 10000] [--workers 4] [--farms 5] [--rounds 6]
[--warmup 6] [--interval 10] [--paired] [--skip-push].
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VAR = REPO / "var" / "bench"
FARM_STATE = REPO / "var" / "bench-poll-farms"  # the farms' TLS keys, kept between runs
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import database_description, emit, record, setup_django  # noqa: E402


def address(i: int, base: int) -> str:
    return f"127.{base + i // 62500}.{(i // 250) % 250}.{i % 250 + 2}"


def big_fleet(pairs: range, *, paired: bool) -> tuple[str, list[dict]]:
    """A primary and a secondary per index; with ``paired`` the agents start paired and heartbeating."""
    lines = ["[agent]", "port = 8001", ""]
    specs = []
    for i in pairs:
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


def launch_farm(fleet_text: str, name: str, *, state_root: Path | None = None) -> tuple[subprocess.Popen, Path]:
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
            str(state_root or VAR / name),
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
    return process, ready


def wait_farms(farms: list[tuple[str, subprocess.Popen, Path]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for name, process, ready in farms:
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                for _, other, _ in farms:
                    stop(other)
                raise SystemExit(f"farm {name} did not start: {(VAR / f'{name}.log').read_text()[-2000:]}")
            time.sleep(0.2)


def start_farm(fleet_text: str, name: str, timeout: float = 180) -> subprocess.Popen:
    process, ready = launch_farm(fleet_text, name)
    wait_farms([(name, process, ready)], timeout)
    return process


def stop(process: subprocess.Popen | None) -> None:
    if process and process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def register(specs: list[dict], *, paired: bool = True, state_root: Path | None = None) -> None:
    """Record the fleet in the database directly (the services' discovery is not what is
    measured); with ``state_root``, each appliance's certificate pinned as at its add."""
    from hapairs.choices import instance_identity
    from hapairs.crypto import encrypt
    from hapairs.models import Appliance, HAPair
    from nodeagent import tlsid

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
    if state_root is not None:
        for appliance in appliances:
            appliance.tls_fingerprint = tlsid.read_fingerprint(state_root / appliance.name / "tls" / "cert.pem")
    Appliance.objects.bulk_create(appliances, batch_size=1000)
    if not paired:
        return
    ids = dict(Appliance.objects.values_list("name", "pk"))
    HAPair.objects.bulk_create(
        [HAPair(primary_id=ids[s["p"]], secondary_id=ids[s["s"]], slot=1, **instance_identity(1)) for s in specs],
        batch_size=1000,
    )


# --- 1. the sharded poll: real workers, real farms, the bare fan-out beside it -------------------
def start_poll_workers(count: int, env: dict[str, str]) -> list[tuple[str, subprocess.Popen, Path]]:
    """``count`` real Celery workers (prefork, one child each: the production pool), on every queue."""
    workers = []
    for index in range(count):
        name, log = f"bench-poll-{index}-{os.getpid()}", VAR / f"poll-worker-{index}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mseportal", "worker", "--pool", "prefork", "--concurrency", "1",
             "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--hostname", f"{name}@%h"],
            cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        workers.append((name, process, log))
    deadline = time.monotonic() + 120
    for name, process, log in workers:
        while "ready." not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                for _, other, _ in workers:
                    stop(other)
                raise SystemExit(f"worker {name} did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
    return workers


def shard_targets(shards: int) -> dict[int, list[tuple[str, str, str, str]]]:
    """Per shard, what the poller asks each of its agents: host, password, pinned fingerprint, path."""
    from hapairs import sharding
    from hapairs.crypto import decrypt
    from nodeagent import protocol

    targets = {}
    for shard in range(shards):
        rows = sharding.appliances_of(shard, shards).values_list(
            "hm_ip", "password_ciphertext", "tls_fingerprint", "last_event_seq"
        )
        targets[shard] = [
            (
                host,
                decrypt(secret),
                fingerprint,
                f"{protocol.PATH_HA_INFO}?brief=1&events_since={since}&events_limit=200",
            )
            for host, secret, fingerprint, since in rows
        ]
    return targets


def floor_worker(targets: dict[int, list], passes: int, port: int, timeout: float, keepalive: float, barrier, results):
    """One floor process: a bare aiohttp fan-out over its shards, one shard at a time, as a worker
    polls them; the same connection pool kept across passes (the first pass opens it)."""
    import aiohttp

    from nodeagent import protocol, tlsid

    async def main():
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=keepalive)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            semaphore = asyncio.Semaphore(200)

            async def one(host, password, fingerprint, path):
                async with semaphore:
                    headers = protocol.sign_request(password, "GET", path, b"")
                    headers[protocol.HEADER_PROTOCOL] = str(protocol.PROTOCOL_VERSION)
                    try:
                        async with session.get(
                            f"https://{host}:{port}{path}", headers=headers, ssl=tlsid.pin(fingerprint)
                        ) as response:
                            await response.read()
                            return response.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        return False

            for number in range(passes):
                await asyncio.get_running_loop().run_in_executor(None, barrier.wait)  # the processes start together
                for shard, shard_targets in targets.items():
                    started = time.perf_counter()
                    answered = await asyncio.gather(*(one(*target) for target in shard_targets))
                    results.put((number, shard, time.perf_counter() - started, answered.count(False)))

    asyncio.run(main())


def bare_fanout(shards: int, processes: int, passes: int) -> list[dict[int, tuple[float, int]]]:
    """The floor: per pass, per shard, (seconds, failures) of a bare fan-out over the shard's
    agents, the shards split over ``processes`` processes running at once (as the workers)."""
    from django.conf import settings
    from django.db import connection

    from hapairs import polling

    targets = shard_targets(shards)
    connection.close()  # nothing of Django crosses the fork
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(processes), context.Queue()
    children = [
        context.Process(
            target=floor_worker,
            args=(
                {shard: targets[shard] for shard in range(index, shards, processes)},
                passes,
                settings.AGENT_PORT,
                settings.AGENT_TIMEOUT,
                polling.KEEPALIVE_SECONDS,
                barrier,
                results,
            ),
        )
        for index in range(processes)
    ]
    for child in children:
        child.start()
    by_pass: list[dict[int, tuple[float, int]]] = [{} for _ in range(passes)]
    for _ in range(passes * shards):
        number, shard, seconds, failures = results.get(timeout=600)
        by_pass[number][shard] = (seconds, failures)
    for child in children:
        child.join(30)
    return by_pass


def bench_sharded_poll(
    *, nodes: int, workers: int, farms: int, rounds: int, warmup: int, interval: int, paired: bool
) -> bool:
    """Returns whether every sanity check held (every appliance polled in every measured interval)."""
    from django.conf import settings
    from django.db.models import Q

    from hapairs import sharding, tasks
    from hapairs.models import Appliance

    shards = settings.POLL_SHARDS
    state_root = FARM_STATE / ("paired" if paired else "unpaired")  # a node's saved pairing is its own
    pairs_per_farm = -(-(nodes // 2) // farms)
    fleets = [
        big_fleet(range(start, min(start + pairs_per_farm, nodes // 2)), paired=paired)
        for start in range(0, nodes // 2, pairs_per_farm)
    ]
    started = time.perf_counter()
    launched = [
        (f"pollfarm{n}", *launch_farm(text, f"pollfarm{n}", state_root=state_root))
        for n, (text, _) in enumerate(fleets)
    ]
    wait_farms(launched, timeout=900)
    farm_seconds = time.perf_counter() - started
    poll_workers: list[tuple[str, subprocess.Popen, Path]] = []
    try:
        register([spec for _, specs in fleets for spec in specs], paired=paired, state_root=state_root)
        emit(
            bench="poll_setup",
            database=database_description(),
            broker=settings.CELERY_BROKER_URL.split("://")[0],
            nodes=nodes,
            farms=len(launched),
            paired=paired,
            shards=shards,
            workers=workers,
            interval_seconds=interval,
            farm_start_seconds=round(farm_seconds, 1),
        )
        sharding.rounds_clear()
        poll_workers = start_poll_workers(workers, dict(os.environ))
        measured = []
        next_fire = time.time()
        for number in range(warmup + rounds):
            time.sleep(max(0.0, next_fire - time.time()))
            fired_at = tasks.fleet_poll()["fired_at"]
            next_fire = fired_at + interval
            time.sleep(max(0.0, next_fire - 0.05 - time.time()))  # the interval's end: was everyone polled?
            kept = {shard: f for shard, f in sharding.rounds().items() if f.get("fired_at") == fired_at}
            fired = datetime.fromtimestamp(fired_at, UTC)
            not_polled = Appliance.objects.filter(Q(last_polled_at__isnull=True) | Q(last_polled_at__lt=fired)).count()
            per_shard = [
                {
                    "shard": shard,
                    "worker": figures["worker"].split("@")[0].rsplit("-", 1)[0],
                    "appliances": figures["appliances"],
                    "unreachable": figures["unreachable"],
                    "network_s": figures["seconds_network"],
                    "database_s": figures["seconds_database"],
                    "queued_s": figures["queued_seconds"],
                    "done_s": round(figures["finished_at"] - fired_at, 3),
                }
                for shard, figures in sorted(kept.items())
            ]
            line = {
                "bench": "poll_round",
                "round": number + 1,
                "warmup": number < warmup,
                "shards_done": len(kept),
                "appliances_not_polled_in_interval": not_polled,
                "unreachable": sum(f["unreachable"] for f in per_shard),
                "done_seconds": max((f["done_s"] for f in per_shard), default=None),
                "network_seconds_sum": round(sum(f["network_s"] for f in per_shard), 3),
                "database_seconds_sum": round(sum(f["database_s"] for f in per_shard), 3),
                "per_shard": per_shard,
            }
            emit(**line)
            if number + 1 == warmup:  # the shards each worker owns (sticky: hapairs.sharding, Owners)
                emit(bench="poll_owners", owners={name.split("@")[0]: mine for name, mine in sharding.owners().items()})
            if number >= warmup:
                measured.append(line)
    finally:
        for _, process, _ in poll_workers:
            stop(process)
    time.sleep(5)  # the farms close the workers' connections first
    try:
        passes = bare_fanout(shards, workers, 5)  # pass 1 opens the connections; 2-5 are timed
    finally:
        for _, process, _ in launched:
            stop(process)
    floors = [sum(seconds for seconds, _ in by_shard.values()) for by_shard in passes[1:]]
    floor_failures = sum(failures for by_shard in passes for _, failures in by_shard.values())
    floor = statistics.median(floors)
    per_shard_floor = {shard: statistics.median(p[shard][0] for p in passes[1:]) for shard in range(shards)}
    emit(
        bench="poll_floor",
        what="bare aiohttp fan-out, signed GET of the poll's URL over pinned HTTPS, same nodes and shards, "
        f"{workers} processes at once, connections kept",
        first_pass_seconds_sum=round(sum(seconds for seconds, _ in passes[0].values()), 3),
        seconds_sum_per_pass=[round(f, 3) for f in floors],
        per_shard_seconds={shard: round(seconds, 3) for shard, seconds in per_shard_floor.items()},
        failures=floor_failures,
    )
    # the ratio over the shards each round finished (a late shard has no figures to compare)
    ratios = [
        sum(f["network_s"] for f in line["per_shard"]) / sum(per_shard_floor[f["shard"]] for f in line["per_shard"])
        for line in measured
        if line["per_shard"]
    ]
    by_shard: dict[int, list[float]] = {}
    for line in measured:
        for f in line["per_shard"]:
            by_shard.setdefault(f["shard"], []).append(f["network_s"])
    emit(
        bench="poll_per_shard",
        what="per shard: median poll network seconds over the measured rounds, the floor's, their ratio",
        shards=[
            {
                "shard": shard,
                "network_s": round(statistics.median(by_shard[shard]), 3),
                "floor_s": round(per_shard_floor[shard], 3),
                "ratio": round(statistics.median(by_shard[shard]) / per_shard_floor[shard], 2),
            }
            for shard in sorted(by_shard)
        ],
    )
    network = statistics.median(line["network_seconds_sum"] for line in measured)
    database = statistics.median(line["database_seconds_sum"] for line in measured)
    done = [line["done_seconds"] or float(interval) for line in measured]
    not_polled = sum(line["appliances_not_polled_in_interval"] for line in measured)
    missing = sum(shards - line["shards_done"] for line in measured)
    unreachable = sum(line["unreachable"] for line in measured)
    skipped = sum(log.read_text(errors="replace").count("skipped, its previous round") for _, _, log in poll_workers)
    sane = not_polled == 0 and missing == 0 and unreachable == 0 and floor_failures == 0
    ratio = round(statistics.median(ratios), 2) if ratios else None
    summary = {
        "bench": "poll",
        "database": database_description(),
        "nodes": nodes,
        "workers": workers,
        "shards": shards,
        "rounds_measured": len(measured),
        "warmup_rounds": warmup,
        "appliances_not_polled_in_an_interval": not_polled,
        "shard_rounds_missing": missing,
        "shard_rounds_skipped_by_lock_incl_warmup": skipped,
        "round_done_seconds_median": round(statistics.median(done), 3),
        "round_done_seconds_worst": round(max(done), 3),
        "network_seconds_sum_median": network,
        "floor_seconds_sum_median": round(floor, 3),
        "network_ratio_to_floor": ratio,
        "network_ratio_to_floor_per_round": [round(r, 2) for r in ratios],
        "database_seconds_sum_median": database,
        "target_network_ratio": 3.0,
        "meets_target": sane and ratio is not None and ratio <= 3.0 and max(done) <= interval,
        "sanity_checks_passed": sane,
    }
    emit(**summary)
    record(
        "poll" if nodes == 10000 else f"poll_{nodes}",  # the must-show is 10,000; smaller runs apart
        [
            {"figure": f"appliances not polled within a {interval} s interval ({len(measured)} rounds)",
             "value": not_polled, "unit": "", "floor": None, "ratio": None, "target": "0", "ok": not_polled == 0},
            {"figure": f"shard rounds not done within their interval (of {len(measured) * shards})",
             "value": missing, "unit": "", "floor": None, "ratio": None, "target": "0", "ok": missing == 0},
            {"figure": "a round: fire → last shard written (median / worst, of the shards done)",
             "value": f"{statistics.median(done):.2f} / {max(done):.2f}", "unit": "s", "floor": None,
             "ratio": None, "target": f"≤ {interval} s", "ok": missing == 0 and max(done) <= interval},
            {"figure": "poll network seconds per round, Σ of the shards (median; ratio: over the shards done)",
             "value": network, "unit": "s", "floor": round(floor, 3), "ratio": ratio, "target": "≤ 3× floor",
             "ok": ratio is not None and ratio <= 3},
            {"figure": "poll database seconds per round, Σ of the shards (median)", "value": database, "unit": "s",
             "floor": None, "ratio": None, "target": "—", "ok": True},
        ],
        title=f"Poll: {nodes:,} appliances, {workers} workers, {shards} shards",
        notes=(
            f"{nodes:,} {'paired' if paired else 'unpaired'} agents in {len(launched)} `nodeagent farm` processes; "
            f"{workers} `celery worker` processes (prefork, 1 child each) on {summary['database']} and "
            f"{settings.CELERY_BROKER_URL.split('://')[0]}; a round fired every {interval} s; {warmup} warm-up rounds "
            "(the workers share the shards out, each opens its TLS connections to its own) not counted. Floor: a bare aiohttp "
            f"fan-out (signed GET of the poll's URL, pinned TLS, connections kept) over the same shards, {workers} "
            "processes at once, median of 4 passes after one that opens the connections. "
            "`python bench/bench_portal.py`"
        ),
    )  # fmt: skip
    return sane


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


def wait(condition, timeout: float, every: float = 0.005, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"bench: timed out after {timeout:g} s waiting for {what}")


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
    parser.add_argument("--nodes", type=int, default=10000, help="agents polled (default 10,000)")
    parser.add_argument("--farms", type=int, default=5, help="farm processes they run in (default 5)")
    parser.add_argument("--workers", type=int, default=4, help="celery worker processes polling (default 4)")
    parser.add_argument("--shards", type=int, default=16, help="MSEPORTAL_POLL_SHARDS (default 16)")
    parser.add_argument("--interval", type=int, default=10, help="seconds between rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=6, help="rounds not counted, first (default 6)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds checked and measured (default 6)")
    parser.add_argument("--paired", action="store_true", help="the agents paired and heartbeating (heavier farms)")
    parser.add_argument("--fresh-farms", action="store_true", help="new TLS keys for the farms' agents")
    parser.add_argument("--skip-push", action="store_true", help="only the poll (not push_to_record, switchover)")
    parser.add_argument("--ingest-port", type=int, default=8765)
    args = parser.parse_args()
    if args.nodes < 2 or args.nodes % 2 or args.nodes > 40000:
        parser.error("--nodes must be an even number from 2 to 40000")
    if args.rounds < 1 or args.workers < 1 or args.farms < 1 or args.shards < 1 or args.interval < 1:
        parser.error("--rounds, --workers, --farms, --shards and --interval must be at least 1")
    if args.fresh_farms:
        shutil.rmtree(FARM_STATE, ignore_errors=True)
    os.environ["MSEPORTAL_POLL_SHARDS"] = str(args.shards)  # the bench's settings and its workers'
    os.environ["MSEPORTAL_POLL_SECONDS"] = str(args.interval)
    setup_django(VAR)
    sane = bench_sharded_poll(
        nodes=args.nodes,
        workers=args.workers,
        farms=args.farms,
        rounds=args.rounds,
        warmup=args.warmup,
        interval=args.interval,
        paired=args.paired,
    )
    if not args.skip_push:
        bench_push_and_switchover(args.ingest_port)
    if not sane:
        raise SystemExit("bench_portal: a sanity check failed (see the poll lines above)")


if __name__ == "__main__":
    main()
