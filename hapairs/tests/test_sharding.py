"""The poll's shards: which appliances each holds (the SQL rule, on the test's real
database), and one poller per shard at a time (the real lock: PostgreSQL's advisory lock,
or the flock on SQLite, held from another thread's own connection)."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from hapairs import polling, services, sharding
from hapairs.crypto import encrypt
from hapairs.models import Appliance, HAPair
from hapairs.tests.loopback import fresh_subnet

pytestmark = pytest.mark.django_db


def write_appliances(names_ips: list[tuple[str, str]]) -> list[Appliance]:
    """Unpaired appliances written directly (their services are not what is tested)."""
    rows = [
        Appliance(
            name=name,
            device_type="3355",
            hm_ip=ip,
            version="8.0.110.0",
            role="secondary",
            password_ciphertext=encrypt("pw"),
        )  # fmt: skip
        for name, ip in names_ips
    ]
    return Appliance.objects.bulk_create(rows, batch_size=500)


def bulk_appliances(count: int, *, start: int = 0) -> list[int]:
    """``count`` unpaired appliances; their pks."""
    rows = write_appliances([(f"shard{n}", f"127.99.{n // 250}.{n % 250 + 2}") for n in range(start, start + count)])
    return list(Appliance.objects.filter(name__in=[row.name for row in rows]).values_list("pk", flat=True))


def assignment(shards: int) -> dict[int, int]:
    return dict(Appliance.objects.annotate(shard=sharding.shard_expression(shards)).values_list("pk", "shard"))


# --- assignment -------------------------------------------------------------------------------
@pytest.mark.parametrize("shards", [1, 5, 16])
def test_every_appliance_is_in_exactly_one_shard_and_the_shards_are_even(shards):
    # Given 1,600 appliances
    every = set(bulk_appliances(1600))

    # When each shard's appliances are asked for
    held = [set(sharding.appliances_of(shard, shards).values_list("pk", flat=True)) for shard in range(shards)]

    # Then together they are every appliance, each in one shard only
    assert set().union(*held) == every
    assert sum(len(pks) for pks in held) == len(every)
    # and no shard holds much more or less than its share
    mean = len(every) / shards
    assert all(0.85 * mean <= len(pks) <= 1.15 * mean for pks in held), [len(pks) for pks in held]


def test_an_appliance_keeps_its_shard_as_others_come_and_go():
    # Given appliances and the shard of each
    first = bulk_appliances(300)
    before = assignment(16)

    # When some are deleted and more are added
    Appliance.objects.filter(pk__in=first[::3]).delete()
    bulk_appliances(200, start=1000)

    # Then every one still there is in the shard it was in
    after = assignment(16)
    assert {pk: after[pk] for pk in before if pk in after} == {pk: before[pk] for pk in before if pk in after}
    assert all(0 <= shard < 16 for shard in after.values())


def test_both_nodes_of_a_pair_and_every_primary_of_a_secondary_share_one_shard(make_appliance):
    # Given 1:1 pairs, and a secondary backing two primaries (N:1)
    pairs = []
    for n in range(12):
        primary = make_appliance(name=f"pp{n}", hm_ip=f"127.98.{n}.2", vip=f"127.98.{n}.1", vip_prefixlen=24)
        secondary = make_appliance(name=f"ps{n}", hm_ip=f"127.98.{n}.3")
        pairs.append(services.ha_pair_create(primary=primary, secondary=secondary))
    shared = make_appliance(name="ps-shared", hm_ip="127.97.0.3")
    for n in range(2):
        primary = make_appliance(
            name=f"pn{n}", device_type="3310", hm_ip=f"127.97.0.{n + 4}", vip=f"127.97.0.{n + 1}", vip_prefixlen=24
        )
        pairs.append(services.ha_pair_create(primary=primary, secondary=shared))

    # When the shards are assigned
    shard_of = assignment(16)

    # Then each pair's two nodes are polled in the same shard (so one round sees both sides)
    assert all(shard_of[pair.primary_id] == shard_of[pair.secondary_id] for pair in pairs)
    # and the pairs do not all land in one shard
    assert len({shard_of[pair.secondary_id] for pair in pairs}) > 3
    assert HAPair.objects.filter(secondary=shared).count() == 2


def test_the_workers_consume_the_default_the_refresh_and_every_shard_queue(settings):
    from mseportal.celery import app

    consumed = set(app.amqp.queues.consume_from or app.amqp.queues)
    assert consumed == {"celery", "refresh", *sharding.queues(settings.POLL_SHARDS)}
    assert sharding.queues(3) == ["poll.0", "poll.1", "poll.2"]


# --- one poller per shard ----------------------------------------------------------------------
class HeldElsewhere:
    """Shard ``shard``'s lock held by another thread, on its own database connection (as
    another worker would hold it), until ``release``."""

    def __init__(self, shard: int):
        self.shard, self.got = shard, None
        self._taken, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self):
        try:
            with sharding.lock(self.shard) as held:
                self.got = held
                self._taken.set()
                self._release.wait(30)
        finally:
            connection.close()

    def __enter__(self):
        self._thread.start()
        assert self._taken.wait(10)
        return self

    def __exit__(self, *exc):
        self._release.set()
        self._thread.join(10)


@pytest.fixture
def unreachable_appliances(settings):
    """Appliances at loopback addresses where nothing listens (a poll of them is quick)."""
    settings.AGENT_TIMEOUT = 2.0
    net = fresh_subnet(96, settings.AGENT_PORT)
    write_appliances([(f"gone{n}", f"{net}.{n}") for n in range(1, 9)])
    return Appliance.objects.filter(name__startswith="gone")


def test_a_shard_another_worker_is_polling_is_skipped_and_polled_once_it_is_free(unreachable_appliances, caplog):
    # Given shard 0 of 2 being polled elsewhere
    shard_of = assignment(2)
    in_zero = [pk for pk, shard in shard_of.items() if shard == 0]
    assert in_zero, shard_of
    with HeldElsewhere(0) as other, caplog.at_level(logging.WARNING, logger="hapairs.polling"):
        assert other.got is True

        # When this worker is handed shard 0, and shard 1
        skipped = polling.poll_shard(0, 2)
        polled = polling.poll_shard(1, 2)

        # Then shard 0 is not polled a second time at once (and says so); shard 1 is polled
        assert skipped == {"shard": 0, "shards": 2, "skipped": True}
        assert not Appliance.objects.filter(pk__in=in_zero, last_polled_at__isnull=False).exists()
        assert "poll shard 0/2: skipped" in caplog.text
        assert polled["appliances"] == len(shard_of) - len(in_zero)

    # When the other round is over, the next one polls it
    figures = polling.poll_shard(0, 2)
    assert figures["appliances"] == len(in_zero) and figures["unreachable"] == len(in_zero)
    assert not Appliance.objects.filter(pk__in=in_zero, last_polled_at__isnull=True).exists()


def test_a_round_that_fails_releases_its_shard(unreachable_appliances, monkeypatch):
    # Given a round whose database write fails
    def broken(results):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(polling, "status_record", broken)
    with pytest.raises(RuntimeError):
        polling.poll_shard(0, 1)
    monkeypatch.undo()

    # Then the shard is free: another worker (here a thread) takes it, and so does the next round
    with HeldElsewhere(0) as other:
        assert other.got is True
    assert polling.poll_shard(0, 1)["appliances"] == unreachable_appliances.count()


def test_each_round_keeps_its_figures_for_the_operator(unreachable_appliances):
    # Given no round kept yet
    sharding.rounds_clear()

    # When both shards are polled
    for shard in range(2):
        polling.poll_shard(shard, 2, fired_at=1.0, worker="w1@host")

    # Then each shard's round is kept, saying what it did and who did it
    kept = sharding.rounds()
    assert sorted(kept) == [0, 1]
    assert sum(kept[shard]["appliances"] for shard in kept) == unreachable_appliances.count()
    assert Counter(kept[shard]["worker"] for shard in kept) == {"w1@host": 2}
    for figures in kept.values():
        assert figures["unreachable"] == figures["appliances"]
        assert figures["finished_at"] >= figures["started_at"]
        assert figures["queued_seconds"] == pytest.approx(figures["started_at"] - 1.0, abs=0.01)
        assert figures["seconds_network"] >= 0 and figures["seconds_database"] >= 0


def test_poll_status_prints_each_shards_last_round_and_fails_naming_the_overdue_ones(unreachable_appliances, settings):
    # Given both shards of 2 polled just now
    settings.POLL_SECONDS = 10
    sharding.rounds_clear()
    for shard in range(2):
        polling.poll_shard(shard, 2, worker="w1@host")

    # When the operator asks
    out = io.StringIO()
    call_command("poll_status", "--shards", "2", stdout=out)

    # Then each shard's round is shown, and none is overdue
    lines = out.getvalue().splitlines()
    rows = lines[[n for n, line in enumerate(lines) if line.split()[:1] == ["shard"]][0] + 1 :]
    assert [line.split()[0] for line in rows[:2]] == ["0", "1"] and all("w1@host" in line for line in rows[:2])
    if sharding.owners_supported():  # and which worker consumes which shard (none is live here)
        assert "no poller is live" in out.getvalue()
        try:
            sharding.owners_refresh("w1@host")
            out = io.StringIO()
            call_command("poll_status", "--shards", "2", stdout=out)
            assert "poller w1@host: shards 0, 1" in out.getvalue().splitlines()
        finally:
            sharding.owners_leave("w1@host")
    assert "OVERDUE" not in out.getvalue() and lines[-1] == "Every shard polled within 20 s."

    # When shard 1's appliances were last polled a minute ago (no worker took its queue since)
    in_one = [pk for pk, shard in assignment(2).items() if shard == 1]
    Appliance.objects.filter(pk__in=in_one).update(last_polled_at=timezone.now() - timedelta(seconds=60))

    # Then it is flagged, and the command fails naming it and its queue
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"1 shard\(s\) overdue: 1\. Is a worker consuming poll\.1 "):
        call_command("poll_status", "--shards", "2", stdout=out)
    assert [line.split()[0] for line in out.getvalue().splitlines() if line.endswith("OVERDUE")] == ["1"]


def test_a_round_whose_shard_was_polled_since_it_was_fired_is_skipped(unreachable_appliances, caplog):
    # Given a worker behind schedule: round 2 is fired while round 1's poll of shard 0 still waits
    sharding.rounds_clear()
    fired_2 = time.time()
    first = polling.poll_shard(0, 1, fired_at=fired_2 - 10)  # round 1's message, taken now

    # When round 2's message for the shard is taken next
    with caplog.at_level(logging.WARNING, logger="hapairs.polling"):
        second = polling.poll_shard(0, 1, fired_at=fired_2)

    # Then it is not polled twice in a row: the poll that just ran was after round 2 was fired
    assert first["appliances"] == unreachable_appliances.count() and second["skipped"] is True
    assert "skipped, polled since this round was fired" in caplog.text
    # and the next round polls it again
    assert polling.poll_shard(0, 1, fired_at=time.time())["appliances"] == unreachable_appliances.count()


# ---------------------------------------------------------------- which worker polls which shard
@pytest.mark.parametrize("shards", [1, 7, 16, 64])
def test_the_assignment_gives_every_shard_one_worker_evenly_whatever_order_the_names_come_in(shards):
    for count in range(1, 9):
        names = [f"worker-{n}@host-{n % 3}" for n in range(count)]
        owned = sharding.assignment(names, shards)
        assert owned == sharding.assignment(list(reversed(names)) + names[:1], shards)  # a set of names
        assert sorted(shard for mine in owned.values() for shard in mine) == list(range(shards))
        loads = [len(mine) for mine in owned.values()]
        assert max(loads) - min(loads) <= 1, (count, loads)
    assert sharding.assignment([], shards) == {}


def test_a_worker_joining_takes_its_share_and_moves_few_of_the_others_shards():
    names = [f"w{n}@h" for n in range(4)]
    before = {s: name for name, mine in sharding.assignment(names, 16).items() for s in mine}
    after = {s: name for name, mine in sharding.assignment([*names, "new@h"], 16).items() for s in mine}
    taken = [s for s in range(16) if after[s] == "new@h"]
    assert len(taken) == 3  # 16 / 5, rounded down: the fifth worker's share
    moved_between_the_others = [s for s in range(16) if after[s] != before[s] and after[s] != "new@h"]
    assert len(moved_between_the_others) <= 4, moved_between_the_others


def test_the_live_pollers_are_those_that_refreshed_lately_and_one_leaving_is_gone_at_once(settings, monkeypatch):
    if not sharding.owners_supported():
        pytest.skip("the pollers' set is kept in Redis; the filesystem broker (one host) has none")
    settings.POLL_SHARDS = 8
    monkeypatch.setattr(sharding, "OWNERS_TTL", 1.0)
    a, b = f"a-{time.monotonic_ns()}@h", f"b-{time.monotonic_ns()}@h"
    try:
        assert a in sharding.owners_refresh(a)
        assert {a, b} <= set(sharding.owners_refresh(b))
        assert sorted(map(len, (sharding.owners()[a], sharding.owners()[b]))) == [4, 4]
        sharding.owners_leave(b)  # a warm shutdown
        assert b not in sharding.owners() and sharding.owners()[a] == list(range(8))
        sharding.owners_refresh(b)
        time.sleep(1.3)  # a's entry lapses: it stopped refreshing (killed)
        assert sharding.owners_refresh(b) == [b]
        assert sharding.owners() == {b: list(range(8))}
    finally:
        sharding.owners_leave(a)
        sharding.owners_leave(b)
