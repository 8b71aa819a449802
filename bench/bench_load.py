"""Load: operators browsing the status pages while the fleet reports and a switchover runs.

The issue's "Load" item, written with aiohttp rather than Locust (Locust would bring gevent
into the environment): --operators asyncio operators (50), each with a session of its own
(logged in through /login/ with its CSRF token), browse the status pages an operator watches
for --seconds (60) while --nodes paired agents (2,000, one `nodeagent farm`) report: a real
`celery worker --beat` polls the whole fleet every 10 s and the agents push their events to
the portal's ingest endpoint; at --switchover-at seconds into the load (20) one switchover
is asked through the REST API. The portal runs as production runs it: gunicorn with
deploy/gunicorn.conf.py (3 workers), DEBUG=0, behind a "proxy" (every request says
X-Forwarded-Proto: https; the Secure cookies are kept by hand, aiohttp's jar drops them
on http URLs).

Each operator loops over the pages with a think time of uniform(0.5, 1.5) s after each
answer: the MSE list (/mse/); the list sorted by reachability ▼ at page 20 (reached once,
before the measurement, by following the pages' own "Next" links, as bench_pages does, then
requested by that keyset URL); the HA overview (/ha/); a random pair's Current High
Availability Status (/mse/<primary>/ha/); the status block that page polls with HTMX
(the same URL with HX-Request and HX-Target: ha-status; it answers 286, htmx's "stop
polling", while nothing moves: 286 counts as an answer for that fragment only); and /jobs/.
Each request's latency (send → body read) and status is kept per page.

The floor, in the same run, before the load: the same page mix, one operator, for
--floor-seconds (20), back to back (no think time: a lone operator's requests never
overlap either way, and it gives the floor its samples), with the same poll running
behind. Each page's p95 under load is printed beside the floor's p95 and their ratio:
what 50 operators at once cost against one, on this machine (no target is set for it: the
pages' own targets are bench_pages', unloaded). The switchover: from the API call to its job succeeded (GET
/api/v1/jobs/<id>, every 0.1 s) and to the portal recording FAILOVER_ACTIVE for the pair's
secondary (read through the ORM every 0.05 s); its floor is the agent's own failover time,
read from its events, as bench_portal prints it (target: ≤ 3 s beyond the agent's steps).

The bench fails (exit 1) when an operator's request errs (an answer other than 200, or
an exception: the error rate must be 0), when the switchover's job does not succeed or
when a page got no request. The other targets (the switchover's overhead, the poll
keeping up, the agents' pushes taken) are printed with "ok" and recorded, not fatal.
Prints one JSON object a line (emit); the figures go to var/bench-results/load.json and
docs/benchmarks.md (benchlib.record; a run at other sizes records as load_<nodes>n_<ops>op).

Everything runs on loopback, under var/bench-load (the farm's state too, fresh each run: a
switchover changes what the agents keep). On PostgreSQL the database is the bench's own,
<name>_bench (see benchlib; bench_portal uses it too, one bench after the other). Usage:
python bench/bench_load.py [--nodes 2000] [--operators 50] [--seconds 60]
[--floor-seconds 20] [--switchover-at 20] [--web-workers 3] [--switch-timeout 180]
"""

from __future__ import annotations

import argparse
import asyncio
import html
import io
import os
import random
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VAR = REPO / "var" / "bench-load"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import bench_portal  # noqa: E402
from bench_pages import NEXT_LINK, PAGE_SIZE  # noqa: E402
from bench_portal import big_fleet, launch_farm, register, stop, wait, wait_farms  # noqa: E402
from benchlib import database_description, emit, record, setup_django  # noqa: E402

bench_portal.VAR = VAR  # launch_farm / wait_farms write the fleet, ready file and log here

