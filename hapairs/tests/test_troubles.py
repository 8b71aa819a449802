"""The troubleshooting panel (spec §8): each condition the guide names, detected from what
the poller records, with since when, the guide's words and the safe action offered. The
conditions against real agents are test_e2e_troubleshooting; the panel as a browser shows
it is test_troubles_browser."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from django.utils import timezone

from hapairs import services
from hapairs.models import Appliance, HAEvent, HAPair
from hapairs.selectors.troubles import sync_stalled, troubles
from hapairs.services.status import PollResult, status_record

from .test_pages import healthy, info

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair(make_appliance):
    primary = make_appliance(name="p1", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24, role="primary")
    secondary = make_appliance(name="s1", hm_ip="127.10.10.16", role="secondary")
    return services.ha_pair_create(primary=primary, secondary=secondary)


def syncing(pair, percent: int, *, replication="setting_up", now=None) -> None:
    """A poll round where the primary copies its database to the secondary, at ``percent``."""

    def side(peer_ip, state, in_charge):
        base = info(peer_ip, state, in_charge=in_charge, sync=percent, status="synchronising")
        peer = dataclasses.replace(base.peers[0], replication=replication)
        return dataclasses.replace(base, peers=[peer])

    status_record(
        [
            PollResult(pair.primary_id, side("127.10.10.16", "PRIMARY_ACTIVE", True)),
            PollResult(pair.secondary_id, side("127.10.10.15", "SECONDARY_ACTIVE", False)),
        ]
    )


def test_a_synchronisation_that_makes_no_progress_past_its_best_is_stuck_after_the_configured_time(pair, settings):
    settings.SYNC_STALL_SECONDS = 60
    syncing(pair, 10)
    syncing(pair, 40)
    reached = HAPair.objects.get().sync_best_at
    syncing(pair, 0, replication="down")  # the copy failed and starts again: no progress
    syncing(pair, 40)
    row = HAPair.objects.get()
    assert (row.sync_best, row.sync_best_at) == (40, reached)
    assert sync_stalled(row) is None  # not for a minute yet
    later = reached + timedelta(seconds=61)
    assert sync_stalled(row, now=later) == (40, reached)
    (trouble,) = troubles(row, now=later)
    assert trouble.key == "sync_stuck" and trouble.title == "Synchronisation stuck at 40 %"
    assert "no progress past 40 % for 61 s" in trouble.detected
    assert trouble.guide.startswith("Stop the secondary, drop its per-primary advanced configuration")
    # progress clears it; being in sync forgets it
    syncing(pair, 41)
    assert sync_stalled(HAPair.objects.get()) is None  # progress: the clock starts again
    healthy(pair)
    row = HAPair.objects.get()
    assert (row.sync_best, row.sync_best_at) == (0, None) and troubles(row) == []


def test_a_split_brain_says_since_when_and_offers_a_refresh(pair):
    status_record(
        [
            PollResult(pair.primary_id, info("127.10.10.16", "PRIMARY_ACTIVE", in_charge=True, generation=1)),
            PollResult(pair.secondary_id, info("127.10.10.15", "FAILOVER_ACTIVE", in_charge=True, generation=2)),
        ]
    )
    (trouble,) = troubles(HAPair.objects.select_related("primary", "secondary").get())
    assert trouble.key == "split_brain" and trouble.since is not None
    assert (
        "Both p1 and s1 report being in charge of the virtual IP 127.10.10.14 (generations 1 and 2)" in trouble.detected
    )
    assert trouble.guide.startswith("Take the VIP down on the secondary") and trouble.action == "Refresh Status"


def test_an_unreachable_secondary_offers_removal_from_the_primary_only(pair):
    healthy(pair)
    seen = timezone.now() - timedelta(minutes=7)
    Appliance.objects.filter(pk=pair.secondary_id).update(last_seen_at=seen)
    status_record([PollResult(pair.primary_id, info("127.10.10.16", "PRIMARY_ACTIVE", in_charge=True)),
                   PollResult(pair.secondary_id, None, error="timed out")])  # fmt: skip
    (trouble,) = troubles(HAPair.objects.select_related("primary", "secondary").get())
    assert trouble.key == "secondary_unreachable" and trouble.since == seen
    assert "s1 (127.10.10.16) does not answer the portal; last answer 7 min ago." == trouble.detected
    assert trouble.action == "Remove the pairing from the primary only…" and trouble.action_url.endswith("#one-side")
    assert "stays PRIMARY_ACTIVE with its VIP" in trouble.does


def test_an_unreachable_primary_with_the_secondary_in_charge_offers_no_removal(pair):
    HAPair.objects.filter(pk=pair.pk).update(
        primary_reachable=False, secondary_reachable=True, secondary_in_charge=True, secondary_state="FAILOVER_ACTIVE"
    )
    (trouble,) = troubles(HAPair.objects.select_related("primary", "secondary").get())
    assert trouble.key == "primary_unreachable" and "s1 is in charge of the VIP." in trouble.detected
    assert trouble.action == "" and trouble.guide.startswith("Check p1's network settings with getserverinfo")


def test_one_heartbeat_path_down_is_a_trouble_not_a_failover(pair):
    healthy(pair)
    HAPair.objects.filter(pk=pair.pk).update(secondary_paths={"hm": "up", "direct": "down"})
    services.event_record(code="heartbeat_path_down", generated_by="Secondary", pair=pair)
    (trouble,) = troubles(HAPair.objects.select_related("primary", "secondary").get())
    assert trouble.key == "path_down" and trouble.title == "Heartbeats down on the direct connect"
    assert "the other path still carries them, so there is no failover" in trouble.detected
    # both down is "heartbeats lost", not this
    HAPair.objects.filter(pk=pair.pk).update(secondary_paths={"hm": "down", "direct": "down"})
    assert troubles(HAPair.objects.select_related("primary", "secondary").get()) == []


def test_a_reset_is_refused_unless_the_synchronisation_is_stuck_and_emptying_needs_its_own_confirmation(
    pair, operator_user, settings, client, django_capture_on_commit_callbacks
):
    settings.SYNC_STALL_SECONDS = 60
    syncing(pair, 40)
    pair = HAPair.objects.select_related("primary", "secondary").get()
    with pytest.raises(services.ServiceError, match="is not stuck"):
        services.ha_reset_sync(pair=pair, by=operator_user, reason="stuck")
    HAPair.objects.filter(pk=pair.pk).update(sync_best_at=timezone.now() - timedelta(minutes=5))
    pair.refresh_from_db()
    with pytest.raises(services.ServiceError, match="Say why"):
        services.ha_reset_sync(pair=pair, by=operator_user, reason="")
    with pytest.raises(services.ServiceError, match="nothing p1 holds is lost"):
        services.ha_reset_sync(pair=pair, by=operator_user, reason="stuck", empty_data=True)
    client.force_login(operator_user)
    page = client.get("/mse/p1/ha/reset-sync/").content.decode()
    assert "Synchronisation stuck at 40 %" in page, page[page.find("<main") :][:1500]
    assert "Empty s1's copy first" in page
    with django_capture_on_commit_callbacks():
        response = client.post(
            "/mse/p1/ha/reset-sync/", {"reason": "stuck", "empty_data": "yes", "confirm_empty": "yes"}
        )
    from hapairs.models import Job

    job = Job.objects.get()
    assert (
        response.status_code == 302 and job.kind == "reset_sync" and job.params == {"empty_data": True, "stuck_at": 40}
    )


def test_a_node_whose_clock_is_off_is_a_trouble_until_it_is_back_and_jitter_writes_nothing(pair, settings):
    settings.CLOCK_SKEW_WARN_SECONDS, settings.CLOCK_OFFSET_STEP_MS = 2, 250

    def poll(primary_offset, secondary_offset):
        status_record([
            PollResult(pair.primary_id, info("127.10.10.16", "PRIMARY_ACTIVE", in_charge=True),
                       clock_offset=primary_offset),
            PollResult(pair.secondary_id, info("127.10.10.15", "SECONDARY_ACTIVE", in_charge=False),
                       clock_offset=secondary_offset),
        ])  # fmt: skip

    poll(0.004, 5.25)
    row = HAPair.objects.select_related("primary", "secondary").get()
    assert (row.primary.clock_offset_ms, row.secondary.clock_offset_ms) == (4, 5250)
    assert row.secondary.clock_offset_text == "5.2 s ahead of the portal's clock"
    (trouble,) = [t for t in troubles(row) if t.key == "clock_skew"]
    assert trouble.title == "s1's clock is off" and "5.2 s ahead of the portal's clock" in trouble.detected
    assert "same NTP servers" in trouble.guide and trouble.action == "Refresh Status"
    assert "apart" not in trouble.detected

    # two nodes each within the portal's window but further than it from each other refuse each other
    poll(-200.0, 200.0)
    row = HAPair.objects.select_related("primary", "secondary").get()
    clocks = [t for t in troubles(row) if t.key == "clock_skew"]
    assert len(clocks) == 2 and all("p1 and s1 are 400 s apart: each refuses the other's" in t.detected for t in clocks)
    poll(0.004, 5.25)

    # a round's jitter (under the step) is not written; an older agent that does not say keeps the last figure
    poll(0.1, 5.4)
    assert list(Appliance.objects.order_by("pk").values_list("clock_offset_ms", flat=True)) == [4, 5250]
    poll(None, None)
    assert list(Appliance.objects.order_by("pk").values_list("clock_offset_ms", flat=True)) == [4, 5250]

    # set right (NTP): the offset is written again and the trouble clears; behind the portal reads so
    poll(-3.0, 0.3)
    row = HAPair.objects.select_related("primary", "secondary").get()
    assert (row.primary.clock_offset_ms, row.secondary.clock_offset_ms) == (-3000, 300)
    assert [t.title for t in troubles(row) if t.key == "clock_skew"] == ["p1's clock is off"]
    assert "3.0 s behind the portal's clock" in troubles(row)[-1].detected
    poll(0.0, 0.3)
    row = HAPair.objects.select_related("primary", "secondary").get()
    assert not [t for t in troubles(row) if t.key == "clock_skew"]

    # each crossing of the limit was an event, with its rule and figures; jitter made none
    crossings = list(
        HAEvent.objects.filter(code__in=["clock_off", "clock_back"]).order_by("pk")
        .values_list("appliance__name", "code", "severity", "why__inputs__offset_ms")
    )  # fmt: skip
    assert crossings == [
        ("s1", "clock_off", "warning", 5250),
        ("p1", "clock_off", "warning", -200000),  # s1, 200 s ahead, was off already
        ("p1", "clock_back", "info", 4),
        ("p1", "clock_off", "warning", -3000),
        ("s1", "clock_back", "info", 300),
        ("p1", "clock_back", "info", 0),
    ], crossings
    off = HAEvent.objects.filter(code="clock_off").order_by("pk").first()
    assert off.description == "Clock of s1 is 5.2 s ahead of the portal's clock" and off.pair_id == pair.pk
    assert "same NTP servers" in off.remarks and off.why["rule"] == "clock.offset"
