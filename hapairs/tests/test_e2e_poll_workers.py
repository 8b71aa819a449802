"""The sharded poll with real ``celery worker`` processes on the configured broker and the
test database, polling a real agent farm: the shards are shared by whichever workers run,
a worker started later takes some without the first being restarted, each shard then sticks
to one worker (Redis), a killed worker's shards go back to the others, every appliance is
polled in every round, and a refresh after a push is taken before the polls waiting."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db.models import Q

from hapairs import dispatch, sharding, tasks
from hapairs.crypto import encrypt
from hapairs.models import Appliance
from hapairs.tests.e2e import AgentFarm, Worker, node_toml, wait_for
from nodeagent import tlsid

pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.django_db(transaction=True)]
NODES, SHARDS = 40, 8


class PollWorker(Worker):
    """A real ``celery worker`` without beat (the test fires the rounds), with its own name."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        *,
        pool: str = "solo",
        concurrency: int = 1,
        shards: int = SHARDS,
        queues: list[str] | None = None,
    ):
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir, {"MSEPORTAL_POLL_SHARDS": str(shards)})
        self.name = f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        self.pool, self.concurrency, self.queues = pool, concurrency, queues

    def start(self) -> PollWorker:
        self._spawn(
            ["celery", "-A", "mseportal", "worker", "--pool", self.pool, "--concurrency", str(self.concurrency),
             "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--hostname", f"{self.name}@%h",
             *(["--queues", ",".join(self.queues)] if self.queues else [])],
            ready=self._logged("ready."), timeout=60, what=f"the Celery worker {self.name}", env=self.env,
        )  # fmt: skip
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def farm(tmp_path, subnet, settings):
    """NODES unpaired agents in one farm process, registered with their certificates pinned."""
    names = [f"pw{n}" for n in range(NODES)]
    (tmp_path / "farm").mkdir()
    farm = AgentFarm(
        tmp_path / "farm",
        "".join(
            node_toml(name, "3355", "secondary", f"{subnet}.{n + 10}", f"pw-{name}") for n, name in enumerate(names)
        ),
        port=settings.AGENT_PORT,
    )
    farm.start()
    Appliance.objects.bulk_create(
        [
            Appliance(
                name=name,
                device_type="3355",
                hm_ip=f"{subnet}.{n + 10}",
                version="7.2.103.0",
                role="secondary",
                password_ciphertext=encrypt(f"pw-{name}"),
                tls_fingerprint=tlsid.read_fingerprint(farm.workdir / "state" / name / "tls" / "cert.pem"),
            )
            for n, name in enumerate(names)
        ]
    )
    yield farm
    farm.stop()


def poll_round(*, shards: int = SHARDS) -> dict[int, str]:
    """Fire one round as beat does; wait until every shard's round is kept; return who polled each."""
    fired = time.time()
    tasks.fleet_poll()

    def finished():
        kept = sharding.rounds()
        return len(kept) == shards and all(r.get("finished_at", 0) >= fired for r in kept.values()) and kept

    kept = wait_for(finished, timeout=30, what="every shard's round")
    # every appliance was polled in this round, and answered
    assert sum(figures["appliances"] for figures in kept.values()) == NODES
    assert sum(figures["unreachable"] for figures in kept.values()) == 0
    fired_at = Appliance.objects.order_by().values_list("last_polled_at", flat=True)
    assert all(at is not None and at.timestamp() >= fired for at in fired_at)
    return {shard: figures["worker"].split("@")[0] for shard, figures in kept.items()}