POLL_SECONDS = 10
TARGET_OVERHEAD_SECONDS = 3.0
THINK_SECONDS = (0.5, 1.5)
PASSWORD = "load-bench-operator"  # a throwaway user in a throwaway database
FRAGMENT_OK = (200, 286)  # htmx's "stop polling" (hapairs.views._common.render_polled)
FAILOVER_INVOKED = "Failover invoked; shutting down primary instance"  # nodeagent.protocol, the secondary's
FAILOVER_ACTIVE = "Instance is in failover active state"


def p95(values: list[float]) -> float | None:
    """Nearest rank, as bench_pages."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, -(-len(ordered) * 95 // 100) - 1)], 1)


def p50(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[(len(ordered) - 1) // 2], 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str, every: float = 0.5):
    return wait(condition, timeout, every, what=what)


# --- the portal: gunicorn as production runs it, one celery worker with beat ---------------
def portal_env(port: int, web_workers: int) -> dict[str, str]:
    """The bench's own environment (after setup_django: its database, secret key, var and
    static folders), as the portal's EnvironmentFile would give it behind the TLS proxy."""
    return {
        **os.environ,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{port}",
        "SECURE_SSL_REDIRECT": "0",  # the agents push over plain HTTP to gunicorn itself
        "SECURE_PROXY_SSL_HEADER": "1",
        "MSEPORTAL_WEB_BIND": f"127.0.0.1:{port}",
        "MSEPORTAL_WEB_WORKERS": str(web_workers),
        "MSEPORTAL_INGEST_URL": f"http://127.0.0.1:{port}/api/v1/ingest/events",
        "MSEPORTAL_POLL_SECONDS": str(POLL_SECONDS),
    }


def start_gunicorn(env: dict[str, str], port: int) -> subprocess.Popen:
    import urllib.request

    log = VAR / "gunicorn.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", str(REPO / "deploy" / "gunicorn.conf.py")],
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    def healthy() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"bench_load: gunicorn exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    wait_for(healthy, 60, "gunicorn's /healthz", 0.2)
    return process


def start_worker(env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """One worker as mseportal-worker.service runs it (prefork, a child per CPU), beat inside."""
    log = VAR / "worker.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "mseportal", "worker", "--beat", "--pool", "prefork",
         "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--hostname", f"bench-load-{os.getpid()}@%h"],
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    def ready() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"bench_load: the worker exited: {log.read_text(errors='replace')[-2000:]}")
        return "ready." in log.read_text(errors="replace")

    wait_for(ready, 120, "the celery worker", 0.2)
    return process, log


