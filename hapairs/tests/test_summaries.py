"""The summaries the database keeps (hapairs.models.summaries, migration 0018's triggers):
after every kind of write — through the services, in bulk, by queryset update and delete,
by a cascade, rolled back, and by two transactions at once — the tallies say what a
COUNT(*) says and the listing of secondaries is the appliances that back a primary."""

from __future__ import annotations

import importlib
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from hapairs import selectors, services
from hapairs.models import Appliance, HAEvent, HAPair, SecondaryListing, Tally
from hapairs.services.operations import ha_pair_delete_record

MIGRATION = importlib.import_module("hapairs.migrations.0018_pages_seek_and_summaries")


def kept() -> dict[tuple[str, int], int]:
    """What the tallies say (a missing row counts 0; a pair's tally at 0 is no count)."""
    found = {(Tally.APPLIANCES, 0): 0, (Tally.SECONDARIES, 0): 0}
    for name, subject, value in Tally.objects.values_list("name", "subject_id", "value"):
        if value or name != Tally.PAIR_EVENTS:
            found[(name, subject)] = value
    return found


def listed() -> list[tuple[int, str]]:
    return list(SecondaryListing.objects.order_by("name").values_list("appliance_id", "name"))


def backing() -> list[tuple[int, str]]:
    """The appliances that back a primary, counted the slow way."""
    return list(
        Appliance.objects.filter(ha_pairs_as_secondary__isnull=False)
        .distinct()
        .order_by("name")
        .values_list("pk", "name")
    )


def assert_exact() -> None:
    assert kept() == selectors.tallies_recount()
    assert listed() == backing()


def event(pair: HAPair | None, appliance: Appliance | None = None, seq: int | None = None, **extra) -> HAEvent:
    return HAEvent(
        pair=pair,
        appliance=appliance,
        seq=seq,
        code="heartbeats_setup",
        description="Heartbeats have been setup successfully",
        generated_by="test",
        timestamp=timezone.now() - timedelta(seconds=seq or 0),
        **extra,
    )


def vip(n: int, *, primary: bool) -> dict:
    """A primary's VIP, on an MSE-3350 (a 3355 secondary backs two of them)."""
    return {"vip": f"127.75.9.{n}", "vip_prefixlen": 16, "device_type": "3350"} if primary else {}


@pytest.fixture
def fleet(make_appliance):
    """p1 and p2 backed by s (its two slots), p3 backed by t; u unpaired (a primary's VIP)."""
    made = {
        name: make_appliance(name=name, hm_ip=f"127.75.0.{n}", **vip(n, primary=name[0] in "pu"))
        for n, name in enumerate("p1 p2 p3 s t u".split(), 2)
    }
    for primary, secondary in (("p1", "s"), ("p2", "s"), ("p3", "t")):
        services.ha_pair_create(primary=made[primary], secondary=made[secondary])
    return made


