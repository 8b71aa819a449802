"""The health report: its figures, its two renderings, the beat-scheduled task sending it
through a real SMTP server on loopback, retries while that server is down, and the
``send_health_report`` command.

Celery runs eagerly here (the project's CELERY_TASK_ALWAYS_EAGER mode): the tasks, their
autoretry and the mail backend are the real ones; only the broker hop is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hapairs import delivery as sender
from hapairs import reports, services, tasks
from hapairs.choices import DeliveryStatus
from hapairs.models import AuditEntry, Delivery, Drill, HAEvent, HAPair, Job, ReportSchedule
from hapairs.tests.e2e import REPO
from hapairs.tests.mailutil import Inbox, free_port, point_mail_at
from hapairs.tests.reportfleet import (
    SWITCHOVER_REASON,
    UPDATE_ERROR,
    UPDATE_REASON,
    build_fleet,
    healthy,
    samples,
)
from mseportal.celery import app as celery_app

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(make_appliance, operator_user):
    return build_fleet(make_appliance, operator_user)


@pytest.fixture
def inbox(settings):
    box = Inbox().start()
    point_mail_at(settings, box.port)
    yield box
    box.stop()


@pytest.fixture
def schedule(operator_user):
    return services.report_schedule_create(
        name="Daily NOC report",
        recipients="noc@example.net, oncall@example.net",
        cadence="daily",
        send_at="07:00",
        by=operator_user,
    )


# --- the figures -----------------------------------------------------------------------------
def test_the_report_sums_up_the_fleet_and_says_who_caused_each_switch(fleet, operator_user):
    report = reports.report_build(period_days=1)

    assert report.fleet == reports.FleetSummary(
        appliances=5,
        appliances_unreachable=0,
        pairs=2,
        active=1,
        degraded=0,
        failed_over=1,
        maintenance=0,
        unreachable=0,
        split_brain=0,
    )
    one, two = report.pairs
    assert (one.name, one.health, one.primary_state, one.secondary_state) == (
        "mse-p1 → mse-s1",
        "failed_over",
        "TERMINATED",
        "FAILOVER_ACTIVE",
    )
    assert (one.heartbeat, one.replication) == ("Down", "Down")
    # the operator's switchover: who and why, from the job
    [switch] = one.switches
    assert (switch.kind, switch.actor.kind, switch.actor.name, switch.actor.reason, switch.actor.job_id) == (
        "failover",
        "operator",
        operator_user.username,
        SWITCHOVER_REASON,
        fleet["switchover"].pk,
    )
    assert switch.actor.sentence == f"requested by operator1 (job #{fleet['switchover'].pk}): “{SWITCHOVER_REASON}”"
    # the agents' own failover and failback (reported by both nodes, counted once)
    assert [(s.kind, s.actor.sentence) for s in two.switches] == [
        ("failover", "automatic failover by the agents"),
        ("failback", "automatic failback by the agents"),
    ]
    assert (report.failovers, report.failbacks) == (2, 1)
    [failed] = two.failed_jobs
    assert (failed.job_id, failed.actor.name, failed.actor.reason, failed.error) == (
        fleet["update"].pk,
        "operator1",
        UPDATE_REASON,
        UPDATE_ERROR,
    )
    # heartbeat trend: p1 rose from ~1.1 to ~4 ms, p2 steady around 2 ms
    assert one.trend.direction == "rising" and one.trend.samples == 12
    assert one.trend.first_half_ms == pytest.approx(1.117, abs=0.01)
    assert one.trend.second_half_ms == pytest.approx(3.933, abs=0.01)
    assert two.trend.direction == "steady" and two.trend.words == "steady around 2.0 ms"
    assert len(one.trend.bars) in (24, 25) and max(bar.height for bar in one.trend.bars) == reports.BAR_MAX_PX
    # licenses within 30 days, not removed: the evaluation one and the expired one
    assert [(lic.appliance, lic.feature, lic.days_left, lic.is_evaluation, lic.when) for lic in report.licenses] == [
        ("mse-p2", "WIPS_MONITOR", -3, False, "expired 3 days ago"),
        ("mse-s1", "CAS_ELEMENTS", 12, True, "12 days left"),
    ]
    assert report.headline == "1 of 2 pairs active, 1 failed over, 2 failovers, 2 licenses expiring"


def test_an_event_outside_the_period_is_left_out(fleet):
    report = reports.report_build(period_days=1, now=timezone.now() + timedelta(hours=20))
    # a day that ends in 20 h: p2's failover (5 h ago) is outside, its failback (3 h ago) and p1's failover in
    assert [len(p.switches) for p in report.pairs] == [1, 1]
    assert report.pairs[1].switches[0].kind == "failback"


def test_the_report_reads_the_fleet_in_the_same_seven_queries_at_any_size(fleet, make_appliance):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            report = reports.report_build(period_days=7)
        return len(captured), report

    small, _ = queries()
    for n in range(12):
        primary = make_appliance(name=f"big-p{n}", hm_ip=f"127.42.0.{n + 2}", vip=f"127.42.1.{n + 2}", vip_prefixlen=16)
        secondary = make_appliance(name=f"big-s{n}", hm_ip=f"127.42.2.{n + 2}")
        pair = services.ha_pair_create(primary=primary, secondary=secondary)
        healthy(pair)
        samples(pair, [1.0, 2.0, 3.0])
        job = Job.objects.create(pair=pair, kind="drill", status="succeeded")
        Drill.objects.create(pair=pair, pair_name=str(pair), job=job, reason="drill", scorecard={"outage_s": n})
    large, report = queries()
    assert small == large == 7
    assert sum(len(p.drills) for p in report.pairs) == 12
    assert report.fleet.pairs == 14 and report.fleet.active == 13


def test_a_drill_of_the_period_is_in_the_report_with_its_scorecard(fleet, operator_user):
    pair = HAPair.objects.order_by("pk").first()
    job = Job.objects.create(pair=pair, kind="drill", status="succeeded")
    card = {"outage_s": 1.55, "writes_acknowledged": 412, "writes_lost": 0, "vip_moved_s": 0.02}
    Drill.objects.create(pair=pair, pair_name=str(pair), job=job, requested_by=operator_user, reason="Q4",
                         scorecard=card)  # fmt: skip
    report = reports.report_build(period_days=1)
    text, html = reports.render_text(report), reports.render_html(report)
    assert "Failover drills:" in text and "by operator1: Succeeded" in text
    assert "      Client-visible outage (switchover): 1.55 s" in text
    assert "      Acknowledged writes lost: 0" in text and "      Writes acknowledged: 412" in text
    assert ">Failover drills</td>" in html and "<strong>1.55 s</strong>" in html and "<strong>412</strong>" in html


def test_both_renderings_carry_the_same_figures_and_the_html_suits_mail_clients(fleet):
    report = reports.report_build(period_days=1)
    text, html = reports.render_text(report), reports.render_html(report)
    job = fleet["switchover"].pk
    for part in (text, html):
        for figure in (
            "mse-p1",
            "FAILOVER_ACTIVE",
            "TERMINATED",
            "automatic failover by the agents",
            "automatic failback by the agents",
            "CAS_ELEMENTS",
            "12 days left",
            "expired 3 days ago",
            UPDATE_ERROR,
            "steady around 2.0 ms",
        ):
            assert figure in part.replace("&#x27;", "'"), figure
    assert f"requested by operator1 (job #{job}): “{SWITCHOVER_REASON}”" in text
    assert f"requested by operator1 (job #{job}): “Replacing the primary&#x27;s power supply”" in html
    assert "HA pairs:   2 — Active 1 · Degraded 0 · Failed over 1 · In maintenance 0 · Unreachable 0" in text
    assert "rising: 1.1 → 3.9 ms (+252 %)" in text
    # mail clients drop <style> and scripts and do not draw SVG: inline styles, table bars
    assert "<style" not in html and "<script" not in html and "<svg" not in html and "<link" not in html
    bars = [bar for pair in report.pairs for bar in pair.trend.bars if bar.height]
    assert html.count("background-color:#0b5cad;font-size:0") == len(bars) == 24
    assert f'title="{bars[0].label}"' in html and "height:40px;background-color:#0b5cad" in html
    assert "MSEPORTAL" in html and 'style="' in html


# --- the beat-scheduled task through a real SMTP server -----------------------------------------
def test_a_schedule_is_a_beat_periodic_task_on_the_crontab(schedule):
    task = schedule.periodic_task
    assert task.task == "hapairs.tasks.report_send_scheduled" and json.loads(task.args) == [schedule.pk]
    assert task.enabled and (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("0", "7", "*")
    updated = services.report_schedule_update(
        schedule=schedule,
        name="Weekday NOC report",
        recipients="noc@example.net",
        cadence="crontab",
        send_at="07:00",
        weekday=1,
        crontab="30  6 * *  1-5",
        period_days=None,
        enabled=False,
        also_alerts=False,
    )
    task.refresh_from_db()
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("30", "6", "1-5")
    assert not task.enabled and updated.crontab == "30 6 * * 1-5" and updated.period_days == 1
    services.report_schedule_delete(schedule=updated)
    from django_celery_beat.models import PeriodicTask

    assert not PeriodicTask.objects.filter(name__startswith="health-report:").exists()
    assert HAEvent.objects.filter(description__startswith="Report schedule").count() == 3
    # a second delete of the same schedule (another request's, a moment later) finds it gone:
    # nothing to do, no error, no second event
    services.report_schedule_delete(schedule=updated)
    assert HAEvent.objects.filter(description__startswith="Report schedule").count() == 3


def test_the_beat_scheduled_report_arrives_by_smtp_with_both_parts(
    fleet, schedule, inbox, eager, django_capture_on_commit_callbacks
):
    periodic = schedule.periodic_task
    task = celery_app.tasks[periodic.task]  # the task the PeriodicTask names, with its arguments

    with django_capture_on_commit_callbacks(execute=True):
        task(*json.loads(periodic.args))

    [received] = inbox.wait_for(1)
    message = received.message
    assert message["Subject"].startswith("[mseportal] Daily NOC report, ")
    assert message["Subject"].endswith(": 1 of 2 pairs active, 1 failed over, 2 failovers, 2 licenses expiring")
    assert message["To"] == "noc@example.net, oncall@example.net"
    assert sorted(received.rcpt_tos) == ["noc@example.net", "oncall@example.net"]
    assert message["From"] == "mseportal@localhost"
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    job = fleet["switchover"].pk
    assert f"{timezone.localtime(fleet['pair1'].last_failover_at):%Y-%m-%d %H:%M}" in received.text
    assert f"Failover — requested by operator1 (job #{job}): “{SWITCHOVER_REASON}”" in received.text
    assert (
        "mse-s1  CAS_ELEMENTS (L-CAS_ELEM) × 100  expires" in received.text
        and "12 days left), evaluation" in received.text
    )
    assert "In the period: 2 failovers, 1 failback, 1 failed job, 0 split-brain alerts" in received.text
    assert "Health report — the last 24 hours" in received.html and "12 days left" in received.html
    assert f"requested by operator1 (job #{job})" in received.html
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.schedule_id) == (DeliveryStatus.SENT, 1, schedule.pk)
    assert message["Message-ID"] == sender.message_id(delivery)
    schedule.refresh_from_db()
    assert schedule.last_sent_at == delivery.sent_at

    # beat firing twice in the same minute (a restart, a second beat) sends nothing more
    with django_capture_on_commit_callbacks(execute=True):
        task(*json.loads(periodic.args))
    assert len(inbox.messages) == 1 and Delivery.objects.count() == 1


def test_a_disabled_schedule_sends_nothing(schedule, inbox, eager, django_capture_on_commit_callbacks):
    services.report_schedule_update(
        schedule=schedule,
        name=schedule.name,
        recipients=schedule.recipients,
        cadence="daily",
        send_at="07:00",
        weekday=1,
        crontab="",
        period_days=1,
        enabled=False,
        also_alerts=False,
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.report_send_scheduled(schedule.pk) is None
    assert not Delivery.objects.exists() and not inbox.messages


# --- SMTP down ---------------------------------------------------------------------------------------
def test_smtp_refusing_for_a_while_is_retried_and_the_report_sent_once(
    fleet, schedule, inbox, eager, django_capture_on_commit_callbacks
):
    inbox.refuse_next = 2  # "451 try again later", twice

    with django_capture_on_commit_callbacks(execute=True):
        tasks.report_send_scheduled(schedule.pk)

    assert inbox.refused == 2 and len(inbox.wait_for(1)) == 1
    delivery = Delivery.objects.get()
    # the beat's run is in the audit trail as the schedule's, naming the delivery it queued
    (run,) = AuditEntry.objects.filter(action="report_schedule.run")
    assert (run.source, run.actor_name, run.after["made"]) == ("schedule", "schedule", [f"delivery #{delivery.pk}"])
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 3)
    assert [(a["n"], a["ok"], a["error"][:8]) for a in delivery.attempt_log] == [
        (1, False, "SMTP 451"),
        (2, False, "SMTP 451"),
        (3, True, ""),
    ]
    # the retry message of a worker that had already sent it, or a resume: nothing twice
    assert tasks.delivery_send.apply(args=[delivery.pk]).get() is None
    assert len(inbox.messages) == 1


def test_smtp_down_fails_after_the_retries_and_a_retry_sends_it_once_when_it_is_back(
    fleet, schedule, settings, eager, django_capture_on_commit_callbacks
):
    port = free_port()  # nothing listens there yet
    point_mail_at(settings, port)
    assert tasks.delivery_send.max_retries == 5 and tasks.delivery_send.retry_backoff == 30

    with django_capture_on_commit_callbacks(execute=True):
        tasks.report_send_scheduled(schedule.pk)

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 6)
    assert all(not a["ok"] and "Connection refused" in a["error"] for a in delivery.attempt_log)
    assert f"(mail server 127.0.0.1:{port})" in delivery.last_error
    assert schedule.last_sent_at is None

    box = Inbox(port).start()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.delivery_retry(delivery=delivery)
        assert len(box.wait_for(1)) == 1
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.last_error) == (DeliveryStatus.SENT, 7, "")
        # asking again — a stale retry, the resume task, a double click — sends nothing more
        assert tasks.delivery_send.apply(args=[delivery.pk]).get() is None
        with pytest.raises(services.ServiceError, match="Only a failed delivery can be retried"):
            services.delivery_retry(delivery=delivery)
        assert len(box.messages) == 1
    finally:
        box.stop()


def test_a_claimed_delivery_cannot_be_sent_by_a_second_worker(schedule, inbox):
    delivery = services.report_send_now(schedule=schedule)
    assert services.deliveries.delivery_claim(delivery_id=delivery.pk) is not None
    assert sender.attempt(delivery.pk) is None  # a second worker finds nothing to claim
    assert not inbox.messages


def test_a_lost_queue_message_or_dead_worker_is_resumed(schedule):
    delivery = services.report_send_now(schedule=schedule)
    later = timezone.now() + timedelta(minutes=3)
    assert services.deliveries.deliveries_resume(now=later) == [delivery.pk]
    services.deliveries.delivery_claim(delivery_id=delivery.pk)
    assert services.deliveries.deliveries_resume(now=timezone.now()) == []  # being sent: leave it
    assert services.deliveries.deliveries_resume(now=timezone.now() + timedelta(minutes=6)) == [delivery.pk]
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.RETRYING and "stopped before it finished" in delivery.last_error


# --- the command -----------------------------------------------------------------------------------------
def test_send_health_report_sends_one_now_and_says_so(fleet, inbox, capsys):
    call_command("send_health_report", "--to", "ops@example.net", "--to", "boss@example.net", "--period-days", "7")
    out = capsys.readouterr().out
    assert "Built the health report: [mseportal] Health report, " in out
    assert f"Sent it to ops@example.net, boss@example.net via SMTP 127.0.0.1:{inbox.port} (delivery #" in out
    [received] = inbox.wait_for(1)
    assert sorted(received.rcpt_tos) == ["boss@example.net", "ops@example.net"]
    assert "mseportal health report — the last 7 days" in received.text
    assert Delivery.objects.get().status == DeliveryStatus.SENT


def test_send_health_report_fails_loudly_when_the_mail_server_is_down(fleet, settings):
    point_mail_at(settings, free_port())
    with pytest.raises(
        CommandError,
        match=r"Could not send it to ops@example.net via SMTP 127\.0\.0\.1:\d+: "
        r"ConnectionRefusedError",
    ):
        call_command("send_health_report", "--to", "ops@example.net")
    assert Delivery.objects.get().status == DeliveryStatus.FAILED
    with pytest.raises(CommandError, match="--period-days must be 1 to 90, not 0"):
        call_command("send_health_report", "--to", "ops@example.net", "--period-days", "0")
    with pytest.raises(CommandError, match="“ops@” is not an e-mail address"):
        call_command("send_health_report", "--to", "ops@")


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--period-days", "x", "--to", "a@example.net"], "argument --period-days: invalid int value: 'x'"),
        (["--period-days", "7"], "the following arguments are required: --to"),
        (["--to", "a@example.net", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_flags_give_one_line_and_a_non_zero_exit(argv, says):
    result = subprocess.run(
        [sys.executable, "manage.py", "send_health_report", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DEBUG": "1"},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"send_health_report: {says} (try --help)\n"


# --- schedule input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, field, says",
    [
        ({"cadence": "crontab", "crontab": "61 7 * * *"}, "crontab", "“61” is not a valid minute"),
        ({"cadence": "crontab", "crontab": "0 7 * *"}, "crontab", "it has 4 fields, not 5"),
        ({"cadence": "crontab", "crontab": ""}, "crontab", "it has 0 fields, not 5"),
        ({"recipients": "noc@example.net, bob@"}, "recipients", "“bob@” is not an e-mail address"),
        ({"recipients": " , "}, "recipients", "Give at least one e-mail address."),
        ({"period_days": 91}, "period_days", "A report covers 1 to 90 days, not 91."),
        ({"name": "  "}, "name", "Give the schedule a name."),
    ],
)
def test_a_bad_schedule_is_refused_and_nothing_is_written(fields, field, says):
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    values = {"name": "Ops", "recipients": "noc@example.net", "cadence": "daily", **fields}
    with pytest.raises(services.ServiceError) as refused:
        services.report_schedule_create(**values)
    assert says in " ".join(refused.value.errors[field])
    assert not ReportSchedule.objects.exists() and not PeriodicTask.objects.filter(name__startswith="health").exists()
    assert not CrontabSchedule.objects.filter(hour="7", minute="0").exists()


@pytest.mark.django_db(transaction=True)  # the scheduler commits and closes connections as beat does
def test_beat_reads_the_static_entries_and_the_report_schedules_from_the_database(settings):
    from django_celery_beat.schedulers import DatabaseScheduler

    # (beat keeps in memory only the crontab entries due within two hours: this one always is)
    schedule = services.report_schedule_create(
        name="Quarter-hourly", recipients="noc@example.net", cadence="crontab", crontab="*/15 * * * *"
    )

    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"
    scheduler = DatabaseScheduler(app=celery_app)
    try:
        entries = {name: entry.task for name, entry in scheduler.schedule.items()}
    finally:
        scheduler._finalize.cancel()
    assert entries[f"health-report:{schedule.pk}"] == "hapairs.tasks.report_send_scheduled"
    for name in ("fleet-poll", "jobs-resume", "heartbeat-samples-prune", "deliveries-resume", "licenses-expiry-check"):
        assert entries[name] == settings.CELERY_BEAT_SCHEDULE[name]["task"]


# --- settings ------------------------------------------------------------------------------------------
def test_alert_settings_are_checked_with_the_variable_named():
    from mseportal.envconf import ConfigError, env_emails, env_http_url

    assert env_emails({"R": " noc@example.net, duty@example.net "}, "R") == ["noc@example.net", "duty@example.net"]
    assert env_emails({}, "R") == []
    with pytest.raises(ConfigError, match="R: 'nope' is not an e-mail address"):
        env_emails({"R": "noc@example.net,nope"}, "R")
    assert env_http_url({"U": "https://hooks.example.net/x"}, "U") == "https://hooks.example.net/x"
    with pytest.raises(ConfigError, match="U='ftp://x' is not an http:// or https:// URL"):
        env_http_url({"U": "ftp://x"}, "U")


def test_a_webhook_without_its_secret_refuses_to_start():
    env = {**os.environ, "DEBUG": "1", "MSEPORTAL_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook"}
    env.pop("MSEPORTAL_ALERT_WEBHOOK_SECRET", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "MSEPORTAL_ALERT_WEBHOOK_URL is set but MSEPORTAL_ALERT_WEBHOOK_SECRET is not" in result.stderr