def make_users(operators: int) -> str:
    """``operators`` Operator logins and one Operator for the API; returns the API token."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    User = get_user_model()
    group = Group.objects.get(name="Operator")
    hashed = make_password(PASSWORD)
    users = User.objects.bulk_create(
        [User(username=f"load-op-{n:02d}", password=hashed) for n in range(operators)]
        + [User(username="load-api", password=make_password(None))]
    )
    group.user_set.add(*users)
    out = io.StringIO()
    call_command("api_token", "load-api", stdout=out)
    return out.getvalue().strip().splitlines()[-1]


# --- the operators ---------------------------------------------------------------------------
class Operator:
    """A browser: its own connection and cookies (kept by hand: they are Secure)."""

    def __init__(self, base: str, username: str, timeout: float = 60):
        import aiohttp

        self.base, self.username = base, username
        self.cookies: dict[str, str] = {}
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=timeout)
        )

    def _headers(self, extra: dict | None = None) -> dict[str, str]:
        headers = {"X-Forwarded-Proto": "https", **(extra or {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        return headers

    def _keep(self, response) -> None:
        for header in response.headers.getall("Set-Cookie", []):
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    async def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        async with self.session.get(self.base + path, headers=self._headers(headers), allow_redirects=False) as r:
            body = await r.read()
            self._keep(r)
            return r.status, body

    async def login(self) -> None:
        status, body = await self.get("/login/")
        found = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
        if status != 200 or found is None or "csrftoken" not in self.cookies:
            raise SystemExit(f"bench_load: /login/ answered {status} without a CSRF token for {self.username}")
        origin = "https://" + self.base.split("://", 1)[1]
        form = {"username": self.username, "password": PASSWORD, "csrfmiddlewaretoken": found.group(1).decode()}
        headers = self._headers({"Origin": origin, "Referer": f"{origin}/login/"})
        async with self.session.post(self.base + "/login/", data=form, headers=headers, allow_redirects=False) as r:
            body = await r.read()
            self._keep(r)
            if r.status != 302 or "sessionid" not in self.cookies:
                raise SystemExit(f"bench_load: logging {self.username} in answered {r.status}: {body[:500]!r}")

    async def close(self) -> None:
        await self.session.close()


class Tally:
    """Per page: latencies (ms) and errors, of one phase (the floor or the load)."""

    def __init__(self, pages: list[str]):
        self.ms: dict[str, list[float]] = {page: [] for page in pages}
        self.errors: dict[str, int] = dict.fromkeys(pages, 0)
        self.examples: list[dict] = []

    def requests(self, page: str) -> int:
        return len(self.ms[page]) + self.errors[page]


async def request(operator: Operator, tally: Tally, page: str, path: str, headers: dict | None = None) -> None:
    began = time.perf_counter()
    try:
        status, _body = await operator.get(path, headers)
    except Exception as exc:  # an exception is an error: the timeout, a reset connection …
        status, problem = None, f"{type(exc).__name__}: {exc}"
    else:
        problem = "" if status in (FRAGMENT_OK if page == "ha_status_fragment" else (200,)) else f"HTTP {status}"
    if problem:
        tally.errors[page] += 1
        if len(tally.examples) < 10:
            tally.examples.append({"page": page, "path": path, "problem": problem, "operator": operator.username})
    else:
        tally.ms[page].append((time.perf_counter() - began) * 1000)


def page_mix(deep_name: str, deep_url: str, pairs: int):
    """The pages an operator watches, in the order it looks at them; (name, path, headers) each,
    the pair's two drawn afresh on every pass."""

    def mix():
        pair = f"/mse/p{random.randrange(pairs)}/ha/"
        return [
            ("mse_list", "/mse/", None),
            (deep_name, deep_url, None),
            ("ha_overview", "/ha/", None),
            ("ha_status", pair, None),
            ("ha_status_fragment", pair, {"HX-Request": "true", "HX-Target": "ha-status"}),
            ("jobs", "/jobs/", None),
        ]

    return mix, [name for name, _, _ in mix()]


async def browse(operator: Operator, mix, tally: Tally, until: float, think: bool) -> None:
    start = random.randrange(len(mix()))
    if think:  # the operators do not all arrive at the same instant
        await asyncio.sleep(random.uniform(0, THINK_SECONDS[1]))
    while time.monotonic() < until:
        pages = mix()
        for name, path, headers in pages[start:] + pages[:start]:
            if time.monotonic() >= until:
                return
            await request(operator, tally, name, path, headers)
            if think:
                await asyncio.sleep(random.uniform(*THINK_SECONDS))
        start = 0


async def deep_page(operator: Operator, first: str, hops: int) -> str:
    """The URL ``hops`` "Next" links after ``first``, as an operator gets there."""
    url = first
    for _ in range(hops):
        status, body = await operator.get(url)
        found = NEXT_LINK.search(body.decode())
        if status != 200 or not found:
            raise SystemExit(f"bench_load: no Next link on {url} ({status})")
        url = url.split("?")[0] + html.unescape(found.group(1))
    return url


# --- the switchover, through the API, while the operators browse -----------------------------
def pair_ready(primary: str):
    from hapairs import selectors
    from hapairs.models import HAPair

    pair = HAPair.objects.select_related("primary", "secondary").get(primary__name=primary)
    check = selectors.preflight(pair, "switchover")
    return check.allowed, check.refusal


