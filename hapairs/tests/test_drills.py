"""Failover drills without agents: the scorecard's arithmetic on a probe's writes, the
refusals (pre-flight, reason, pins), the schedule, the API. The drill itself, against real
agents and a real worker, is test_e2e_drills."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from hapairs import drills, services
from hapairs.drills import Attempt, Probe
from hapairs.models import Appliance, Drill, DrillSchedule, HAEvent, HAPair, Job

from .test_api import token_for
from .test_selectors import FAILED_OVER, HEALTHY

FP_P = ":".join(["AA"] * 32)
FP_S = ":".join(["BB"] * 32)
T0 = 1_800_000_000.0  # the switchover's request, on the wall clock


def probe_with(attempts, read_back=None):
    probe = Probe(vip="127.88.0.1", port=8001, password="pw", pins={FP_P: "p", FP_S: "s"}, prefix=7)
    probe.attempts, probe.read_back = attempts, read_back
    return probe


def writes(start, stop, *, by, every=0.05, ok=True, first=0):
    """Writes from ``start`` to ``stop`` seconds after T0, one per ``every``, each 10 ms long."""
    out, t, i = [], start, first
    while t < stop - 1e-9:
        out.append(Attempt(t0=T0 + t, t1=T0 + t + 0.01, mac=f"m{i}", ok=ok, served_by=by if ok else None))
        t, i = t + every, i + 1
    return out


def test_the_scorecard_measures_the_outage_the_first_write_after_it_and_the_writes_lost():
    # Given writes served by p, 1.5 s of failures at the switchover, then served by s; the
    # failback at +10 s with 0.5 s of failures; one acknowledged write missing at read-back
    attempts = (
        writes(-1, 0.2, by="p")
        + writes(0.2, 1.7, by=None, ok=False, first=100)
        + writes(1.7, 10, by="s", first=200)
        + writes(10, 10.5, by=None, ok=False, first=400)
        + writes(10.5, 12, by="p", first=500)
    )
    acked = {a.mac for a in attempts if a.ok}
    events = {code: dt.datetime.fromtimestamp(T0 + at, tz=dt.UTC) for code, at in
              (("failover_shutting_down_primary", 0.04), ("failover_starting_instance", 0.9), ("vip_taken", 1.6))}  # fmt: skip

    card = drills.scorecard(
        probe=probe_with(attempts, read_back=acked - {"m205"}),
        requested_at=T0,
        secondary="s",
        events=events,
        failback_at=T0 + 10,
        caught_up_at=T0 + 13.25,
    )

    assert (card["detection_s"], card["decision_s"], card["vip_moved_s"]) == (0.04, 0.9, 1.6)
    assert card["first_success_s"] == 1.71  # s's first acknowledged write
    assert card["outage_s"] == 1.55  # the last write p acknowledged (+0.16) to s's first (+1.71)
    assert card["failback_outage_s"] == 0.55
    assert card["writes_attempted"] == len(attempts) and card["writes_acknowledged"] == len(acked)
    assert card["writes_lost"] == 1
    assert card["catch_up_s"] == 3.25
    assert card["served_by"] == ["p", "s"]
    rows = dict(drills.scorecard_rows(card))
    assert rows["Client-visible outage (switchover)"] == "1.55 s" and rows["Acknowledged writes lost"] == "1"


def test_without_its_probe_or_its_read_back_a_scorecard_says_so_and_invents_nothing():
    card = drills.scorecard(probe=None, requested_at=T0, secondary="s", events={}, failback_at=None, caught_up_at=None)
    assert card["probe"].startswith("none") and card["writes_lost"] is None and card["outage_s"] is None
    assert dict(drills.scorecard_rows(card))["Acknowledged writes lost"] == "—"
    unread = probe_with(writes(0, 1, by="s"), read_back=None)
    unread.read_back_error = "TimeoutError: "
    card = drills.scorecard(
        probe=unread, requested_at=T0, secondary="s", events={}, failback_at=None, caught_up_at=None
    )
    assert card["writes_lost"] is None and card["read_back_error"] == "TimeoutError: "


# --- starting one ----------------------------------------------------------------------------
@pytest.fixture
def pair(make_appliance):
    primary = make_appliance(name="dp", hm_ip="127.88.0.2", vip="127.88.0.1", vip_prefixlen=24, tls_fingerprint=FP_P)
    secondary = make_appliance(name="ds", hm_ip="127.88.0.3", tls_fingerprint=FP_S)
    made = services.ha_pair_create(primary=primary, secondary=secondary)
    HAPair.objects.filter(pk=made.pk).update(status_updated_at=timezone.now(), **HEALTHY)
    return HAPair.objects.select_related("primary", "secondary").get(pk=made.pk)


def test_a_drill_is_one_job_with_its_reason(pair, operator_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        drill = services.drill_start(pair=pair, by=operator_user, reason="Q4 drill")
    assert (drill.job.kind, drill.job.reason, drill.job.params) == ("drill", "Q4 drill", {"generation": 1})
    assert drill.pair_name == "dp → ds" and drill.scorecard is None


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"maintenance": True, "maintenance_reason": "disk"}, "The pair is in maintenance (disk)"),
        ({"secondary_reachable": False}, "ds is not answering the portal"),
        (FAILED_OVER, "A switchover needs dp PRIMARY_ACTIVE and ds SECONDARY_ACTIVE"),
        ({"sync_percent": 40}, "The secondary is not in sync yet (40% synchronised)"),
    ],
    ids=["maintenance", "unreachable", "failed-over", "not-in-sync"],
)
def test_a_drill_the_preflight_refuses_does_not_start_and_says_why(pair, operator_user, change, phrase):
    HAPair.objects.filter(pk=pair.pk).update(**change)
    pair.refresh_from_db()
    with pytest.raises(services.ServiceError) as refused:
        services.drill_start(pair=pair, by=operator_user, reason="Q4 drill")
    assert refused.value.message.startswith("The drill cannot start: ") and phrase in refused.value.message
    assert not Job.objects.exists() and not Drill.objects.exists()


def test_a_drill_needs_a_reason_and_both_certificates_pinned(pair, operator_user):
    with pytest.raises(services.ServiceError, match="Say why"):
        services.drill_start(pair=pair, by=operator_user, reason="  ")
    pair.secondary.tls_fingerprint = ""
    pair.secondary.save(update_fields=["tls_fingerprint"])
    with pytest.raises(services.ServiceError, match="has not pinned ds's yet"):
        services.drill_start(pair=pair, by=operator_user, reason="Q4")
    assert not Job.objects.exists()


def test_the_scorecard_reads_each_agents_event_times_on_the_portals_clock(pair, operator_user):
    """The secondary's clock is 3 s ahead and the primary's 2 s behind the portal's: their
    stamps are moved onto the portal's clock, so the detection is 0.4 s after the request
    (not 3.4 s), and an event the primary stamped 'before' the request is inside the drill."""
    from hapairs.jobsteps.drills import _first_events

    drill = services.drill_start(pair=pair, by=operator_user, reason="skew")
    Appliance.objects.filter(pk=pair.secondary_id).update(clock_offset_ms=3000)
    Appliance.objects.filter(pk=pair.primary_id).update(clock_offset_ms=-2000)

    def stamped(code, node, at):
        HAEvent.objects.create(code=code, pair=pair, appliance=node, generated_by="Secondary", description=code,
                               timestamp=dt.datetime.fromtimestamp(at, tz=dt.UTC))  # fmt: skip

    stamped("failover_shutting_down_primary", pair.secondary, T0 + 3.4)  # its clock: 3 s ahead
    stamped("vip_taken", pair.primary, T0 - 2 + 0.9)  # its clock: 2 s behind (before T0 as stamped)
    stamped("failover_active", pair.secondary, T0 + 3 + 1.5)
    stamped("failover_active", pair.secondary, T0 + 3 + 20)  # after the failback: not the drill's
    first = _first_events(Drill.objects.select_related("pair").get(pk=drill.pk), T0, T0 + 10)
    assert {code: round(at.timestamp() - T0, 3) for code, at in first.items()} == {
        "failover_shutting_down_primary": 0.4,
        "vip_taken": 0.9,
        "failover_active": 1.5,
    }
    # an offset within the measurement's error (under 0.5 s) is not applied: an event stamped
    # just after the request stays after it
    HAEvent.objects.all().delete()
    Appliance.objects.filter(pk=pair.secondary_id).update(clock_offset_ms=200)
    stamped("failover_shutting_down_primary", pair.secondary, T0 + 0.05)
    first = _first_events(Drill.objects.select_related("pair").get(pk=drill.pk), T0, T0 + 10)
    assert round(first["failover_shutting_down_primary"].timestamp() - T0, 3) == 0.05
    # and one a real offset moves a hair before the request (its own error) is at the request
    HAEvent.objects.all().delete()
    Appliance.objects.filter(pk=pair.secondary_id).update(clock_offset_ms=3150)
    stamped("failover_shutting_down_primary", pair.secondary, T0 + 3.05)  # 0.1 s before, corrected
    first = _first_events(Drill.objects.select_related("pair").get(pk=drill.pk), T0, T0 + 10)
    assert round(first["failover_shutting_down_primary"].timestamp() - T0, 3) == 0.0
    HAEvent.objects.all().delete()
    stamped("failover_shutting_down_primary", pair.secondary, T0 + 3.4)

    # and unmeasured clocks are taken as the portal's
    Appliance.objects.update(clock_offset_ms=None)
    first = _first_events(Drill.objects.select_related("pair").get(pk=drill.pk), T0, T0 + 10)
    assert round(first["failover_shutting_down_primary"].timestamp() - T0, 3) == 3.4 and "vip_taken" not in first


# --- on a schedule ---------------------------------------------------------------------------
def test_a_scheduled_drill_starts_when_its_crontab_comes_round_and_a_refused_one_says_why(pair, operator_user):
    with pytest.raises(services.ServiceError, match="not a crontab"):
        services.drill_schedule_set(pair=pair, crontab="every sunday", reason="weekly", by=operator_user)
    minutes = ",".join(str(m) for m in range(60))  # a valid crontab longer than the column: refused, not a 500
    with pytest.raises(services.ServiceError, match="too long a crontab"):
        services.drill_schedule_set(pair=pair, crontab=f"{minutes} 3 * * *", reason="weekly", by=operator_user)
    assert not DrillSchedule.objects.exists()
    schedule = services.drill_schedule_set(pair=pair, crontab="0 3 * * *", reason="nightly drill", by=operator_user)
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    DrillSchedule.objects.filter(pk=schedule.pk).update(created_at=midnight)  # set up at midnight

    assert services.drills_due(now=midnight + dt.timedelta(hours=2, minutes=59)) == []  # not yet 03:00
    (started,) = services.drills_due(now=midnight + dt.timedelta(hours=3, minutes=0, seconds=20))
    drill = Drill.objects.get(pk=started)
    assert (drill.schedule_id, drill.reason, drill.requested_by) == (schedule.pk, "nightly drill", operator_user)
    assert services.drills_due(now=midnight + dt.timedelta(hours=3, minutes=1)) == []  # once per time round

    # the next night the pair is in maintenance: no drill, and an event says why
    Job.objects.update(status="succeeded")
    HAPair.objects.filter(pk=pair.pk).update(maintenance=True, maintenance_reason="PSU")
    assert services.drills_due(now=midnight + dt.timedelta(days=1, hours=3, minutes=0, seconds=5)) == []
    refused = HAEvent.objects.get(code="drill_refused")
    assert "Scheduled drill (cron “0 3 * * *”) not started: The drill cannot start:" in refused.remarks
    assert refused.why["rule"] == "drill.preflight" and "maintenance (PSU)" in refused.why["text"]


# --- the API -----------------------------------------------------------------------------------
def test_the_api_starts_a_drill_refuses_one_with_the_preflights_words_and_lists_them(
    client, pair, operator_user, monitor_user
):
    operator = {"HTTP_AUTHORIZATION": f"Bearer {token_for(operator_user)}"}
    monitor = {"HTTP_AUTHORIZATION": f"Bearer {token_for(monitor_user)}"}
    url = "/api/v1/appliances/dp/ha/drills"
    assert client.post(url, {"reason": "Q4"}, content_type="application/json", **monitor).status_code == 403
    started = client.post(url, {"reason": "Q4"}, content_type="application/json", **operator)
    assert started.status_code == 202, started.content
    again = client.post(url, {"reason": "Q4"}, content_type="application/json", **operator)
    assert again.status_code == 409 and "is still running on this pair" in again.json()["detail"]
    assert client.post(url, {}, content_type="application/json", **operator).status_code in (400, 422)
    (listed,) = client.get(url, **monitor).json()
    assert (listed["id"], listed["status"], listed["scorecard"]) == (started.json()["drill"]["id"], "pending", None)
    bad = client.put("/api/v1/appliances/dp/ha/drill-schedule", {"crontab": "61 * * * *", "reason": "x"},
                     content_type="application/json", **operator)  # fmt: skip
    assert bad.status_code == 422 and "not a valid minute" in bad.json()["detail"]
    assert not DrillSchedule.objects.exists()


# --- the pages ---------------------------------------------------------------------------------
def test_the_drill_page_checks_first_starts_one_and_the_status_page_shows_its_scorecard(
    client, pair, operator_user, monitor_user, django_capture_on_commit_callbacks
):
    client.force_login(monitor_user)
    page = client.get("/mse/dp/ha/drill/").content.decode()
    assert "Pre-flight check" in page and "Your role may look but not run a drill." in page
    assert client.post("/mse/dp/ha/drill/", {"reason": "Q4"}).status_code == 403

    client.force_login(operator_user)
    page = client.get("/mse/dp/ha/drill/").content.decode()
    assert "Start the drill" in page and "waits out the stabilisation window" in page
    assert "Say why" in client.post("/mse/dp/ha/drill/", {"reason": ""}).content.decode()
    with django_capture_on_commit_callbacks():
        response = client.post("/mse/dp/ha/drill/", {"reason": "Q4 drill"})
    assert response.status_code == 302 and response["Location"] == "/mse/dp/ha/"
    drill = Drill.objects.get()

    # while it runs, and once it has its scorecard
    assert "Figures when it ends." in client.get("/mse/dp/ha/").content.decode()
    Drill.objects.filter(pk=drill.pk).update(scorecard={"outage_s": 1.55, "writes_lost": 0, "writes_acknowledged": 412})
    page = client.get("/mse/dp/ha/").content.decode()
    assert f'<tr data-drill="{drill.pk}">' in page
    assert "<dt>Client-visible outage (switchover)</dt><dd>1.55 s</dd>" in page
    assert "<dt>Writes acknowledged</dt><dd>412</dd><dt>Acknowledged writes lost</dt><dd>0</dd>" in page

    # a second one while the first runs: refused on the page, saying why
    page = client.get("/mse/dp/ha/drill/").content.decode()
    assert "A drill is not possible now." in page and f"(job #{drill.job_id}) is still running" in page
