"""Page benchmarks, each printed beside its floor from the same run; one JSON object a line.

A fleet of 10,000 appliances / 5,000 HA pairs / 1,000,000 events (by default; SQLite
defaults to a fifth) is written straight into the database — appliances and pairs in bulk,
events by one INSERT … SELECT over generate_series on PostgreSQL — then each page is
requested through Django's full stack (middleware, session, templates) with the test
client, and its server time measured: p50 and p95 over --requests rounds.

The floor is measured in the same rounds, interleaved with the pages (so the machine's
noise falls on both alike): a bare list of 100 appliances through the same client and
middleware, rendered by a one-line template. Each page's p95 is printed as a ratio to the
floor's p95 (target ≤ 3). The database queries of each page are counted at the full size
and at a tenth of it: they must be equal. Deep pages are reached as an operator reaches
them, by following the pages' own "Next" links (keyset cursors), not by offset.

The bench fails (exit 1) when a page answers other than 200 or needs more queries at the
full size than at a tenth; a ratio above the target is printed and recorded, not fatal
(timings depend on the machine). The figures go to var/bench-results/pages.json and to
docs/benchmarks.md (benchlib.record).

Uses var/bench-pages (SQLite), or, when DATABASE_URL names PostgreSQL, a database of its
own beside it (<name>_bench, see benchlib). Usage: python bench/bench_pages.py
[--appliances 10000] [--pairs 5000] [--events 1000000] [--requests 60]
"""

from __future__ import annotations

import argparse
import html
import re
import statistics
import sys
import time
import types
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VAR = REPO / "var" / "bench-pages"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import database_description, emit, record, setup_django  # noqa: E402

TARGET_RATIO = 3.0
FLOOR_URL = "/bench/floor/"
FLOOR_TEMPLATE = (
    "<table>{% for a in rows %}<tr><td>{{ a.name }}</td><td>{{ a.device_type }}</td><td>{{ a.hm_ip }}</td>"
    "<td>{{ a.version }}</td><td>{{ a.reachability }}</td></tr>{% endfor %}</table>"
)
HOT_PAIR = "p00010"  # the busiest pair: a tenth of all events (a flapping pair), the status screen's worst case


def floor_view(request):
    """The floor: 100 appliances, the bare minimum of a Django list page."""
    from django.http import HttpResponse
    from django.template import engines

    from hapairs.models import Appliance

    template = engines["django"].from_string(FLOOR_TEMPLATE)
    return HttpResponse(template.render({"rows": Appliance.objects.order_by("name")[:100]}, request))


def install_floor_url() -> None:
    """The project's URLs plus the floor's, through the same middleware."""
    from django.conf import settings
    from django.urls import clear_url_caches, include, path

    urls = types.ModuleType("bench_pages_urls")
    urls.urlpatterns = [path(FLOOR_URL.strip("/") + "/", floor_view), path("", include(settings.ROOT_URLCONF))]  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    settings.ROOT_URLCONF = urls.__name__
    clear_url_caches()


# --- the fleet ---------------------------------------------------------------------------
TABLES = ("hapairs_haevent", "hapairs_heartbeatsample", "hapairs_job", "hapairs_hapair", "hapairs_appliance")
SUMMARIES = ("hapairs_secondarylisting", "hapairs_tally")  # kept by triggers, which TRUNCATE does not fire


