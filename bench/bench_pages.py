"""Page benchmarks; prints one JSON object per line.

A fleet of 2,000 appliances / 1,000 HA pairs / 100,000 events is written straight into
the database (bulk inserts; the pages only read), then each page is requested through
Django's full stack (middleware, session, templates) with the test client, and its
server time measured: p50 and p95 over --requests runs (targets: the MSE list and the
status screen at p95 ≤ 50 ms). The database queries per page are counted at the full
size and at a tenth of it, to show they do not grow with the fleet.

Uses var/bench-pages (SQLite), or, when DATABASE_URL names PostgreSQL, a database of its
own beside it (<name>_bench, see benchlib). Usage: python bench/bench_pages.py
[--appliances 2000] [--events 100000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VAR = REPO / "var" / "bench-pages"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import emit, setup_django  # noqa: E402


def build_fleet(appliances: int, events: int) -> None:
    """Half primaries (with a VIP), half secondaries, one pair each; events spread over the pairs."""
    from django.db import connection
    from django.utils import timezone

    from hapairs import crypto
    from hapairs.models import Appliance, HAEvent, HAPair, HeartbeatSample

    with connection.cursor() as cursor:  # a rerun at another size starts empty
        for table in (
            "hapairs_haevent",
            "hapairs_heartbeatsample",
            "hapairs_job",
            "hapairs_hapair",
            "hapairs_appliance",
        ):
            cursor.execute(f"DELETE FROM {table}")
    password = crypto.encrypt("bench-password")
    services = [
        {"name": "Context Aware Service", "version": "8.0.110.0", "admin_status": "Enabled", "service_status": "Up"},
        {"name": "WIPS", "version": "8.0.110.0", "admin_status": "Disabled", "service_status": "Down"},
    ]
    pairs = appliances // 2
    rows = []
    for i in range(pairs):
        rows.append(
            Appliance(
                name=f"p{i:05d}",
                device_type="3355",
                hm_ip=f"127.100.{i // 250}.{i % 250 + 2}",
                vip=f"127.101.{i // 250}.{i % 250 + 2}",
                vip_prefixlen=16,
                version="8.0.110.0",
                role="primary",
                reachability="reachable",
                password_ciphertext=password,
                services=services,
                udi=f"AIR-MSE-3355-K9:V01:P{i:05d}",
            )
        )
        rows.append(
            Appliance(
                name=f"s{i:05d}",
                device_type="3355",
                hm_ip=f"127.102.{i // 250}.{i % 250 + 2}",
                version="8.0.110.0",
                role="secondary",
                reachability="reachable",
                password_ciphertext=password,
                services=services,
                udi=f"AIR-MSE-3355-K9:V01:S{i:05d}",
            )
        )
    Appliance.objects.bulk_create(rows, batch_size=1000)
    by_name = dict(Appliance.objects.values_list("name", "pk"))
    now = timezone.now()
    pair_rows = []
    for i in range(pairs):
        pair = HAPair(
            primary_id=by_name[f"p{i:05d}"],
            secondary_id=by_name[f"s{i:05d}"],
            status_text="Active",
            heartbeat="up",
            replication="up",
            sync_percent=100,
            mean_heartbeat_ms=1.4,
            primary_state="PRIMARY_ACTIVE",
            secondary_state="SECONDARY_ACTIVE",
            primary_reachable=True,
            secondary_reachable=True,
            primary_in_charge=True,
            status_updated_at=now,
        )
        pair.assign_slot(1)
        pair_rows.append(pair)
    HAPair.objects.bulk_create(pair_rows, batch_size=1000)
    pair_ids = list(HAPair.objects.order_by("pk").values_list("pk", flat=True))
    event_rows = [
        HAEvent(
            pair_id=pair_ids[n % len(pair_ids)],
            code="heartbeats_setup",
            description="Heartbeats have been setup successfully",
            generated_by="Primary",
            timestamp=now - timedelta(seconds=n),
            remarks="bench",
        )
        for n in range(events)
    ]
    HAEvent.objects.bulk_create(event_rows, batch_size=2000)
    samples = [
        HeartbeatSample(pair_id=pk, at=now - timedelta(minutes=m), mean_ms=1.0 + (m % 7) / 10)
        for pk in pair_ids[:50]
        for m in range(60)
    ]
    HeartbeatSample.objects.bulk_create(samples, batch_size=2000)


def measure(client, url: str, requests: int) -> dict:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    reset_queries()  # the log keeps 9,000 queries at most: a full one would count nothing
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 2),
        "p95_ms": round(timings[max(0, int(len(timings) * 0.95) - 1)], 2),
        "queries": len(captured),
    }


PAGES = {
    "mse_list": "/mse/",
    "mse_list_sorted_page_20": "/mse/?sort=-reachability&page=20",
    "mse_list_search": "/mse/?q=p012",
    "ha_status": "/mse/p00050/ha/",
    "ha_status_events_page_10": "/mse/p00050/ha/?page=10",
    "ha_overview": "/ha/",
    "jobs": "/jobs/",
}


def run(appliances: int, events: int, requests: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    build_fleet(appliances, events)
    user, _ = get_user_model().objects.get_or_create(username="bench-operator")
    user.groups.add(Group.objects.get(name="Operator"))
    client = Client()
    client.force_login(user)
    return {name: measure(client, url, requests) for name, url in PAGES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--appliances", type=int, default=2000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    if args.appliances < 20 or args.appliances % 2 or args.events < 0 or args.requests < 1:
        parser.error("--appliances: an even number ≥ 20; --events ≥ 0; --requests ≥ 1")
    setup_django(VAR)
    from django.db import connection

    started = time.perf_counter()
    small = run(args.appliances // 10, args.events // 10, 5)
    full = run(args.appliances, args.events, args.requests)
    for name, figures in full.items():
        emit(
            bench="page",
            page=name,
            database=connection.vendor,
            appliances=args.appliances,
            pairs=args.appliances // 2,
            events=args.events,
            requests=args.requests,
            **figures,
            queries_at_tenth_size=small[name]["queries"],
            target_p95_ms=50,
            p95_within_target=figures["p95_ms"] <= 50,
            queries_independent_of_size=figures["queries"] == small[name]["queries"],
        )
    emit(bench="pages_total", seconds=round(time.perf_counter() - started, 1))


if __name__ == "__main__":
    main()
