"""The Reports page through Django's test client: roles, schedules, Send now, the
preview, the delivery log, and the mailbox of the embedded file sink."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from hapairs import services
from hapairs.choices import DeliveryStatus
from hapairs.models import Delivery, ReportSchedule
from hapairs.tests.mailutil import free_port, point_mail_at
from hapairs.tests.reportfleet import build_fleet

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
GOOD = {
    "name": "Morning report",
    "recipients": "noc@example.net\nduty@example.net",
    "cadence": "daily",
    "send_at": "07:30",
    "weekday": "1",
    "crontab": "",
    "period_days": "",
    "enabled": "on",
}


@pytest.fixture
def schedule():
    return services.report_schedule_create(name="Daily NOC report", recipients="noc@example.net")


def test_reports_sits_between_jobs_and_admin_in_the_navigation(client, admin_user_):
    client.force_login(admin_user_)
    page = client.get("/reports/").content.decode()
    nav = page[page.index('<nav class="mainnav"') : page.index("</nav>")]
    assert (
        nav.index(">Jobs</a>") < nav.index('href="/reports/" aria-current="page">Reports</a>') < nav.index(">Admin</a>")
    )


def test_a_monitor_reads_but_sees_no_action_and_is_refused_by_the_server(client, schedule, monitor_user):
    failed = services.report_send_now(schedule=schedule)
    Delivery.objects.filter(pk=failed.pk).update(status=DeliveryStatus.FAILED)
    client.force_login(monitor_user)
    page = client.get("/reports/").content.decode()
    assert "Daily NOC report" in page and "noc@example.net" in page and "Delivery log" in page
    for action in ("Send now", "New schedule", "Edit", ">Delete<", ">Retry<", "Mailbox"):
        assert action not in page, action
    assert client.get("/reports/preview/").status_code == 200
    refused = [
        client.post(f"/reports/{schedule.pk}/send/"),
        client.post("/reports/new/", GOOD),
        client.get("/reports/new/"),
        client.post(f"/reports/{schedule.pk}/edit/", {**GOOD, "name": "Renamed"}),
        client.post(f"/reports/{schedule.pk}/delete/"),
        client.post(f"/reports/deliveries/{failed.pk}/retry/"),
        client.get("/reports/mailbox/"),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert b"Your role (Monitor) may not send reports." in refused[0].content
    assert list(ReportSchedule.objects.values_list("name", flat=True)) == ["Daily NOC report"]
    assert Delivery.objects.count() == 1 and Delivery.objects.get().status == DeliveryStatus.FAILED


def test_an_operator_creates_a_schedule_and_sends_it_now(client, operator_user):
    client.force_login(operator_user)
    assert b"New schedule" in client.get("/reports/").content
    response = client.post("/reports/new/", GOOD)
    assert response.status_code == 302 and response["Location"] == "/reports/"
    schedule = ReportSchedule.objects.get()
    assert (schedule.recipients, schedule.schedule_text, schedule.period_days) == (
        "noc@example.net, duty@example.net",
        "Daily at 07:30",
        1,
    )
    assert PeriodicTask.objects.get(name=f"health-report:{schedule.pk}").crontab.hour == "7"
    page = client.get("/reports/").content.decode()
    assert "Schedule “Morning report” created: Daily at 07:30, to noc@example.net, duty@example.net." in page

    response = client.post(f"/reports/{schedule.pk}/send/", follow=True)
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.requested_by, delivery.schedule, delivery.recipients) == (
        DeliveryStatus.PENDING,
        operator_user,
        schedule,
        ["noc@example.net", "duty@example.net"],
    )
    assert delivery.subject.startswith("[mseportal] Morning report, ")
    page = response.content.decode()
    assert f"queued for noc@example.net, duty@example.net (delivery #{delivery.pk})" in page
    log = page[page.index('id="delivery-log"') :]
    assert 'hx-trigger="every 2s"' in log[:300]  # pending: the log polls until it is sent
    assert '<span class="pill pending">Pending</span>' in log and "sent now by operator1" in log
    # once nothing is moving, htmx polling stops
    Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.SENT)
    response = client.get("/reports/", HTTP_HX_TARGET="delivery-log", **HX)
    assert response.status_code == 286 and b"<html" not in response.content
    assert response.content.decode().lstrip().startswith('<div id="delivery-log"')


def test_an_operator_edits_and_deletes_a_schedule(client, schedule, operator_user):
    client.force_login(operator_user)
    assert 'value="Daily NOC report"' in client.get(f"/reports/{schedule.pk}/edit/").content.decode()
    response = client.post(
        f"/reports/{schedule.pk}/edit/",
        {**GOOD, "name": "Weekday report", "cadence": "crontab", "crontab": "15 6 * * 1-5", "period_days": "3"},
    )
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert (schedule.name, schedule.crontab, schedule.period_days) == ("Weekday report", "15 6 * * 1-5", 3)
    assert PeriodicTask.objects.get(name=f"health-report:{schedule.pk}").crontab.day_of_week == "1-5"
    assert client.post(f"/reports/{schedule.pk}/delete/").status_code == 302
    assert not ReportSchedule.objects.exists() and not PeriodicTask.objects.filter(name__startswith="health").exists()


@pytest.mark.parametrize(
    "changes, says",
    [
        (
            {"cadence": "crontab", "crontab": "61 7 * * *"},
            [
                "“61 7 * * *” is not a crontab: “61” is not a valid minute. Write five fields — minute hour day-of-month month "
                "day-of-week — such as 0 7 * * 1-5."
            ],
        ),
        ({"recipients": "noc@example.net, bob@"}, ["“bob@” is not an e-mail address (such as noc@example.net)."]),
        (
            {"recipients": "bob@", "cadence": "crontab", "crontab": "* * *"},
            ["“bob@” is not an e-mail address", "“* * *” is not a crontab: it has 3 fields, not 5."],
        ),
    ],
)
def test_bad_schedule_input_gets_a_clear_error_and_changes_nothing(client, schedule, operator_user, changes, says):
    client.force_login(operator_user)
    for url in ("/reports/new/", f"/reports/{schedule.pk}/edit/"):
        response = client.post(url, {**GOOD, **changes})
        page = response.content.decode().replace("&#x27;", "'")
        assert response.status_code == 400, url
        for sentence in says:
            assert sentence in page, (url, sentence)
        assert 'class="field invalid"' in page
    schedule.refresh_from_db()
    assert list(ReportSchedule.objects.values_list("name", flat=True)) == ["Daily NOC report"]
    assert (schedule.recipients, schedule.cadence) == ("noc@example.net", "daily")
    assert PeriodicTask.objects.filter(name__startswith="health-report:").count() == 1


def test_the_preview_renders_the_report_in_the_browser(client, make_appliance, operator_user, monitor_user):
    build_fleet(make_appliance, operator_user)
    client.force_login(monitor_user)
    page = client.get("/reports/preview/?days=7").content.decode()
    assert "Health report preview" in page and "[mseportal] Health report, " in page
    assert '<iframe id="report-html"' in page and "srcdoc=" in page and "mse-p1" in page
    text = client.get("/reports/preview/?days=7&format=text").content.decode()
    assert "mseportal health report — the last 7 days" in text and "automatic failback by the agents" in text
    raw = client.get("/reports/preview/?days=abc&raw=1")
    assert raw.status_code == 200 and raw.content.decode().startswith("<!doctype html>")
    assert "Health report — the last 24 hours" in raw.content.decode()
    assert "default-src 'none'" in raw["Content-Security-Policy"]


def test_a_failed_delivery_shows_why_and_an_operator_retries_it(client, schedule, operator_user):
    delivery = services.report_send_now(schedule=schedule)
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.FAILED,
        attempts=6,
        last_error="ConnectionRefusedError: [Errno 111] Connection refused",
        attempt_log=[{"n": 6, "at": "2026-01-01T07:00:00+00:00", "ok": False, "error": "Connection refused"}],
    )
    client.force_login(operator_user)
    page = client.get("/reports/").content.decode()
    assert "Connection refused" in page and ">Retry<" in page
    detail = client.get(f"/reports/deliveries/{delivery.pk}/").content.decode()
    assert "Idempotency key" in detail and delivery.key in detail and "srcdoc=" in detail
    client.post(f"/reports/deliveries/{delivery.pk}/retry/")
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING
    response = client.post(f"/reports/deliveries/{delivery.pk}/retry/", follow=True)
    assert "Only a failed delivery can be retried; #" in response.content.decode()


def test_the_mailbox_lists_what_the_file_sink_kept(
    client, settings, tmp_path, make_appliance, operator_user, monitor_user
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path / "mail")
    build_fleet(make_appliance, operator_user)
    call_command("send_health_report", "--to", "newcomer@example.net", "--period-days", "7")
    call_command("send_health_report", "--to", "second@example.net")
    client.force_login(operator_user)
    assert 'href="/reports/mailbox/"' in client.get("/reports/").content.decode()
    page = client.get("/reports/mailbox/").content.decode()
    assert page.index("second@example.net") < page.index("newcomer@example.net")  # newest first
    assert "[mseportal] Health report, " in page
    link = page[page.index('href="/reports/mailbox/') + 6 :]
    link = link[: link.index('"')]
    assert link != "/reports/mailbox/"
    message = client.get(link).content.decode()
    assert "second@example.net" in message and "mseportal health report — the last 24 hours" in message
    assert 'sandbox srcdoc="' in message
    assert client.get("/reports/mailbox/..%2F..%2Fetc%2Fpasswd/0/").status_code == 404
    assert client.get("/reports/mailbox/nothing.log/0/").status_code == 404
    client.force_login(monitor_user)
    assert client.get("/reports/mailbox/").status_code == 403


def test_there_is_no_mailbox_when_mail_goes_to_a_real_server(client, settings, operator_user):
    point_mail_at(settings, free_port())
    client.force_login(operator_user)
    assert 'href="/reports/mailbox/"' not in client.get("/reports/").content.decode()
    assert client.get("/reports/mailbox/").status_code == 404


@pytest.mark.parametrize(
    "url", ["/reports/", "/reports/new/", "/reports/preview/", "/reports/mailbox/", "/reports/deliveries/1/"]
)
def test_every_reports_page_needs_a_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_a_webhook_url_is_shown_by_its_host_only(client, settings, schedule, monitor_user):
    settings.ALERT_WEBHOOK_URL = "https://hooks.example.net/services/T000/B000/secret-token"
    services.delivery_create(
        key="alert:test:webhook",
        kind="alert",
        channel="webhook",
        recipients=[settings.ALERT_WEBHOOK_URL],
        subject="x",
        body_text="{}",
        queue=False,
    )
    client.force_login(monitor_user)
    page = client.get("/reports/").content.decode()
    assert "https://hooks.example.net/…" in page and "secret-token" not in page


def test_the_admin_saves_schedules_through_the_service(client, admin_user_):
    client.force_login(admin_user_)
    form = {
        "name": "From the admin",
        "recipients": "noc@example.net",
        "cadence": "crontab",
        "send_at": "07:00",
        "weekday": "1",
        "crontab": "0 25 * * *",
        "period_days": "1",
        "enabled": "on",
    }
    response = client.post("/admin/hapairs/reportschedule/add/", form)
    assert response.status_code == 200 and "“25” is not a valid hour" in response.content.decode()
    assert not ReportSchedule.objects.exists()
    response = client.post("/admin/hapairs/reportschedule/add/", {**form, "crontab": "0 5 * * *"})
    assert response.status_code == 302
    schedule = ReportSchedule.objects.get()
    assert schedule.created_by == admin_user_ and schedule.periodic_task.crontab.hour == "5"
