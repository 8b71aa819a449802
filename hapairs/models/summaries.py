"""What the pages show that would cost a scan per request: counts, and the list of
secondaries in name order. Kept by the database, in the statement that changes them."""

from __future__ import annotations

from django.db import models

from hapairs.models.fleet import Appliance


class Tally(models.Model):
    """One count, kept by triggers (migration 0018) in the same statement, and so the same
    transaction, as the insert, update or delete that changes it: every write path (the
    services, the bulk event ingest, the admin, a cascade) keeps it without knowing it, and
    a rolled-back write rolls its count back. Pages read one row instead of a COUNT(*) that
    grows with the fleet. Never written from Python; a missing row counts 0.

    TRUNCATE fires no row triggers: a truncated table takes its tallies with it (Django's
    flush truncates every table; ``selectors.tallies_recount`` says what they should be)."""

    APPLIANCES = "appliances"  # every appliance (subject 0)
    SECONDARIES = "secondaries"  # appliances backing at least one primary (subject 0)
    PAIR_EVENTS = "pair_events"  # the events of one pair (subject: the pair's id)

    name = models.CharField(max_length=24)
    subject_id = models.BigIntegerField(default=0)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "subject_id"], name="tally_one_per_subject")]

    def __str__(self) -> str:
        return f"{self.name}[{self.subject_id}] = {self.value}"


class SecondaryListing(models.Model):
    """The appliances that back at least one primary, with their names: the HA overview's
    rows, read from this table's name index (a page reads its 50 rows, not every appliance
    that sorts before them). Kept by the same triggers as the tallies as pairs are created
    and deleted and appliances renamed; never written from Python."""

    appliance = models.OneToOneField(Appliance, on_delete=models.CASCADE, primary_key=True, related_name="+")
    name = models.CharField(max_length=63)

    class Meta:
        indexes = [models.Index(fields=["name"], name="secondarylisting_name")]

    def __str__(self) -> str:
        return self.name
