"""The audit trail (hapairs.audit): one day with a pairing (API), a switchover (page) and a
token change (command line), exported as CSV and JSON and read through the API, each action
with who, from where, under which request, why, and the fields before and after."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.utils import timezone

from hapairs.models import AuditEntry, HAPair, Job
from hapairs.tests.test_api import token_for
from hapairs.tests.test_pages import healthy

pytestmark = pytest.mark.django_db


@pytest.fixture
def day(client, operator_user, admin_user_, make_appliance):
    """The day's work; returns the operator's token (issued on the command line)."""
    make_appliance(name="p1", device_type="3355", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24)
    make_appliance(name="s1", device_type="3355", hm_ip="127.10.10.16")
    AuditEntry.objects.all().delete()  # the fixtures' own appliance.create entries
    token = token_for(operator_user)  # token.issue, on the command line
    response = client.post(
        "/api/v1/appliances/p1/ha",
        data=json.dumps(
            {"secondary_name": "s1", "secondary_ip": "127.10.10.16", "secondary_password": "sec-pw-never-logged"}
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_X_REQUEST_ID="change-4711",
    )
    assert response.status_code == 202, response.content
    assert response["X-Request-ID"] == "change-4711"
    Job.objects.update(status="succeeded")  # as if the pairing's job had run
    healthy(HAPair.objects.get())
    client.force_login(operator_user)
    assert client.post("/mse/p1/ha/switchover/", {"reason": "patching p1"}).status_code == 302
    call_command("api_token", "operator1", "--revoke", stdout=io.StringIO())  # token.revoke
    client.force_login(admin_user_)
    return token


def export_csv(client, **filters):
    response = client.get("/audit/", {**filters, "format": "csv"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_the_csv_of_the_day_holds_every_action_with_actor_source_before_and_after(client, day):
    rows = export_csv(client, day=timezone.localdate().isoformat())
    by_action = {row["action"]: row for row in rows}
    assert set(by_action) == {"token.issue", "pair.configure", "pair.switchover", "token.revoke"}
    assert len(rows) == 4

    issue, revoke = by_action["token.issue"], by_action["token.revoke"]
    assert issue["source"] == revoke["source"] == "cli" and "(command line)" in issue["actor"]
    assert json.loads(issue["before"]) is None and json.loads(issue["after"])["prefix"].startswith("mse_")
    assert json.loads(revoke["before"])["prefix"] == json.loads(issue["after"])["prefix"]
    assert json.loads(revoke["after"]) is None

    pairing = by_action["pair.configure"]
    assert (pairing["actor"], pairing["source"], pairing["request_id"]) == ("operator1", "api", "change-4711")
    assert pairing["object"] == str(HAPair.objects.get())
    after = json.loads(pairing["after"])
    assert json.loads(pairing["before"]) is None and after["failover_type"] == "manual"
    assert after["made"] == [f"job #{Job.objects.get(kind='configure_ha').pk}"]

    switch = by_action["pair.switchover"]
    assert (switch["actor"], switch["source"], switch["reason"]) == ("operator1", "page", "patching p1")
    assert json.loads(switch["after"])["made"] == [f"job #{Job.objects.get(kind='switchover').pk}"]
    assert len(switch["request_id"]) == 32  # one of the portal's own

    # secrets are never written down: not the secondary's password, not the token
    text = json.dumps(rows)
    assert "sec-pw-never-logged" not in text and day not in text and "key_hash" not in text


def test_the_json_export_and_the_api_give_the_same_entries(client, day, admin_user_):
    exported = client.get("/audit/", {"format": "json", "action": "token"}).json()["entries"]
    assert [e["action"] for e in exported] == ["token.revoke", "token.issue"]
    token = token_for(admin_user_)  # one more token.issue, for the API call itself
    api = client.get("/api/v1/audit", {"action": "pair"}, HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert [e["action"] for e in api] == ["pair.switchover", "pair.configure"]
    page = client.get("/api/v1/audit", {"limit": 2}, HTTP_AUTHORIZATION=f"Bearer {token}").json()
    rest = client.get("/api/v1/audit", {"before_id": page[-1]["id"]}, HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert [e["id"] for e in page + rest] == list(AuditEntry.objects.order_by("-id").values_list("id", flat=True))


def test_the_page_filters_and_refuses_bad_filters_saying_why(client, day):
    page = client.get("/audit/", {"source": "page"}).content.decode()
    assert "pair.switchover" in page and "patching p1" in page and "token.issue" not in page
    assert [r["action"] for r in export_csv(client, actor="operator1")] == ["pair.switchover", "pair.configure"]
    bad = client.get("/audit/", {"day": "yesterday"})
    assert bad.status_code == 400 and "is not a date" in bad.content.decode()
    assert client.get("/audit/", {"source": "fax", "format": "csv"}).status_code == 400


def test_a_monitor_may_not_read_it(client, monitor_user, day):
    client.force_login(monitor_user)
    response = client.get("/audit/")
    assert response.status_code == 403 and b"may not read the audit trail" in response.content
    assert b'href="/audit/"' not in client.get("/mse/").content


def test_a_refused_write_records_nothing(client, day, operator_user):
    client.force_login(operator_user)
    Job.objects.update(status="succeeded")  # the switchover's job, as if it had run
    before = AuditEntry.objects.count()
    client.post("/mse/p1/ha/maintenance/", {"on": "on", "reason": ""})  # refused: no reason
    assert AuditEntry.objects.count() == before and not HAPair.objects.get().maintenance
    assert client.post("/mse/p1/ha/maintenance/", {"on": "on", "reason": "disk"}).status_code == 302
    entry = AuditEntry.objects.latest("id")
    assert (entry.action, entry.reason, entry.before["maintenance"], entry.after["maintenance"]) == (
        "pair.maintenance",
        "disk",
        False,
        True,
    )
    assert entry.after["maintenance_reason"] == "disk" and entry.after["made"]


def test_the_api_sources_are_the_models():
    from typing import get_args

    from hapairs.api.audit import AuditFilters
    from hapairs.choices import AuditSource

    (literal, _none) = get_args(AuditFilters.model_fields["source"].annotation)
    assert set(get_args(literal)) == set(AuditSource.values)


def test_a_parameter_change_is_recorded_with_what_was_asked_and_its_job(client, day, operator_user):
    Job.objects.update(status="succeeded")
    token = token_for(operator_user)
    response = client.patch(
        "/api/v1/appliances/p1/ha",
        data=json.dumps({"failover_type": "automatic", "reason": "night shift"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 202, response.content
    entry = AuditEntry.objects.get(action="pair.update")
    assert (entry.actor_name, entry.source, entry.reason) == ("operator1", "api", "night shift")
    assert entry.after["requested"] == {"failover_type": "automatic"}
    assert entry.after["made"] == [f"job #{Job.objects.get(kind='update_ha').pk}"]


def test_the_django_admins_writes_are_in_the_audit_trail(client, django_user_model):
    root = django_user_model.objects.create_superuser("root-admin", "root@example.net", "root-pw-12345")
    client.force_login(root)
    response = client.post("/admin/auth/group/add/", {"name": "NOC night shift", "permissions": []})
    assert response.status_code == 302, response.content[:2000]
    group = Group.objects.get(name="NOC night shift")
    response = client.post(f"/admin/auth/group/{group.pk}/change/", {"name": "NOC nights", "permissions": []})
    assert response.status_code == 302
    entries = list(AuditEntry.objects.filter(action__startswith="admin.").order_by("pk"))
    assert [(e.action, e.actor_name, e.object_type, e.object_id) for e in entries] == [
        ("admin.group.added", "root-admin", "group", str(group.pk)),
        ("admin.group.changed", "root-admin", "group", str(group.pk)),
    ]
    assert entries[0].after == {"change": "Added."} and entries[1].after == {"change": "Changed Name."}
    assert entries[1].object_repr == "NOC nights" and entries[1].source == "page"