def test_workers_share_the_shards_and_one_started_later_takes_some_without_restarting_the_first(
    farm, tmp_path, settings
):
    # Given 8 shards, and one worker (prefork: its children poll with connections of their own)
    settings.POLL_SHARDS, settings.POLL_SECONDS = SHARDS, 30
    sharding.rounds_clear()
    first = PollWorker(tmp_path / "a", "poll-a", pool="prefork", concurrency=2).start()
    second = None
    try:
        # When a round is fired, the one worker polls every shard
        assert set(poll_round().values()) == {first.name}

        # When a second worker starts (on any host: it shares only Redis and the database) and
        # more rounds are fired
        second = PollWorker(tmp_path / "b", "poll-b").start()
        if sharding.owners_supported():  # each worker sees the other at its next refresh (2 s)
            wait_for(
                lambda: all("(2 poller(s) live)" in worker.text() for worker in (first, second)),
                timeout=3 * sharding.OWNERS_REFRESH + 10,
                what="both workers taking their share of the shards",
            )
        polled_by: Counter[str] = Counter()
        for _ in range(4):
            polled_by.update(poll_round().values())

        # Then both took shards, every appliance was polled in every round (poll_round), and
        # the first worker went on as it was: the same process, started once
        assert polled_by[second.name] > 0 and polled_by[first.name] > 0, polled_by
        assert sum(polled_by.values()) == 4 * SHARDS
        assert first.process.poll() is None and first.text().count("ready.") == 1
        # and no round of a shard overlapped another (the shard lock never had to skip one)
        assert "skipped, its previous round is still running" not in first.text() + second.text()
        if not sharding.owners_supported():
            return  # the filesystem broker (one host): every worker consumes every queue

        # and each shard sticks to one worker: the one the assignment over the live pollers
        # gives it, half of the shards each, round after round
        owners = {name.split("@")[0]: shards for name, shards in sharding.owners().items()}
        assert sorted(owners) == sorted([first.name, second.name]) and sorted(map(len, owners.values())) == [4, 4]
        expected = {shard: name for name, shards in owners.items() for shard in shards}
        for _ in range(3):
            assert poll_round() == expected

        # When the second worker is killed (no warm shutdown: its entry lapses)
        second.kill()
        # Then the first takes its shards back, without a restart, and polls every one
        wait_for(
            lambda: f"polls {', '.join(map(str, range(SHARDS)))} of {SHARDS}" in first.text().split("Canceling")[-1],
            timeout=sharding.OWNERS_TTL + 4 * sharding.OWNERS_REFRESH,
            what="the first worker taking the killed one's shards",
        )
        assert set(poll_round().values()) == {first.name}
        assert first.text().count("ready.") == 1
    finally:
        if second is not None:
            second.stop()
        first.stop()


def test_a_refresh_after_a_push_is_taken_before_the_polls_waiting(tmp_path, settings):
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        pytest.skip("message priorities are the Redis broker's; the filesystem broker (one machine) has none")
    # Given two rounds of polls of 16 shards waiting in their queues, and then the refresh a
    # push asks for (api/ingest.py queues it so once the pushed events are stored)
    settings.POLL_SHARDS, settings.POLL_SECONDS = 16, 60
    appliance = Appliance.objects.create(
        name="pushed", device_type="3355", hm_ip="127.95.0.2", version="7.2.103.0", role="secondary",
        password_ciphertext=encrypt("pw"),
    )  # fmt: skip
    tasks.fleet_poll()
    tasks.fleet_poll()
    dispatch.send(dispatch.APPLIANCES_REFRESH, [appliance.pk])

    # When a worker starts on them, its queues listed polls first (the order a worker takes
    # its queues in is the operator's: the refresh must not depend on it)
    queues = [*sharding.queues(16), "celery", "refresh"]
    worker = PollWorker(tmp_path, "fast", shards=16, queues=queues).start()
    try:
        done = re.compile(r"Task hapairs\.tasks\.(\w+)\[[^\]]+\] succeeded")
        finished = wait_for(
            lambda: (names := done.findall(worker.text())).count("poll_shard") == 32 and names,
            timeout=60,
            what="the refresh and the 32 polls",
        )
    finally:
        worker.stop()

    # Then the refresh ran first, before any of the polls queued before it
    assert finished.index("appliances_refresh") == 0, finished
    assert Appliance.objects.filter(Q(pk=appliance.pk) & Q(last_polled_at__isnull=False)).exists()