def secondary_state(primary: str) -> str:
    from hapairs.models import HAPair

    return HAPair.objects.filter(primary__name=primary).values_list("secondary_state", flat=True).get()


def agent_own_seconds(secondary: str, since: datetime) -> float | None:
    from hapairs.models import HAEvent

    events = HAEvent.objects.filter(appliance__name=secondary, timestamp__gte=since)
    invoked = events.filter(description=FAILOVER_INVOKED).order_by("timestamp").first()
    active = events.filter(description=FAILOVER_ACTIVE).order_by("timestamp").first()
    return (active.timestamp - invoked.timestamp).total_seconds() if invoked and active else None


async def switchover(base: str, token: str, primary: str, secondary: str, at: float, timeout: float) -> dict:
    """At ``at`` (monotonic), POST the switchover; then time its job and FAILOVER_ACTIVE."""
    import aiohttp

    await asyncio.sleep(max(0.0, at - time.monotonic()))
    headers = {"X-Forwarded-Proto": "https", "Authorization": f"Bearer {token}"}
    result: dict = {"job_status": None, "api_status": None, "job_seconds": None, "failover_active_seconds": None}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), headers=headers) as api:
        asked_at = datetime.now(UTC)
        started = time.perf_counter()
        try:
            async with api.post(
                f"{base}/api/v1/appliances/{primary}/ha/switchover", json={"reason": "load bench"}
            ) as answer:
                result["api_status"], job = answer.status, await answer.json(content_type=None)
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            return result
        result["api_seconds"] = round(time.perf_counter() - started, 3)
        if result["api_status"] != 202:
            result["error"] = f"the API answered {result['api_status']}: {job}"
            return result
        result["job"] = job["id"]
        deadline = started + timeout

        async def watch_state():
            while time.perf_counter() < deadline:
                if await asyncio.to_thread(secondary_state, primary) == "FAILOVER_ACTIVE":
                    result["failover_active_seconds"] = round(time.perf_counter() - started, 3)
                    return
                await asyncio.sleep(0.05)

        async def watch_job():
            while time.perf_counter() < deadline:
                try:
                    async with api.get(f"{base}/api/v1/jobs/{job['id']}") as answer:
                        status = (await answer.json(content_type=None)).get("status")
                except Exception:  # asked again: only the job's end is timed
                    status = None
                if status in ("succeeded", "failed", "cancelled"):
                    result["job_status"] = status
                    result["job_seconds"] = round(time.perf_counter() - started, 3)
                    return
                await asyncio.sleep(0.1)

        await asyncio.gather(watch_state(), watch_job())
        result["finished_at_monotonic"] = time.monotonic()
    for _ in range(60):  # the agent's events reach the portal by push or by the next poll
        own = await asyncio.to_thread(agent_own_seconds, secondary, asked_at - timedelta(seconds=5))
        if own is not None:
            result["agent_own_seconds"] = round(own, 3)
            break
        await asyncio.sleep(0.5)
    return result


