"""The API does what the pages do: delete an appliance (with the same refusals), report
schedules and their deliveries, alerts. Bad input is a 400 that writes nothing."""

from __future__ import annotations

import json

import pytest

from hapairs import services
from hapairs.models import Alert, Appliance, Delivery, HAEvent, Job, ReportSchedule

from .test_api import token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def call(client, admin_user_, monitor_user):
    tokens = {"admin": token_for(admin_user_), "monitor": token_for(monitor_user)}

    def call(method, path, body=None, as_="admin"):
        data = json.dumps(body) if body is not None else None
        return getattr(client, method)(
            f"/api/v1{path}", data=data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {tokens[as_]}"
        )

    return call


# --- delete an appliance ------------------------------------------------------------------------
def test_an_appliance_is_deleted_with_a_reason_and_its_events_stay(call, make_appliance):
    alone = make_appliance(name="gone", hm_ip="127.40.0.2")
    kept = HAEvent.objects.filter(appliance=alone).count()
    assert kept >= 1  # "added"
    assert call("delete", "/appliances/gone").status_code == 400  # no reason: nothing happens
    assert call("delete", "/appliances/gone?reason=%20").status_code == 400
    assert call("delete", "/appliances/gone?reason=decommissioned", as_="monitor").status_code == 403
    assert Appliance.objects.filter(name="gone").exists()
    response = call("delete", "/appliances/gone?reason=decommissioned")
    assert response.status_code == 204, response.content
    assert not Appliance.objects.filter(name="gone").exists()
    assert HAEvent.objects.filter(appliance__isnull=True, description__contains="gone").count() >= kept
    record = HAEvent.objects.get(code="appliance_deleted")
    assert record.description == "Mobility Services Engine gone deleted" and "decommissioned" in record.remarks
    assert call("delete", "/appliances/gone?reason=again").status_code == 404


def test_an_appliance_in_a_pair_with_a_running_job_or_licenses_is_not_deleted(call, make_appliance):
    primary = make_appliance(name="p", hm_ip="127.40.0.3", vip="127.40.0.1", vip_prefixlen=24, role="primary")
    secondary = make_appliance(name="s", hm_ip="127.40.0.4", role="secondary")
    services.ha_pair_create(primary=primary, secondary=secondary)
    busy = make_appliance(name="busy", hm_ip="127.40.0.5")
    Job.objects.create(kind="start_services", status="running", appliance=busy)
    for name, words in (
        ("p", "in the HA pair of p: delete the secondary from that pair first"),
        ("s", "in the HA pair of p"),
        ("busy", "is still running on it"),
    ):
        before = (Appliance.objects.count(), HAEvent.objects.count())
        response = call("delete", f"/appliances/{name}?reason=tidy")
        assert response.status_code == 409 and words in response.json()["detail"], response.content
        assert (Appliance.objects.count(), HAEvent.objects.count()) == before


# --- report schedules ------------------------------------------------------------------------------
SCHEDULE = {"name": "Morning", "recipients": ["noc@example.net"], "cadence": "weekly", "send_at": "06:30", "weekday": 0}


def test_report_schedules_are_created_read_replaced_sent_and_deleted(call):
    created = call("post", "/reports/schedules", SCHEDULE)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["recipients"] == ["noc@example.net"] and body["send_at"] == "06:30" and body["period_days"] == 7
    sid = body["id"]
    assert [s["name"] for s in call("get", "/reports/schedules", as_="monitor").json()] == ["Morning"]
    replaced = call("put", f"/reports/schedules/{sid}", {**SCHEDULE, "cadence": "crontab", "crontab": "0 7 * * 1-5"})
    assert replaced.status_code == 200 and replaced.json()["crontab"] == "0 7 * * 1-5"
    assert ReportSchedule.objects.get(pk=sid).periodic_task.crontab.day_of_week == "1-5"
    sent = call("post", f"/reports/schedules/{sid}/send")
    assert sent.status_code == 202 and sent.json()["recipients"] == ["noc@example.net"]
    delivery = sent.json()["id"]
    assert call("get", f"/reports/deliveries?schedule={sid}").json()[0]["id"] == delivery
    assert call("get", f"/reports/deliveries/{delivery}").json()["status"] in ("pending", "sending", "sent")
    not_failed = call("post", f"/reports/deliveries/{delivery}/retry")
    assert not_failed.status_code == 409 and "Only a failed delivery" in not_failed.json()["detail"]
    Delivery.objects.filter(pk=delivery).update(status="failed")
    assert call("post", f"/reports/deliveries/{delivery}/retry").status_code == 202
    assert call("delete", f"/reports/schedules/{sid}", as_="monitor").status_code == 403
    assert call("delete", f"/reports/schedules/{sid}").status_code == 204
    assert not ReportSchedule.objects.exists() and Delivery.objects.filter(pk=delivery).exists()
    assert call("get", f"/reports/schedules/{sid}").status_code == 404


@pytest.mark.parametrize(
    "change, status, words",
    [
        ({"send_at": "7am"}, 400, "send_at: String should match pattern"),
        ({"weekday": 7}, 400, "weekday: Input should be less than or equal to 6"),
        ({"recipients": "noc@example.net"}, 400, "recipients: Input should be a valid list"),
        ({"recipients": []}, 400, "recipients: List should have at least 1 item"),
        ({"cadence": "hourly"}, 400, "cadence: Input should be"),
        ({"period_days": 91}, 400, "period_days: Input should be less than or equal to 90"),
        ({"colour": "red"}, 400, "colour: Extra inputs are not permitted"),
        ({"recipients": ["not an address"]}, 422, "not an e-mail address"),
        ({"cadence": "crontab", "crontab": "every day"}, 422, "is not a crontab"),
    ],
)
def test_a_bad_schedule_is_refused_and_nothing_is_written(call, change, status, words):
    before = (ReportSchedule.objects.count(), HAEvent.objects.count())
    response = call("post", "/reports/schedules", {**SCHEDULE, **change})
    assert response.status_code == status, response.content
    assert words in response.json()["detail"]
    assert (ReportSchedule.objects.count(), HAEvent.objects.count()) == before


def test_alerts_are_listed_newest_first_and_filtered(call):
    for i, kind in enumerate(("failover", "job_failed", "failover")):
        Alert.objects.create(
            kind=kind, key=f"k{i}", subject_key="s", title=f"alert {i}", actor="the agents", status="sent"
        )
    assert [a["title"] for a in call("get", "/alerts", as_="monitor").json()] == ["alert 2", "alert 1", "alert 0"]
    assert [a["title"] for a in call("get", "/alerts?kind=failover&limit=1").json()] == ["alert 2"]
    assert call("get", "/alerts?kind=meteor").status_code == 400