def empty_fleet() -> None:
    """A rerun at another size starts empty (the summaries with it: they follow the rows)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(TABLES + SUMMARIES)} RESTART IDENTITY CASCADE")
        else:
            for table in TABLES + SUMMARIES:
                cursor.execute(f"DELETE FROM {table}")


def build_fleet(appliances: int, pairs: int, events: int) -> None:
    """``pairs`` primaries (with a VIP) each backed by its own secondary, the other appliances
    unpaired; a mix of types and reachability (ties in every sortable column); events spread
    over the pairs, a tenth of them on HOT_PAIR, written by one statement on PostgreSQL."""
    from django.db import connection
    from django.utils import timezone

    from hapairs import crypto
    from hapairs.models import Appliance, HAPair, HeartbeatSample

    empty_fleet()
    password = crypto.encrypt("bench-password")
    services = [
        {"name": "Context Aware Service", "version": "8.0.110.0", "admin_status": "Enabled", "service_status": "Up"},
        {"name": "WIPS", "version": "8.0.110.0", "admin_status": "Disabled", "service_status": "Down"},
    ]
    types_ = ("3355", "3365", "3355", "VA-High")
    versions = ("8.0.110.0", "8.0.120.0", "7.6.120.0")

    def appliance(name: str, n: int, net: int, **extra) -> Appliance:
        return Appliance(
            name=name,
            device_type=types_[n % len(types_)],
            hm_ip=f"10.{net}.{n // 250}.{n % 250 + 2}",
            version=versions[n % len(versions)],
            reachability="unreachable" if n % 17 == 0 else "reachable",
            password_ciphertext=password,
            services=services,
            udi=f"AIR-MSE-3355-K9:V01:{name}",
            **extra,
        )

    rows = []
    for i in range(pairs):
        rows.append(
            appliance(f"p{i:05d}", i, 100, vip=f"10.101.{i // 250}.{i % 250 + 2}", vip_prefixlen=16, role="primary")
        )
        rows.append(appliance(f"s{i:05d}", i, 102, role="secondary"))
    for i in range(appliances - 2 * pairs):
        rows.append(appliance(f"u{i:05d}", i, 104))
    Appliance.objects.bulk_create(rows, batch_size=2000)
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
            primary_generation=1,
            secondary_generation=1,
            primary_reachable=True,
            secondary_reachable=True,
            primary_in_charge=True,
            primary_services_up=True,
            secondary_services_up=True,
            status_updated_at=now,
        )
        pair.assign_slot(1)
        pair_rows.append(pair)
    HAPair.objects.bulk_create(pair_rows, batch_size=2000)
    pair_ids, primary_ids = zip(*HAPair.objects.order_by("pk").values_list("pk", "primary_id"), strict=True)
    hot = pair_ids[int(HOT_PAIR[1:])]
    insert_events(events, list(pair_ids), list(primary_ids), hot, now)
    HeartbeatSample.objects.bulk_create(
        [
            HeartbeatSample(pair_id=pk, at=now - timedelta(minutes=m), mean_ms=1.0 + (m % 7) / 10)
            for pk in pair_ids[:60]
            for m in range(60)
        ],
        batch_size=2000,
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # as autovacuum leaves a table: statistics, visibility map
            for table in TABLES + SUMMARIES:
                cursor.execute(f"VACUUM ANALYZE {table}")
    else:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


EVENT_COLUMNS = (
    "pair_id, appliance_id, seq, code, description, cause_key, generated_by, timestamp, remarks, severity, created_at"
)


def insert_events(events: int, pair_ids: list[int], primary_ids: list[int], hot: int, now) -> None:
    """Event n: on the hot pair when n % 10 == 0, else on pair n % pairs; a second apart, newest first."""
    from django.db import connection

    if not events:
        return
    description = "Heartbeats have been setup successfully"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            hot_index = pair_ids.index(hot)
            cursor.execute(
                f"""
                INSERT INTO hapairs_haevent ({EVENT_COLUMNS})
                SELECT pairs[k], primaries[k], n + 1, 'heartbeats_setup', %s, '', 'Primary',
                       %s - n * interval '1 second', 'bench', 'info', %s
                FROM (SELECT n, CASE WHEN n %% 10 = 0 THEN %s ELSE n %% %s + 1 END AS k
                      FROM generate_series(0, %s - 1) AS n) AS g,
                     (SELECT %s::bigint[] AS pairs, %s::bigint[] AS primaries) AS ids
                """,
                [description, now, now, hot_index + 1, len(pair_ids), events, pair_ids, primary_ids],
            )
            return
        batch = []
        for n in range(events):
            k = pair_ids.index(hot) if n % 10 == 0 else n % len(pair_ids)
            timestamp = now - timedelta(seconds=n)
            batch.append(
                (pair_ids[k], primary_ids[k], n + 1, "heartbeats_setup", description, "", "Primary", timestamp,
                 "bench", "info", now)
            )  # fmt: skip
            if len(batch) == 10_000 or n == events - 1:
                cursor.executemany(
                    f"INSERT INTO hapairs_haevent ({EVENT_COLUMNS}) VALUES ({', '.join(['%s'] * 11)})", batch
                )
                batch = []


# --- the pages -----------------------------------------------------------------------------
def pages(appliances: int, pairs: int, events: int) -> dict[str, tuple[str, str, int]]:
    """name: (what it is, the first URL, how many "Next" links to follow from it). The deep
    pages are as deep as the tenth-size fleet has pages: 20 of the list, 10 of the overview
    and of the events at the default sizes."""
    tenth_list = appliances // 10 // PAGE_SIZE
    deep = max(1, min(20, tenth_list))
    overview = max(1, min(10, pairs // 10 // PAGE_SIZE))
    log = max(1, min(10, events // 100 // EVENTS_PAGE_SIZE))
    return {
        "mse_list": ("MSE list, page 1", "/mse/", 0),
        "mse_list_sorted": ("MSE list sorted by reachability ▼, page 1", "/mse/?sort=-reachability", 0),
        f"mse_list_sorted_page_{deep}": (
            f"MSE list sorted by reachability ▼, page {deep}",
            "/mse/?sort=-reachability",
            deep - 1,
        ),
        f"mse_list_type_page_{deep}": (f"MSE list sorted by type, page {deep}", "/mse/?sort=type", deep - 1),
        "mse_list_search": ("MSE list, search “s0000”", "/mse/?q=s0000", 0),
        "ha_status": ("HA status (the busiest pair)", f"/mse/{HOT_PAIR}/ha/", 0),
        f"ha_status_events_page_{log}": (f"HA status, events page {log}", f"/mse/{HOT_PAIR}/ha/", log - 1),
        "ha_overview": ("HA overview, page 1", "/ha/", 0),
        f"ha_overview_page_{overview}": (f"HA overview, page {overview}", "/ha/", overview - 1),
        "jobs": ("Jobs", "/jobs/", 0),
    }


PAGE_SIZE, EVENTS_PAGE_SIZE = 50, 25  # hapairs.views: _common.PAGE_SIZE, ha.EVENTS_PAGE_SIZE
NEXT_LINK = re.compile(r'<a href="([^"]+)"[^>]*rel="next"')


def follow(client, url: str, hops: int) -> str:
    """The URL of the page ``hops`` "Next" links after ``url``, as an operator gets there."""
    for _ in range(hops):
        response = client.get(url)
        found = NEXT_LINK.search(response.content.decode())
        if response.status_code != 200 or not found:
            raise SystemExit(f"bench_pages: no Next link on {url} ({response.status_code})")
        url = url.split("?")[0] + html.unescape(found.group(1))
    return url


def count_queries(client, url: str) -> tuple[int, int]:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    reset_queries()  # the log keeps 9,000 queries at most: a full one would count nothing
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    return response.status_code, len(captured)


def run(appliances: int, pairs: int, events: int, requests: int, paths: dict) -> dict:
    """Seed, then time every page and the floor in interleaved rounds."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    started = time.perf_counter()
    build_fleet(appliances, pairs, events)
    seeded = time.perf_counter() - started
    user, _ = get_user_model().objects.get_or_create(username="bench-operator")
    user.groups.add(Group.objects.get(name="Operator"))
    client = Client()
    client.force_login(user)
    urls = {name: follow(client, first, hops) for name, (_what, first, hops) in paths.items()}
    urls["floor"] = FLOOR_URL
    figures: dict = {}
    for name, url in urls.items():
        status, queries = count_queries(client, url)
        figures[name] = {"url": url, "status": status, "queries": queries, "timings": []}
    for _ in range(requests):
        for name, url in urls.items():
            began = time.perf_counter()
            response = client.get(url)
            figures[name]["timings"].append((time.perf_counter() - began) * 1000)
            if response.status_code != 200:
                figures[name]["status"] = response.status_code
    for each in figures.values():
        timings = sorted(each.pop("timings"))
        each["p50_ms"] = round(statistics.median(timings), 2)
        each["p95_ms"] = round(timings[max(0, -(-len(timings) * 95 // 100) - 1)], 2)
    figures["_seed_seconds"] = round(seeded, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--appliances", type=int, default=None, help="10,000 (PostgreSQL) or 2,000 (SQLite)")
    parser.add_argument("--pairs", type=int, default=None, help="half the appliances")
    parser.add_argument("--events", type=int, default=None, help="1,000,000 (PostgreSQL) or 200,000 (SQLite)")
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    setup_django(VAR)
    from django.db import connection

    full_size = connection.vendor == "postgresql"
    appliances = args.appliances or (10_000 if full_size else 2_000)
    pairs = args.pairs if args.pairs is not None else appliances // 2
    events = args.events if args.events is not None else (1_000_000 if full_size else 200_000)
    if appliances < 1000 or not 0 < pairs * 2 <= appliances or events < 0 or args.requests < 1:
        parser.error("--appliances ≥ 1,000; 0 < --pairs ≤ appliances / 2; --events ≥ 0; --requests ≥ 1")
    install_floor_url()
    database = database_description()
    started = time.perf_counter()
    paths = pages(appliances, pairs, events)
    small = run(appliances // 10, pairs // 10, events // 10, 5, paths)
    full = run(appliances, pairs, events, args.requests, paths)
    floor = full["floor"]["p95_ms"]
    failures = []
    rows = []
    emit(
        bench="pages_floor",
        what="bare 100-row list of appliances",
        database=database,
        p50_ms=full["floor"]["p50_ms"],
        p95_ms=floor,
        queries=full["floor"]["queries"],
    )
    for name, (what, _first, _hops) in paths.items():
        figures, tenth = full[name], small[name]
        ratio = round(figures["p95_ms"] / floor, 2) if floor else None
        same_queries = figures["queries"] == tenth["queries"]
        for run_figures, size in ((figures, "full"), (tenth, "tenth")):
            if run_figures["status"] != 200:
                failures.append(f"{name} answered {run_figures['status']} at the {size} size ({run_figures['url']})")
        if not same_queries:
            failures.append(f"{name}: {figures['queries']} queries at full size, {tenth['queries']} at a tenth")
        emit(
            bench="page",
            page=name,
            database=database,
            appliances=appliances,
            pairs=pairs,
            events=events,
            requests=args.requests,
            p50_ms=figures["p50_ms"],
            p95_ms=figures["p95_ms"],
            floor_p95_ms=floor,
            ratio=ratio,
            target_ratio=TARGET_RATIO,
            within_target=ratio is not None and ratio <= TARGET_RATIO,
            queries=figures["queries"],
            queries_at_tenth_size=tenth["queries"],
            queries_independent_of_size=same_queries,
        )
        rows.append(
            {
                "figure": f"{what}: p95",
                "value": figures["p95_ms"],
                "unit": "ms",
                "floor": floor,
                "ratio": ratio,
                "target": f"≤ {TARGET_RATIO:g}× floor",
                "ok": ratio is not None and ratio <= TARGET_RATIO,
                "p50_ms": figures["p50_ms"],
            }
        )
        rows.append(
            {
                "figure": f"{what}: queries (full size / a tenth)",
                "value": figures["queries"],
                "unit": "",
                "floor": tenth["queries"],
                "ratio": round(figures["queries"] / tenth["queries"], 2) if tenth["queries"] else None,
                "target": "equal",
                "ok": same_queries,
            }
        )
    seconds = round(time.perf_counter() - started, 1)
    emit(bench="pages_total", seconds=seconds, seed_seconds=full["_seed_seconds"], failures=failures)
    record(
        "pages",
        rows,
        title="Pages",
        notes=(
            f"{appliances:,} appliances, {pairs:,} HA pairs, {events:,} events ({HOT_PAIR} holds a tenth of them); "
            f"{args.requests} interleaved rounds through Django's test client. Floor: a bare list of 100 appliances "
            f"through the same client and middleware, p95 {floor} ms (p50 {full['floor']['p50_ms']} ms), "
            f"{full['floor']['queries']} queries. `python bench/bench_pages.py`"
        ),
    )
    if failures:
        for failure in failures:
            print(f"bench_pages: FAILED: {failure}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