# --- the run ---------------------------------------------------------------------------------
async def measure(args, base: str, token: str, pairs: int) -> dict:
    deep = max(1, min(20, -(-args.nodes // PAGE_SIZE)))
    deep_name = f"mse_list_sorted_page_{deep}"
    floor_op = Operator(base, "load-op-00")
    operators = [floor_op] + [Operator(base, f"load-op-{n:02d}") for n in range(1, args.operators)]
    try:
        started = time.perf_counter()
        gate = asyncio.Semaphore(args.web_workers)  # a password check is ~0.3 s of a worker's CPU

        async def login(operator):
            async with gate:
                await operator.login()

        await asyncio.gather(*(login(operator) for operator in operators))
        login_seconds = time.perf_counter() - started
        deep_url = await deep_page(floor_op, "/mse/?sort=-reachability", deep - 1)
        mix, names = page_mix(deep_name, deep_url, pairs)
        emit(bench="load_setup_operators", operators=len(operators), login_seconds=round(login_seconds, 1),
             deep_page=deep_name, deep_url=deep_url.split("&cursor=")[0] + "&cursor=…")  # fmt: skip

        floor = Tally(names)
        await browse(floor_op, mix, floor, time.monotonic() + args.floor_seconds, think=False)
        emit(bench="load_floor_done", requests=sum(floor.requests(n) for n in names), errors=sum(floor.errors.values()))

        load = Tally(names)
        began = time.monotonic()
        until = began + args.seconds
        switch = asyncio.create_task(
            switchover(base, token, "p0", "s0", began + args.switchover_at, timeout=args.switch_timeout)
        )
        await asyncio.gather(*(browse(operator, mix, load, until, think=True) for operator in operators))
        load_seconds = time.monotonic() - began
        result = await switch
        finished = result.pop("finished_at_monotonic", None)
        result["finished_within_load"] = finished is not None and finished <= until
        return {"names": names, "floor": floor, "load": load, "switch": result, "load_seconds": load_seconds}
    finally:
        for operator in operators:
            await operator.close()


def ingest_answers(log: Path) -> tuple[int, int]:
    """The agents' pushes gunicorn answered (its access log, stdout), and those not 2xx."""
    statuses = re.findall(r'"POST /api/v1/ingest/events[^"]*" (\d{3})', log.read_text(errors="replace"))
    return len(statuses), sum(1 for status in statuses if not status.startswith("2"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2000, help="agents, paired two by two (default 2,000)")
    parser.add_argument("--operators", type=int, default=50, help="operators browsing at once (default 50)")
    parser.add_argument("--seconds", type=float, default=60, help="the load's length (default 60)")
    parser.add_argument("--floor-seconds", type=float, default=20, help="the floor's length, 1 operator (default 20)")
    parser.add_argument(
        "--switchover-at", type=float, default=None, help="seconds into the load (default 20, or a third of --seconds)"
    )
    parser.add_argument("--web-workers", type=int, default=3, help="gunicorn workers (default 3)")
    parser.add_argument("--switch-timeout", type=float, default=180, help="seconds the switchover may take (180)")
    args = parser.parse_args()
    if args.nodes < 2 or args.nodes % 2 or args.nodes > 40000:
        parser.error("--nodes must be an even number from 2 to 40000")
    if not 1 <= args.operators <= 1000:
        parser.error("--operators must be from 1 to 1000")
    if args.seconds < 10:
        parser.error("--seconds must be at least 10")
    if args.floor_seconds < 5:
        parser.error("--floor-seconds must be at least 5")
    if args.switchover_at is None:
        args.switchover_at = min(20.0, args.seconds / 3)
    if not 0 <= args.switchover_at < args.seconds:
        parser.error("--switchover-at must be from 0 to less than --seconds")
    if not 1 <= args.web_workers <= 32 or args.switch_timeout < 10:
        parser.error("--web-workers must be from 1 to 32 and --switch-timeout at least 10")

    os.environ["DEBUG"] = "0"  # the production profile, whatever `make bench` says (DEBUG=1)
    os.environ["MSEPORTAL_POLL_SECONDS"] = str(POLL_SECONDS)
    os.environ["MSEPORTAL_HA_STABILISATION_SECONDS"] = "5"
    setup_django(VAR)
    from django.conf import settings

    from hapairs.models import Appliance

    port = free_port()
    env = portal_env(port, args.web_workers)
    base = f"http://127.0.0.1:{port}"
    fleet_text, specs = big_fleet(range(args.nodes // 2), paired=True)
    ingest = env["MSEPORTAL_INGEST_URL"]
    fleet_text = fleet_text.replace("[agent]\n", f'[agent]\ntrap_destinations = ["{ingest}"]\n', 1)
    farm = web = worker = None
    worker_log = VAR / "worker.log"
    try:
        started = time.perf_counter()
        farm, ready = launch_farm(fleet_text, "load-farm", state_root=VAR / "load-farm")
        wait_farms([("load-farm", farm, ready)], timeout=900)
        farm_seconds = time.perf_counter() - started
        register(specs, paired=True, state_root=VAR / "load-farm")  # each certificate pinned, as at its add
        token = make_users(args.operators)
        web = start_gunicorn(env, port)
        worker, worker_log = start_worker(env)
        started = time.perf_counter()
        wait_for(
            lambda: not Appliance.objects.filter(last_polled_at__isnull=True).exists(),
            300,
            "the first poll of every appliance",
        )
        first_poll = time.perf_counter() - started

        def p0_ready():
            allowed, refusal = pair_ready("p0")
            p0_ready.refusal = refusal
            return allowed

        try:
            wait_for(p0_ready, 120, "pair p0 to be Active in the portal")
        except SystemExit:
            raise SystemExit(f"bench_load: p0 cannot switch over: {p0_ready.refusal}") from None
        emit(
            bench="load_setup",
            database=database_description(),
            broker=settings.CELERY_BROKER_URL.split("://")[0],
            nodes=args.nodes,
            pairs=len(specs),
            operators=args.operators,
            web_workers=args.web_workers,
            poll_seconds=POLL_SECONDS,
            farm_start_seconds=round(farm_seconds, 1),
            first_poll_seconds=round(first_poll, 1),
        )
        figures = asyncio.run(measure(args, base, token, len(specs)))
        stale_since = datetime.now(UTC) - timedelta(seconds=2 * POLL_SECONDS)
        stale = Appliance.objects.filter(last_polled_at__lt=stale_since).count()
    finally:
        stop(worker)
        stop(web)
        stop(farm)
    pushes, pushes_refused = ingest_answers(VAR / "gunicorn.log")
    report(args, figures, stale=stale, pushes=pushes, pushes_refused=pushes_refused)


def report(args, figures: dict, *, stale: int, pushes: int, pushes_refused: int) -> None:
    names, floor, load, switch = figures["names"], figures["floor"], figures["load"], figures["switch"]
    database = database_description()
    rows, failures = [], []
    what = {
        "mse_list": "MSE list, page 1",
        "ha_overview": "HA overview, page 1",
        "ha_status": "Current HA Status, a random pair",
        "ha_status_fragment": "Current HA Status, its HTMX status block",
        "jobs": "Jobs",
    }
    for name in names:
        requests = load.requests(name)
        under, base_line = p95(load.ms[name]), p95(floor.ms[name])
        ratio = round(under / base_line, 2) if under is not None and base_line else None
        if requests == 0:
            failures.append(f"{name} got no request under load")
        if floor.requests(name) == 0:
            failures.append(f"{name} got no request in the floor")
        emit(
            bench="load_page",
            page=name,
            requests=requests,
            errors=load.errors[name],
            p50_ms=p50(load.ms[name]),
            p95_ms=under,
            floor_requests=floor.requests(name),
            floor_p50_ms=p50(floor.ms[name]),
            floor_p95_ms=base_line,
            ratio=ratio,
        )
        label = what.get(name, f"MSE list sorted by reachability ▼, page {name.rsplit('_', 1)[-1]}")
        rows.append(
            {"figure": f"{label}: p95 under load ({requests} requests)", "value": under, "unit": "ms",
             "floor": base_line, "ratio": ratio, "target": None, "ok": None,
             "p50_ms": p50(load.ms[name]), "requests": requests, "floor_requests": floor.requests(name)}
        )  # fmt: skip
    total = sum(load.requests(name) for name in names)
    errors, floor_errors = sum(load.errors.values()), sum(floor.errors.values())
    rate = round(errors / total, 6) if total else None
    if errors or floor_errors:
        failures.append(
            f"{errors} requests erred under load (error rate {rate}), {floor_errors} in the floor; "
            f"the first: {(load.examples or floor.examples)[:3]}"
        )
    emit(
        bench="load",
        database=database,
        nodes=args.nodes,
        operators=args.operators,
        seconds=round(figures["load_seconds"], 1),
        requests=total,
        requests_per_second=round(total / figures["load_seconds"], 1),
        errors=errors,
        floor_errors=floor_errors,
        error_rate=rate,
        target_error_rate=0,
        error_examples=load.examples or floor.examples,
        appliances_not_polled_in_last_two_intervals=stale,
        agent_pushes=pushes,
        agent_pushes_refused=pushes_refused,
    )
    agent = switch.get("agent_own_seconds")
    total_s = switch.get("failover_active_seconds")
    overhead = round(total_s - agent, 3) if total_s is not None and agent is not None else None
    overhead_ok = overhead is not None and overhead <= TARGET_OVERHEAD_SECONDS
    emit(
        bench="load_switchover",
        api_status=switch.get("api_status"),
        job_status=switch.get("job_status"),
        api_answer_seconds=switch.get("api_seconds"),
        api_to_job_succeeded_seconds=switch.get("job_seconds"),
        api_to_failover_active_seconds=total_s,
        agent_own_seconds=agent,
        portal_overhead_seconds=overhead,
        target_overhead_seconds=TARGET_OVERHEAD_SECONDS,
        ok=overhead_ok,
        finished_within_load=switch.get("finished_within_load"),
        error=switch.get("error"),
    )
    succeeded = switch.get("job_status") == "succeeded"
    if not succeeded:
        failures.append(f"the switchover's job did not succeed: {switch.get('job_status')} {switch.get('error', '')}")
    rows += [
        {"figure": f"error rate: operator requests that erred ÷ requests ({errors} of {total} under load; "
         f"{floor_errors} in the floor)", "value": rate, "unit": "", "floor": None, "ratio": None, "target": "0",
         "ok": errors == 0 and floor_errors == 0},
        {"figure": "switchover under load: API call → FAILOVER_ACTIVE recorded (floor: the agent's own steps)",
         "value": total_s, "unit": "s", "floor": agent, "ratio": None,  # the target adds to the floor
         "target": f"≤ floor + {TARGET_OVERHEAD_SECONDS:g} s", "ok": overhead_ok},
        {"figure": "switchover under load: API call → its job succeeded", "value": switch.get("job_seconds"),
         "unit": "s", "floor": None, "ratio": None, "target": "succeeded", "ok": succeeded},
        {"figure": f"appliances whose last poll is older than {2 * POLL_SECONDS} s at the load's end", "value": stale,
         "unit": "", "floor": None, "ratio": None, "target": "0", "ok": stale == 0},
        {"figure": f"the agents' event pushes refused by the portal (of {pushes} in the run)",
         "value": pushes_refused, "unit": "", "floor": None, "ratio": None, "target": "0", "ok": pushes_refused == 0},
    ]  # fmt: skip
    default_size = args.nodes == 2000 and args.operators == 50
    record(
        "load" if default_size else f"load_{args.nodes}n_{args.operators}op",  # the must-show apart from smaller runs
        rows,
        title=f"Load: {args.operators} operators, {args.nodes:,} agents reporting, a switchover",
        notes=(
            f"{args.operators} operators (aiohttp, a session each, think time 0.5–1.5 s) browse the status pages for "
            f"{args.seconds:g} s through gunicorn (deploy/gunicorn.conf.py, {args.web_workers} workers, DEBUG=0) while "
            f"{args.nodes:,} paired agents in one `nodeagent farm` are polled every {POLL_SECONDS} s by one "
            f"`celery worker --beat` and push their events to the portal, on {database}; at "
            f"{round(args.switchover_at, 1):g} s one switchover through the REST API. Floor: the same pages, one "
            "operator, back to back, "
            f"{args.floor_seconds:g} s just before. Error rate {rate}. `python bench/bench_load.py`"
        ),
    )
    if failures:
        for failure in failures:
            print(f"bench_load: FAILED: {failure}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
