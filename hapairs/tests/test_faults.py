"""The portal while its own parts fail: a PostgreSQL cluster and a Redis of its own, which
the test starts on free ports in tmp (never the machine's shared ones), stopped and started
again under the production profile (gunicorn, DEBUG=0).

- The database stopped: every page answers 503 "The portal's database is unavailable" (the
  API in its JSON error), never a 500; /healthz turns 503 and says the database is down.
  Started again: the same session's pages answer 200 and /healthz 200.
- The broker stopped: /healthz turns 503 (broker down); the pages still answer, with a
  banner saying the task broker is unavailable. Started again: the banner goes, /healthz 200.

- Jobs, with a real worker (polling every 2 s), real agents pushing their events to ingest,
  and the web restarted: the web restarted between Save and Confirm, the broker stopped for
  4 s while a pairing runs, the database stopped for 4 s while a switchover runs and pushes
  arrive, the web restarted while a failback runs, the broker stopped for 4 s while the polls
  run. Every job succeeds; each step is on the secondary's own event record once (none ran
  twice); the portal holds every event of both agents once, by sequence number (none lost,
  none twice); the polls go on.

Without ``handler500`` (mseportal/urls.py) the database's outage is Django's bare 500 page,
and the first test fails. Without the ``hapairs.context_processors.dependencies`` context
processor (settings.TEMPLATES) no page says the broker is unavailable, and the second
fails. The jobs test says in its own docstring how it fails."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from hapairs.tests.ports import free_port

from .loopback import fresh_subnet
from .test_production_serving import Proxied, Web, free_loopback, manage, production_env, set_up

pytestmark = pytest.mark.slow

USERNAME, PASSWORD = "faultadmin", "a-long-fault-test-password-9"
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


class PrivatePostgres:
    """A throwaway cluster in ``root`` on ``port`` (as the postgres user when run as root:
    initdb refuses root)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.bin = root, free_port(), Path(PG_BIN[-1])
        self.data, self.sockets = root / "data", root / "sockets"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{args[0]}: {done.stdout}\n{done.stderr}"

    def create(self) -> PrivatePostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "mseportal")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/mseportal"


class PrivateRedis:
    def __init__(self, root: Path) -> None:
        self.root, self.port, self.proc = root, free_port(), None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None


def wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def portal(tmp_path_factory):
    if not PG_BIN or shutil.which("redis-server") is None:
        reason = "these need PostgreSQL's server binaries (initdb, pg_ctl) and redis-server"
        if os.environ.get("MSEPORTAL_REQUIRE_NETNS"):  # CI: installed there; a skip must fail it
            pytest.fail(f"CI requires the fault tests, but {reason}")
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("faults")
    # the cluster's own folder, where the postgres user can reach it (pytest's tmp is root's, 0700)
    pg_root = Path(tempfile.mkdtemp(prefix="mseportal-faults-pg-"))
    pg = PrivatePostgres(pg_root).create()
    broker = PrivateRedis(tmp)
    broker.start()
    host, port = free_loopback()
    # the agents push their events to gunicorn itself, as they would to the TLS proxy (this
    # test runs none): plain HTTP must then not be redirected to https
    env = production_env(
        tmp, host, port, "fault",
        MSEPORTAL_WEB_WORKERS="1",
        DATABASE_URL=pg.url,
        CELERY_BROKER_URL=f"redis://127.0.0.1:{broker.port}/0",
        MSEPORTAL_AGENT_NETWORKS="127.0.0.0/8",
        SECURE_SSL_REDIRECT="0",
        MSEPORTAL_INGEST_URL=f"http://{host}:{port}/api/v1/ingest/events",
    )  # fmt: skip
    set_up(env, USERNAME, PASSWORD)
    web = Web(tmp, env, access_file=True)
    client = Proxied(host, port)
    try:
        web.start(client)
        resp, body = client.get("/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
        resp, body = client.request(
            "POST", "/login/", {"username": USERNAME, "password": PASSWORD, "csrfmiddlewaretoken": token},
            headers={"Origin": client.origin, "Referer": f"{client.origin}/login/"},
        )  # fmt: skip
        assert resp.status == 302, body[:1000]
        yield {"client": client, "pg": pg, "broker": broker, "log": web.log, "env": env, "tmp": tmp, "web": web}
    finally:
        web.stop()
        broker.stop()
        try:
            pg.stop()
        except AssertionError:
            pass
        shutil.rmtree(pg_root, ignore_errors=True)


def ingest_statuses(web: Web) -> list[int]:
    """The status of every push the agents made to the ingest endpoint, in order (gunicorn's
    access log)."""
    text = web.access.read_text() if web.access.exists() else ""
    return [int(m.group(1)) for m in re.finditer(r'"POST /api/v1/ingest/events HTTP/[0-9.]+" (\d{3}) ', text)]


def health(client: Proxied) -> tuple[int, dict]:
    try:
        resp, body = client.get("/healthz", proxied=False)
    except OSError:
        return 0, {}
    try:
        return resp.status, json.loads(body or b"{}")
    except ValueError:
        raise AssertionError(f"/healthz answered {resp.status} with no JSON: {body[:800]!r}") from None


PAGES = ("/mse/", "/ha/", "/jobs/", "/reports/")


def test_the_database_down_is_a_503_that_says_so_then_the_pages_come_back(portal):
    client, pg = portal["client"], portal["pg"]
    for page in PAGES:
        assert client.get(page)[0].status == 200, page
    pg.stop()
    try:
        status, body = wait_for(lambda: (s := health(client))[0] == 503 and s, "/healthz to say 503")
        assert body["database"]["status"] == "down" and body["broker"]["status"] == "ok", body
        for page in PAGES:
            resp, content = client.get(page)
            text = content.decode()
            assert resp.status == 503, (page, resp.status, text[:500], portal["log"].read_text()[-2000:])
            assert "The portal&#x27;s database is unavailable" in text and "Nothing you saved before is lost" in text
            assert resp.headers["Retry-After"] == "15"
        resp, content = client.get("/api/v1/appliances")
        assert resp.status == 503 and json.loads(content)["detail"].startswith("The portal's database is unavailable")
    finally:
        pg.start()
    wait_for(lambda: health(client)[0] == 200, "/healthz to say 200 again")
    for page in PAGES:  # the same session: nothing was lost
        resp, content = wait_for(lambda p=page: (r := client.get(p))[0].status == 200 and r, f"{page} again")
        assert b"faultadmin" in content


def test_the_broker_down_is_said_on_every_page_and_by_healthz_then_it_comes_back(portal):
    client, broker = portal["client"], portal["broker"]
    resp, content = client.get("/mse/")
    assert resp.status == 200 and b"broker-unavailable" not in content
    broker.stop()
    try:
        status, body = wait_for(lambda: (s := health(client))[0] == 503 and s, "/healthz to say 503")
        assert body["broker"]["status"] == "down" and body["database"]["status"] == "ok", body
        # the banner, within the period a web process rechecks the broker
        wait_for(lambda: b"broker-unavailable" in client.get("/mse/")[1], "the banner", 30)
        for page in PAGES:
            resp, content = client.get(page)
            assert resp.status == 200 and b"task broker is unavailable" in content, page
    finally:
        broker.start()
    wait_for(lambda: health(client)[0] == 200, "/healthz to say 200 again")
    wait_for(lambda: b"broker-unavailable" not in client.get("/mse/")[1], "the banner to go", 30)


# --- jobs while the broker and the database restart -------------------------------------------
class Api:
    """The REST API through the proxy's door, as ``hapairs.tests.e2e``'s helpers call it."""

    class Answer:
        def __init__(self, status: int, content: bytes) -> None:
            self.status_code, self.content = status, content

        def json(self):
            return json.loads(self.content)

    def __init__(self, client: Proxied, token: str) -> None:
        self.client, self.token = client, token

    def __call__(self, method: str, path: str, body=None, as_: str = "admin"):
        import http.client

        conn = http.client.HTTPConnection(self.client.host, self.client.port, timeout=60)
        headers = {"Host": f"{self.client.host}:{self.client.port}", "X-Forwarded-Proto": "https",
                   "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}  # fmt: skip
        try:
            conn.request(
                method.upper(), f"/api/v1{path}", body=None if body is None else json.dumps(body), headers=headers
            )
            resp = conn.getresponse()
            return self.Answer(resp.status, resp.read())
        except OSError as exc:
            return self.Answer(0, json.dumps({"detail": str(exc)}).encode())
        finally:
            conn.close()


STORED_SEQS = (
    "import json; from hapairs.models import HAEvent; "
    "print(json.dumps(list(HAEvent.objects.filter(appliance__name={node!r}, seq__isnull=False)"
    ".order_by('seq').values_list('seq', flat=True))))"
)


def agent_events(state: Path, node: str) -> list[dict]:
    path = state / node / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


POLLED_AT = (
    "import json; from hapairs.models import Appliance; "
    "print(json.dumps({a.name: a.last_polled_at.timestamp() if a.last_polled_at else 0 "
    "for a in Appliance.objects.filter(name__in=['f-p', 'f-s'])}))"
)


def agent_call(ip: str, password: str, method: str, path: str, body=None):
    """A signed request straight to an agent's HM API, as an operator's tool makes one."""
    import asyncio

    import aiohttp

    from nodeagent.client import AgentClient

    async def call():
        async with aiohttp.ClientSession() as session:
            return await AgentClient(session, ip, password, port=8001, timeout=10).call(method, path, body)

    return asyncio.run(call())


def field(page: bytes, name: str) -> str:
    found = re.search(rb'name="' + name.encode() + rb'" value="([^"]*)"', page)
    assert found, f"no {name} in the page: {page[:2000]!r}"
    return found.group(1).decode()


def test_jobs_survive_the_broker_the_database_and_the_web_restarting(portal):
    """Real agents, a real worker (with beat, polling every 2 s) and the agents pushing their
    events to ingest, through five faults, one after another:

    1. The web restarted between Save and Confirm of the Configure page: Confirm, after the
       restart, starts the pairing (the confirmation waits in the session, in the database).
    2. The broker stopped for 4 s while the pairing runs: the job succeeds.
    3. The database stopped for 4 s while a switchover runs, from the moment the secondary
       records its first failover step; meanwhile a license is installed on the primary's
       agent (an event of its own). The agents' pushes get 503 (seen in gunicorn's access
       log) and are pushed again; the job succeeds.
    4. The web restarted while the failback runs: the job succeeds.
    5. The broker stopped for 4 s while the polls run: both appliances are polled again.

    Then each agent step is on the agent's own record once (none ran twice), and the portal
    holds each agent event once by its sequence number (none lost, none twice: push and poll
    both deliver them).

    Shown to fail with a protection removed:
    - the pusher's retry (traps.py ``push_all``: a failed destination retried after 2 s)
      replaced by giving up: "timed out waiting for the pushes to ingest taken again" (tried);
    - the Configure confirmation kept in the web process's memory instead of the session:
      Confirm after the restart answers "That confirmation has expired", and step 1 fails.
    The ingest's de-duplication has two layers (the ``existing`` check in
    ``services.status.events_ingest`` and the database's unique (appliance, seq)): removing
    the first alone still passes (tried)."""
    from hapairs.tests.e2e import AgentFarm, Process, add, node_toml
    from hapairs.tests.e2e import wait_for as e2e_wait

    env, tmp, pg, broker, web = portal["env"], portal["tmp"], portal["pg"], portal["broker"], portal["web"]
    client = portal["client"]
    token = manage(env, "api_token", USERNAME).strip().splitlines()[-1]
    api = Api(client, token)
    net = fresh_subnet(79, 8001)  # 127.79: no other test's range
    p_ip, s_ip, vip = f"{net}.2", f"{net}.3", f"{net}.1"
    (tmp / "farm").mkdir(exist_ok=True)
    nodes = node_toml("f-p", "3355", "primary", p_ip, "pw-primary", vip=vip) + node_toml(
        "f-s", "3355", "secondary", s_ip, "pw-secondary"
    )
    farm = AgentFarm(tmp / "farm", nodes, port=8001).start()
    state = tmp / "farm" / "state"
    worker_env = {**env, "MSEPORTAL_POLL_SECONDS": "2", "MSEPORTAL_JOB_LEASE_SECONDS": "3", "MSEPORTAL_RESUME_SECONDS": "1",
                  "MSEPORTAL_HA_STABILISATION_SECONDS": "5", "MSEPORTAL_HA_SYNC_TIMEOUT_SECONDS": "90"}  # fmt: skip

    class Worker(Process):
        stop_timeout = 20.0
        log = tmp / "worker.log"

        def start(self):
            self._spawn(
                ["celery", "-A", "mseportal", "worker", "--pool", "solo", "--beat", "--schedule",
                 str(tmp / "beat-schedule"), "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                 "--hostname", f"faults-{os.getpid()}@%h"],
                ready=lambda: "ready." in (self.log.read_text() if self.log.exists() else ""), timeout=60,
                what="the Celery worker", env=worker_env,
            )  # fmt: skip
            return self

    worker = Worker().start()

    def job_done(job_id):
        body = api("get", f"/jobs/{job_id}")
        if body.status_code != 200:
            return None
        job = body.json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    def succeeded(job_id, what):
        job = e2e_wait(lambda: job_done(job_id), timeout=150, every=0.5, what=what)
        assert job["status"] == "succeeded", (job, worker.log.read_text()[-3000:])

    def ha():
        return api("get", "/appliances/f-p/ha").json()

    def codes(node):
        return [e["code"] for e in agent_events(state, node)] if (state / node / "events.jsonl").exists() else []

    try:
        add(api, "f-p", p_ip, "pw-primary")
        # 1. Save on the Configure page, the web restarted, then Confirm
        page = "/mse/f-p/ha/configure/"
        csrf = {"Origin": client.origin, "Referer": f"{client.origin}{page}"}
        _resp, body = client.get(page)
        resp, body = client.request("POST", page, {
            "csrfmiddlewaretoken": field(body, "csrfmiddlewaretoken"), "stage": "save",
            "secondary_name": "f-s", "secondary_ip": s_ip, "secondary_password": "pw-secondary",
            "failover_type": "manual", "failback_type": "manual", "failover_wait": "10", "reason": "faults",
        }, headers=csrf)  # fmt: skip
        assert resp.status == 200 and b'name="token"' in body, body[:3000]
        web.restart(client)
        resp, body = client.request("POST", page, {
            "csrfmiddlewaretoken": field(body, "csrfmiddlewaretoken"), "stage": "confirm", "token": field(body, "token"),
        }, headers=csrf)  # fmt: skip
        assert resp.status == 200 and b"expired" not in body, body[:3000]
        jobs = api("get", "/jobs").json()
        configure = next(j["id"] for j in jobs if j["kind"] == "configure_ha")
        # 2. the broker goes away while the pairing runs, and comes back
        time.sleep(1.0)
        broker.stop()
        time.sleep(4.0)
        broker.start()
        succeeded(configure, "the pairing job")
        e2e_wait(lambda: ha().get("status") == "Active", timeout=120, every=0.5, what="the pair Active")
        # 3. the database goes away while a switchover runs (from its first step on the
        # secondary: the rest of its events are pushed while the database is down), and comes back
        pushes = len(ingest_statuses(web))
        response = api("post", "/appliances/f-p/ha/switchover", {"reason": "faults"})
        assert response.status_code == 202, response.content
        switchover = response.json()["id"]
        e2e_wait(lambda: "failover_shutting_down_primary" in codes("f-s"), timeout=60, every=0.02,
                 what="the secondary's first failover step")  # fmt: skip
        pg.stop()
        down_at = time.monotonic()
        try:
            # and an event of its own on the primary, pushed while the database is down
            installed = agent_call(p_ip, "pw-primary", "POST", "/hm/v1/licenses",
                                   {"text": "fault-test license", "features": {"Service Count": "1"}})  # fmt: skip
            assert installed["id"], installed
            e2e_wait(lambda: 503 in ingest_statuses(web)[pushes:], timeout=20, every=0.2,
                     what="a push to ingest refused while the database is down")  # fmt: skip
            time.sleep(max(0.0, 4.0 - (time.monotonic() - down_at)))
        finally:
            pg.start()
        succeeded(switchover, "the switchover job")
        assert ha()["secondary_state"] == "FAILOVER_ACTIVE", ha()
        e2e_wait(lambda: ingest_statuses(web)[-1] == 200, timeout=30, every=0.5,
                 what="the pushes to ingest taken again")  # fmt: skip
        # 4. the web restarted while the failback runs
        response = api("post", "/appliances/f-p/services/start", {"reason": "primary repaired"})
        assert response.status_code == 202, response.content
        succeeded(response.json()["id"], "the services start job")
        e2e_wait(lambda: ha()["primary_state"] == "TERMINATED", timeout=60, every=0.5,
                 what="the primary back as TERMINATED")  # fmt: skip
        allowed_at = json.loads(manage(env, "shell", "-c", (
            "import json; from hapairs.models import HAPair; "
            "print(json.dumps(HAPair.objects.get(primary__name='f-p').switch_allowed_at.timestamp()))"
        )).strip().splitlines()[-1])  # fmt: skip
        time.sleep(max(0.0, allowed_at - time.time()) + 1.0)
        response = api("post", "/appliances/f-p/ha/failback", {"reason": "faults"})
        assert response.status_code == 202, response.content
        failback = response.json()["id"]
        e2e_wait(lambda: "failback_in_progress" in codes("f-s") + codes("f-p"), timeout=60, every=0.05,
                 what="the failback under way")  # fmt: skip
        web.restart(client)
        succeeded(failback, "the failback job")
        e2e_wait(lambda: ha().get("status") == "Active" and ha()["primary_state"] == "PRIMARY_ACTIVE", timeout=120,
                 every=0.5, what="the pair Active on its primary again")  # fmt: skip
        # 5. the broker goes away while the polls run, and comes back: the polls go on
        broker.stop()
        time.sleep(4.0)
        broker.start()
        back = time.time()

        def polled_since():
            got = json.loads(manage(env, "shell", "-c", POLLED_AT).strip().splitlines()[-1])
            return len(got) == 2 and all(at > back for at in got.values()) and got

        e2e_wait(polled_since, timeout=60, every=1.0, what="both appliances polled after the broker came back")
        # no agent step ran twice: each step of the pairing, the failover and the failback is
        # on the secondary's own record once
        steps = codes("f-s")
        for code in ("config_created", "failover_shutting_down_primary", "failover_starting_instance",
                     "failover_active", "failback_complete"):  # fmt: skip
            assert steps.count(code) == 1, (code, steps)
        # no event lost or stored twice: the portal holds each agent event once, by its sequence number
        for node in ("f-p", "f-s"):
            seqs = sorted(e["seq"] for e in agent_events(state, node))

            def stored(node=node):
                out = manage(env, "shell", "-c", STORED_SEQS.format(node=node)).strip().splitlines()[-1]
                return json.loads(out)

            held = e2e_wait(lambda seqs=seqs: (got := stored()) == seqs and got, timeout=60, every=1.0,
                            what=f"the portal to hold {node}'s events")  # fmt: skip
            assert held == seqs
    finally:
        worker.stop()
        farm.stop()
