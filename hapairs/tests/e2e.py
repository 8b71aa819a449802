"""Real parts for end-to-end tests: agent processes on loopback and a Celery worker.

Nothing here is a mock: the agents are ``python -m nodeagent farm`` processes, the
worker is ``celery worker`` against the test database and the configured broker.
"""

from __future__ import annotations

import glob
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], object], *, timeout: float, every: float = 0.2, what: str = "condition"):
    """Poll until ``condition()`` is truthy; return its value or fail with ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def node_toml(
    name: str,
    device_type: str,
    role: str,
    hm_ip: str,
    password: str,
    *,
    vip: str | None = None,
    version: str = "7.2.103.0",
    udi: str | None = None,
) -> str:
    lines = [
        "[[node]]",
        f'name = "{name}"',
        f'type = "{device_type}"',
        f'version = "{version}"',
        f'role = "{role}"',
        f'hm_ip = "{hm_ip}"',
        f'password = "{password}"',
    ]
    if vip:
        lines += [f'vip = "{vip}"', 'netmask = "255.255.255.0"']
    if udi:
        lines.append(f'udi = "{udi}"')
    return "\n".join(lines) + "\n"


class Process:
    """A real subprocess in its own session, with its log: ``_spawn`` starts it and waits until
    ``ready()`` (or fails with its log if it exits first); ``stop`` is SIGTERM, then SIGKILL."""

    log: Path
    stop_timeout = 10.0
    process: subprocess.Popen | None = None

    def _spawn(
        self, argv: list[str], *, ready, timeout: float, what: str, env: dict | None = None, preexec_fn=None
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=REPO,
            env=env,
            preexec_fn=preexec_fn,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: ready() or self.process.poll() is not None, timeout=timeout, what=what)
        if self.process.poll() is not None:
            raise AssertionError(f"{what} exited: {self.log.read_text(errors='replace')[-3000:]}")

    def _logged(self, text: str):
        return lambda: text in self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash or a power loss would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


class AgentFarm(Process):
    """One ``nodeagent farm`` process serving the given nodes. ``stop`` (SIGTERM) stops the
    agents gracefully, a deliberate stop peers never take over; ``kill`` is a failure to them."""

    # the largest file the farm may write (RLIMIT_FSIZE, as a full disk would stop it): None, no limit
    max_file_bytes: int | None = None
    # its clock this many seconds off the machine's (libfaketime, monotonic time untouched): 0, none
    clock_ahead: float = 0

    def __init__(self, workdir: Path, nodes_toml: str, *, port: int):
        self.workdir = workdir
        self.fleet = workdir / "fleet.toml"
        self.fleet.write_text(f"[agent]\nport = {port}\n\n{nodes_toml}")
        self.ready = workdir / "ready"
        self.log = workdir / "farm.log"

    def start(self) -> AgentFarm:
        self.ready.unlink(missing_ok=True)
        self._spawn(
            ["nodeagent", "farm", "--fleet", str(self.fleet), "--state-root", str(self.workdir / "state"),
             "--ready-file", str(self.ready), "--allow-short-wait", "--log-level", "INFO"],
            ready=self.ready.exists, timeout=30, what="the agent farm",
            preexec_fn=self._limits if self.max_file_bytes else None, env=self._clock_env(),
        )  # fmt: skip
        return self

    def _clock_env(self) -> dict | None:
        if not self.clock_ahead:
            return None
        return {**os.environ, "LD_PRELOAD": faketime_library(), "FAKETIME": f"{self.clock_ahead:+g}s",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1"}  # fmt: skip

    def _limits(self) -> None:  # in the child, before exec: its writes past the size fail (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_file_bytes, self.max_file_bytes))


def faketime_library() -> str:
    """Debian's libfaketime (multi-threaded build), or skip saying how to get it; with
    MSEPORTAL_REQUIRE_FAKETIME=1 (CI, which installs it) a missing one fails instead."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if found:
        return found[0]
    reason = "libfaketime is not installed (apt-get install faketime)"
    if os.environ.get("MSEPORTAL_REQUIRE_FAKETIME") == "1":
        pytest.fail(f"a clock test is required (MSEPORTAL_REQUIRE_FAKETIME=1) but cannot run: {reason}")
    pytest.skip(reason)