@pytest.mark.django_db
def test_the_tallies_and_the_listing_stay_exact_through_every_kind_of_write(fleet, make_appliance):
    # Given a fleet made through the services: 6 appliances, 3 pairs, 2 secondaries
    pair1, pair2, pair3 = (HAPair.objects.get(primary__name=name) for name in ("p1", "p2", "p3"))
    assert kept()[(Tally.APPLIANCES, 0)] == 6 and kept()[(Tally.SECONDARIES, 0)] == 2
    assert [name for _pk, name in listed()] == ["s", "t"]
    assert_exact()

    # When appliances are inserted in bulk, bypassing the services
    Appliance.objects.bulk_create(
        [Appliance(name=f"bulk{n}", device_type="3355", hm_ip=f"127.75.1.{n}", version="8.0.1.0") for n in range(3)]
    )
    # Then they are counted
    assert kept()[(Tally.APPLIANCES, 0)] == 9
    assert_exact()

    # When events arrive: one by one (a portal event), and in bulk as the ingest writes them,
    # the same (appliance, seq) twice ignored as a conflict
    had = [selectors.tally(Tally.PAIR_EVENTS, p.pk) for p in (pair1, pair2, pair3)]  # pairing recorded some
    services.event_record(code="maintenance_on", generated_by="test", pair=pair1)
    HAEvent.objects.bulk_create([event(pair1, fleet["p1"], seq) for seq in range(1, 8)], ignore_conflicts=True)
    HAEvent.objects.bulk_create([event(pair1, fleet["p1"], seq) for seq in (6, 7, 8)], ignore_conflicts=True)
    HAEvent.objects.bulk_create([event(pair3, fleet["p3"], seq) for seq in range(1, 4)] + [event(None, fleet["u"])])
    # Then only the events stored count, each on its pair
    assert [selectors.tally(Tally.PAIR_EVENTS, p.pk) for p in (pair1, pair2, pair3)] == [had[0] + 9, had[1], had[2] + 3]
    assert_exact()

    # When events move between pairs, lose their pair, and other fields change
    HAEvent.objects.filter(pair=pair1, seq__in=(1, 2)).update(pair=pair3)
    HAEvent.objects.filter(pair=pair1, seq=3).update(pair=None)
    HAEvent.objects.filter(pair=pair3).update(remarks="touched")
    moved = HAEvent.objects.get(pair=pair1, seq=4)
    moved.pair = pair2
    moved.save()
    # Then each pair counts what it holds now
    assert [selectors.tally(Tally.PAIR_EVENTS, p.pk) for p in (pair1, pair2, pair3)] == [
        had[0] + 5,
        had[1] + 1,
        had[2] + 5,
    ]
    assert_exact()

    # When events are deleted, one and many
    HAEvent.objects.get(pair=pair2, seq=4).delete()
    HAEvent.objects.filter(pair=pair3, seq__lte=2).delete()
    assert_exact()

    # When a secondary is renamed, the listing follows
    Appliance.objects.filter(pk=fleet["s"].pk).update(name="s-renamed")
    assert [name for _pk, name in listed()] == ["s-renamed", "t"]
    assert_exact()

    # When a pair is forgotten (the end of delete-secondary: its events lose the pair), then
    # its secondary's other pair, then the secondary's last
    ha_pair_delete_record(pair=HAPair.objects.get(pk=pair1.pk))
    assert kept()[(Tally.SECONDARIES, 0)] == 2
    assert not Tally.objects.filter(name=Tally.PAIR_EVENTS, subject_id=pair1.pk).exists()
    assert_exact()
    ha_pair_delete_record(pair=HAPair.objects.get(pk=pair2.pk))
    assert [name for _pk, name in listed()] == ["t"] and kept()[(Tally.SECONDARIES, 0)] == 1
    assert_exact()

    # When a pair's secondary is changed behind the portal's back (it never does this itself)
    HAPair.objects.filter(pk=pair3.pk).update(secondary=fleet["u"])
    assert [name for _pk, name in listed()] == ["u"]
    assert_exact()

    # When appliances are deleted, with their events (a cascade)
    Appliance.objects.filter(name__startswith="bulk").delete()
    Appliance.objects.filter(pk=fleet["s"].pk).delete()
    assert kept()[(Tally.APPLIANCES, 0)] == 5
    assert_exact()


@pytest.mark.django_db
def test_a_rolled_back_write_takes_its_counts_back(fleet):
    # Given the fleet, counted
    before, listing = kept(), listed()

    # When a pairing, events and an appliance are written, then rolled back
    with pytest.raises(RuntimeError), transaction.atomic():
        pair = HAPair.objects.get(primary__name="p3")
        HAEvent.objects.bulk_create([event(pair, seq=None) for _ in range(5)])
        services.ha_pair_create(primary=fleet["u"], secondary=fleet["t"])
        Appliance.objects.create(name="gone", device_type="3355", hm_ip="127.75.2.2", version="8.0.1.0")
        assert kept() != before  # counted inside the transaction
        raise RuntimeError("roll back")

    # Then nothing was counted
    assert kept() == before and listed() == listing
    assert_exact()


@pytest.mark.django_db
def test_every_summary_trigger_is_installed():
    # Given the schema after every migration (a migration that remakes a table on SQLite drops its triggers)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'hapairs_summary_%%'")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'hapairs_summary_%'")
        installed = {name for (name,) in cursor.fetchall()}

    # Then each of migration 0018's triggers is there
    assert installed == set(MIGRATION.TRIGGERS)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_secondary_unpaired_while_paired_again_elsewhere_stays_listed(make_appliance):
    # Given s backing p1 (one pair), and p2 unpaired
    if connection.vendor != "postgresql":
        pytest.skip("two writers at once: PostgreSQL")
    p1, p2, s = (
        make_appliance(name=name, hm_ip=f"127.75.3.{n}", **vip(n, primary=name != "s"))
        for n, name in enumerate(("p1", "p2", "s"), 2)
    )
    services.ha_pair_create(primary=p1, secondary=s)
    second = HAPair(primary=p2, secondary=s)
    second.assign_slot(2)
    inserted, failures = threading.Event(), []

    def pair_again() -> None:  # inserts s's second pair and holds its transaction open a moment
        try:
            with transaction.atomic():
                HAPair.objects.bulk_create([second])  # no service: no lock but the trigger's
                inserted.set()
                threading.Event().wait(0.5)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
            inserted.set()
        finally:
            connections.close_all()

    # When the first pair is deleted while the second pairing is not committed yet
    writer = threading.Thread(target=pair_again)
    writer.start()
    assert inserted.wait(10)
    HAPair.objects.filter(primary=p1).delete()  # its trigger waits for the pairing to commit
    writer.join(10)

    # Then s, which backs p2 now, is still listed and counted once
    assert not failures
    assert [name for _pk, name in listed()] == ["s"] and kept()[(Tally.SECONDARIES, 0)] == 1
    assert_exact()
