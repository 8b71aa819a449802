"""Concurrent operators through the API, on the suite's database (PostgreSQL in CI), over
the live server's threads: each request has its own connection and transaction.

- 50 requests pairing 50 MSE-3350 primaries with one MSE-3355 at once: exactly its N:1
  allowance (two) succeed; every other one is a 409 that says why; nothing is half-written
  (a pair without its job, or its "recorded" event, or the other way round).
- 20 switchover requests on one pair at once: one job; 19 clear 409s.

The counts are kept by row locks with the database's constraints behind them (a secondary's
slots; one active job per pair), each constraint's error turned into a 409. Seen while
writing this: without the appliance locks in ``ha_pair_create`` and its IntegrityError
turned into a conflict, the losers die on the slot constraint with a 500, and this fails;
``job_enqueue`` turns the one-active-job constraint into a 409 the same way."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, transaction
from django.utils import timezone

from hapairs import rules, services
from hapairs.choices import MAX_PRIMARIES_PER_SECONDARY
from hapairs.models import Appliance, HAEvent, HAPair, HeartbeatSample, Job
from hapairs.services._common import deadlock_retried
from hapairs.services.operations import ha_pair_delete_record

from .test_api import token_for
from .test_services import pg_only

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def post_all(url: str, token: str, requests: list[tuple[str, dict]]) -> list[tuple[int, dict]]:
    """Every (path, body) POSTed at once: all threads wait at a barrier, then send."""
    barrier = threading.Barrier(len(requests))

    def one(path_body):
        path, body = path_body
        request = urllib.request.Request(
            f"{url}/api/v1{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        barrier.wait(timeout=30)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(one, requests))


def test_fifty_pairings_of_one_3355_at_once_give_exactly_its_allowance(live_server, operator_user, make_appliance):
    assert rules.n_to_1_violation("3355", ["3350", "3350"]) is None and MAX_PRIMARIES_PER_SECONDARY == 2
    allowance = 2
    make_appliance(name="s3355", device_type="3355", hm_ip="127.50.0.2", role="secondary")
    for i in range(50):
        make_appliance(
            name=f"p{i}", device_type="3350", hm_ip=f"127.50.0.{i + 3}", vip=f"127.50.0.{i + 100}", vip_prefixlen=24
        )
    body = {"secondary_name": "s3355", "secondary_ip": "127.50.0.2", "secondary_password": "s3cret-pass",
            "reason": "capacity test"}  # fmt: skip
    answers = post_all(live_server.url, token_for(operator_user), [(f"/appliances/p{i}/ha", body) for i in range(50)])
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] * allowance + [409] * (50 - allowance), (statuses, answers[:3])
    for status, answer in answers:
        if status == 409:
            assert "already backs" in answer["detail"] or "changed while this pairing" in answer["detail"], answer
    # nothing half-written: the pairs, their jobs and their events agree
    pairs = list(HAPair.objects.select_related("primary").order_by("slot"))
    assert [p.slot for p in pairs] == [1, 2]
    jobs = Job.objects.filter(kind="configure_ha")
    assert sorted(j.pair_id for j in jobs) == sorted(p.pk for p in pairs)
    assert HAEvent.objects.filter(code="pair_recorded").count() == allowance
    accepted = {answer["pair"] for status, answer in answers if status == 202}
    assert accepted == {str(p) for p in pairs}


def test_twenty_switchovers_of_one_pair_at_once_queue_one_job(live_server, operator_user, make_appliance):
    primary = make_appliance(name="sw-p", hm_ip="127.51.0.2", vip="127.51.0.1", vip_prefixlen=24, role="primary")
    secondary = make_appliance(name="sw-s", hm_ip="127.51.0.3", role="secondary")
    pair = services.ha_pair_create(primary=primary, secondary=secondary)
    # as the poller leaves a healthy pair: both reachable and active, in sync, one generation
    HAPair.objects.filter(pk=pair.pk).update(
        primary_reachable=True, secondary_reachable=True, primary_state="PRIMARY_ACTIVE",
        secondary_state="SECONDARY_ACTIVE", heartbeat="up", replication="up", sync_percent=100,
        generation=1, primary_generation=1, secondary_generation=1,
    )  # fmt: skip
    pair.refresh_from_db()
    from hapairs import selectors

    assert selectors.preflight(pair, "switchover").allowed, selectors.preflight(pair, "switchover").refusal
    request = ("/appliances/sw-p/ha/switchover", {"reason": "concurrency test"})
    answers = post_all(live_server.url, token_for(operator_user), [request] * 20)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] + [409] * 19, statuses
    job = Job.objects.get(kind="switchover")
    for status, answer in answers:
        if status == 409:
            assert f"#{job.pk}" in answer["detail"] or "still running" in answer["detail"], answer
    assert Job.objects.filter(pair=pair).count() == 1


def hold_until_queued(seen: dict) -> None:
    """Say the locks are held, then wait (holding them) until another backend is queued
    behind this one (``seen["waiter"]``: its pids), at most 20 s."""
    seen["held"].set()
    with connection.cursor() as cursor:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not seen.get("waiter"):
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))")
            seen["waiter"] = [row[0] for row in cursor.fetchall()]
            time.sleep(0.02)


def poll_round_locks(primary_ids: list[int], pair_id: int, seen: dict) -> None:
    """A poll round's locks, in ``status_record``'s order: the appliances (by pk), then the
    pair; between the two it waits until another backend is queued behind it, so the race
    that deadlocked in CI (a writer holding the pair and wanting an appliance) is not left
    to chance."""
    try:
        with transaction.atomic():
            list(Appliance.objects.select_for_update().filter(pk__in=primary_ids).order_by("pk"))
            hold_until_queued(seen)
            list(HAPair.objects.select_for_update(of=("self",)).filter(pk=pair_id))
    except Exception as exc:  # noqa: BLE001 (reported to the test)
        seen["error"] = exc
    finally:
        connection.close()


WRITES = {
    "maintenance": lambda pair, by: services.ha_maintenance_set(pair=pair, on=True, by=by, reason="PSU swap"),
    "update": lambda pair, by: services.ha_update(
        pair=pair, failover_type="automatic", failback_type="manual", failover_wait=30, by=by, reason="tuning"
    ),
}


@pg_only
@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_pair_write_during_a_poll_round_waits_for_it_and_never_deadlocks(write, operator_user, make_appliance):
    """CI saw a deadlock (and a 500): maintenance locked the pair, then its appliances, while
    the poller held an appliance and wanted the pair. Every writer now locks in the poller's
    order, so it queues behind the round and goes through when the round commits."""
    primary = make_appliance(name="dl-p", hm_ip="127.52.0.2", vip="127.52.0.1", vip_prefixlen=24, role="primary")
    secondary = make_appliance(name="dl-s", hm_ip="127.52.0.3", role="secondary")
    pair = services.ha_pair_create(primary=primary, secondary=secondary)
    seen: dict = {"held": threading.Event()}
    poll = threading.Thread(target=poll_round_locks, args=([primary.pk, secondary.pk], pair.pk, seen))
    poll.start()
    try:
        assert seen["held"].wait(10)
        WRITES[write](HAPair.objects.get(pk=pair.pk), operator_user)
    finally:
        poll.join(30)
    assert "error" not in seen, seen["error"]
    assert seen.get("waiter"), "the write never queued behind the poll round: the test raced past it"
    kind = {"maintenance": "set_maintenance", "update": "update_ha"}[write]
    assert Job.objects.filter(pair=pair, kind=kind).count() == 1


def poll_round_sampling(primary_ids: list[int], pair_id: int, seen: dict) -> None:
    """A poll round that holds the pair's rows and writes a heartbeat sample and an event
    for it, then commits only once another backend is queued behind it."""
    try:
        with transaction.atomic():
            list(Appliance.objects.select_for_update().filter(pk__in=primary_ids).order_by("pk"))
            pair = HAPair.objects.select_for_update(of=("self",)).get(pk=pair_id)
            HeartbeatSample.objects.create(pair=pair, at=timezone.now(), mean_ms=0.4)
            HAEvent.objects.create(
                code="heartbeat_path", pair=pair, timestamp=timezone.now(), generated_by="mseportal", description="up"
            )
            hold_until_queued(seen)
    except Exception as exc:  # noqa: BLE001 (reported to the test)
        seen["error"] = exc
    finally:
        connection.close()


@pg_only
def test_forgetting_a_pair_while_a_poll_round_samples_it_waits_for_the_round_and_takes_its_rows_along(
    make_appliance,
):
    """CI saw "Remove the pairing from the primary only" fail in its last step: the poll
    round wrote a heartbeat sample for the pair while the pair's row was being deleted, and
    the delete's deferred foreign-key check refused the commit. The removal now locks the
    rows in the poller's order first, so it waits for the round and deletes what it wrote."""
    primary = make_appliance(name="rm-p", hm_ip="127.53.0.2", vip="127.53.0.1", vip_prefixlen=24, role="primary")
    secondary = make_appliance(name="rm-s", hm_ip="127.53.0.3", role="secondary")
    pair = services.ha_pair_create(primary=primary, secondary=secondary)
    seen: dict = {"held": threading.Event()}
    poll = threading.Thread(target=poll_round_sampling, args=([primary.pk, secondary.pk], pair.pk, seen))
    poll.start()
    try:
        assert seen["held"].wait(10), seen.get("error")
        ha_pair_delete_record(pair=HAPair.objects.select_related("primary", "secondary").get(pk=pair.pk))
    finally:
        poll.join(30)
    assert "error" not in seen, seen["error"]
    assert seen.get("waiter"), "the removal never queued behind the poll round: the test raced past it"
    assert not HAPair.objects.exists() and not HeartbeatSample.objects.exists()
    event = HAEvent.objects.get(code="heartbeat_path")
    assert event.pair_id is None  # the round's event is kept, without its pair
    assert HAEvent.objects.filter(code="secondary_deleted", appliance=primary).count() == 1