class WitnessProcess(Process):
    """One ``python -m nodeagent witness`` process (its state file beside its log)."""

    def __init__(self, workdir: Path, address: str, password: str):
        self.workdir, self.address, self.password = workdir, address, password
        self.state_file = workdir / "witness.json"
        self.log = workdir / "witness.log"

    def start(self) -> WitnessProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            ["nodeagent", "witness", "--listen", self.address, "--password", self.password,
             "--state-file", str(self.state_file), "--log-level", "INFO"],
            ready=self._logged("witness listening"), timeout=30, what="the witness",
        )  # fmt: skip
        return self


def farm_per_node(
    workdir: Path,
    primary: tuple[str, str, str, str],
    secondary: tuple[str, str, str],
    *,
    device_type: str = "3355",
    primary_extra: str = "",
) -> tuple[AgentFarm, AgentFarm]:
    """A primary (name, HM IP, password, VIP) and a secondary (name, HM IP, password), each in
    its own agent process, so one can be stopped, killed or wiped alone."""
    (workdir / "p").mkdir(exist_ok=True)
    (workdir / "s").mkdir(exist_ok=True)
    name, ip, password, vip = primary
    farm_p = AgentFarm(
        workdir / "p", node_toml(name, device_type, "primary", ip, password, vip=vip) + primary_extra, port=8001
    ).start()
    farm_s = AgentFarm(
        workdir / "s", node_toml(secondary[0], device_type, "secondary", secondary[1], secondary[2]), port=8001
    ).start()
    return farm_p, farm_s


def database_url_for_workers() -> str:
    """The URL of the database the test process is using right now (the test database)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class Worker(Process):
    """A real ``celery worker`` (solo pool, with beat) on the test database."""

    stop_timeout = 20.0

    def __init__(self, workdir: Path, extra_env: dict[str, str]):
        self.workdir = workdir
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url_for_workers(),
            "DEBUG": "1",
            "MSEPORTAL_VAR_DIR": str(settings.VAR_DIR),
            **extra_env,
        }
        self.log = workdir / "worker.log"

    def start(self) -> Worker:
        self._spawn(
            ["celery", "-A", "mseportal", "worker", "--pool", "solo", "--beat",
             "--schedule", str(self.workdir / "beat-schedule"), "--loglevel", "INFO", "--without-gossip",
             "--without-mingle", "--hostname", f"e2e-{os.getpid()}-{time.monotonic_ns()}@%h"],
            ready=self._logged("ready."), timeout=60, what="the Celery worker", env=self.env,
        )  # fmt: skip
        return self

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop_checked(self) -> None:
        """Stop, then fail the test if the worker logged a crash. A job can end "succeeded" on
        the page while its task died after (seen: its end event refused by the database); only
        the log says so."""
        self.stop()
        crashes = worker_crashes(self.log.read_text(errors="replace"))
        assert not crashes, "the worker logged a crash:\n" + "\n---\n".join(crashes)


def worker_crashes(log: str) -> list[str]:
    """The tracebacks in a worker's log, each with the line before it (a task that raised,
    a job step that crashed)."""
    crashes, lines = [], log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j] and not lines[j].startswith((" ", "\t"))), i)
            crashes.append("\n".join(lines[max(i - 1, 0) : end + 1])[-2500:])
    return crashes


# --- the operator's moves through the API (the ``api`` fixture of conftest) ---------------
def wait_job(api, job_id, *, timeout=120, worker=None):
    def finished():
        body = api("get", f"/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    try:
        body = wait_for(finished, timeout=timeout, every=0.3, what=f"job {job_id}")
    except AssertionError:
        if worker:
            print(worker.tail())
        raise
    assert body["status"] == "succeeded", (body["error"], body, worker.tail() if worker else "")
    return body


def add(api, name, ip, password):
    response = api("post", "/appliances", {"name": name, "ip": ip, "password": password}, as_="admin")
    assert response.status_code == 201, response.content
    return response.json()


def pair_through_api(api, worker, primary: tuple, secondary: tuple, *, failover="manual", wait=10):
    """Add the primary (name, HM IP, password, …) and pair it with the secondary through the
    API, as an operator would; returns once the configure job succeeded."""
    add(api, primary[0], primary[1], primary[2])
    response = api(
        "post",
        f"/appliances/{primary[0]}/ha",
        {
            "secondary_name": secondary[0],
            "secondary_ip": secondary[1],
            "secondary_password": secondary[2],
            "failover_type": failover,
            "failback_type": "manual",
            "long_failover_wait": wait,
        },
    )
    assert response.status_code == 202, response.content
    return wait_job(api, response.json()["id"], worker=worker)