@pg_only
def test_a_deadlocks_victim_is_done_again_and_both_writes_land(make_appliance):
    """Two writers lock two rows in opposite orders (as a foreign-key check and a pair's
    writer can): PostgreSQL aborts one; deadlock_retried runs the victim's transaction again
    once the other committed, and both writes are there. Without it the victim raised."""
    one = make_appliance(name="dl-one", hm_ip="127.54.0.2")
    two = make_appliance(name="dl-two", hm_ip="127.54.0.3")
    barrier, attempts, errors = threading.Barrier(2), {"a": 0, "b": 0}, []

    def writer(tag, first, second):
        def once():
            with transaction.atomic():
                list(Appliance.objects.select_for_update().filter(pk=first.pk))
                attempts[tag] += 1
                if attempts[tag] == 1:
                    barrier.wait(10)  # both hold their first row: the second lock closes the cycle
                list(Appliance.objects.select_for_update().filter(pk=second.pk))
                Appliance.objects.filter(pk=first.pk).update(contact_name=f"by {tag}")

        try:
            deadlock_retried(once, what=f"writer {tag}")
        except Exception as exc:  # noqa: BLE001 (reported to the test)
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=writer, args=("a", one, two)),
        threading.Thread(target=writer, args=("b", two, one)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert sorted(attempts.values()) == [1, 2], attempts  # one victim, done again once
    assert dict(Appliance.objects.filter(pk__in=[one.pk, two.pk]).values_list("name", "contact_name")) == {
        "dl-one": "by a",
        "dl-two": "by b",
    }
