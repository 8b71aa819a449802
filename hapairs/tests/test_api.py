"""The REST API without agents: authentication, roles, refusals, bad input of every shape."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from hapairs import services
from hapairs.models import Appliance, HAEvent, HAPair, Job

pytestmark = pytest.mark.django_db


def token_for(user) -> str:
    out = io.StringIO()
    call_command("api_token", user.username, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


@pytest.fixture
def operator_api(client, operator_user):
    token = token_for(operator_user)

    def call(method, path, body=None, raw=None, token_override=None):
        kwargs = {"HTTP_AUTHORIZATION": f"Bearer {token_override or token}"}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return getattr(client, method)(f"/api/v1{path}", data=data, content_type="application/json", **kwargs)

    return call


@pytest.fixture
def seed_3355(make_appliance):
    primary = make_appliance(
        name="mse3355-1", device_type="3355", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24, role="primary"
    )
    secondary = make_appliance(name="mse3355-2", device_type="3355", hm_ip="127.10.10.16", role="secondary")
    return primary, secondary


def test_the_api_token_command_prints_the_token_on_its_last_line_and_rotates(operator_user, client):
    first = token_for(operator_user)
    second = token_for(operator_user)
    assert first.startswith("mse_") and first != second
    assert client.get("/api/v1/appliances", HTTP_AUTHORIZATION=f"Bearer {second}").status_code == 200
    assert client.get("/api/v1/appliances", HTTP_AUTHORIZATION=f"Bearer {first}").status_code == 401


def test_the_api_token_command_issues_and_revokes_on_the_record(operator_user):
    token = token_for(operator_user)
    call_command("api_token", operator_user.username, "--revoke", stdout=io.StringIO())
    events = HAEvent.objects.filter(code__in=["token_issued", "token_revoked"]).order_by("pk")
    assert [(e.description, e.generated_by, e.remarks) for e in events] == [
        ("API token issued for operator1", "mseportal", f"Token {token[:12]}…, scope operate"),
        ("API token revoked for operator1", "mseportal", f"Token {token[:12]}…"),
    ]


def test_the_api_token_command_refuses_an_unknown_user():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("api_token", "ghost")


def test_no_token_is_401_with_a_sentence(client):
    response = client.get("/api/v1/appliances")
    assert response.status_code == 401
    assert "Authentication required" in response.json()["detail"]


def test_a_wrong_token_is_401(operator_api):
    assert operator_api("get", "/appliances", token_override="mse_not-a-real-token").status_code == 401


def test_list_and_get_appliances(operator_api, seed_3355):
    listed = operator_api("get", "/appliances").json()
    assert [row["name"] for row in listed] == ["mse3355-1", "mse3355-2"]
    one = operator_api("get", "/appliances/mse3355-1").json()
    assert one["device_type"] == "3355" and one["vip"] == "127.10.10.14"
    assert "password" not in json.dumps(listed) and "ciphertext" not in json.dumps(listed)
    assert operator_api("get", "/appliances/nope").status_code == 404


def test_an_unsupported_pair_gets_422_with_the_reason_and_nothing_is_created(operator_api, make_appliance):
    make_appliance(
        name="p", device_type="3350", hm_ip="127.10.10.22", vip="127.10.10.21", vip_prefixlen=24, role="primary"
    )
    make_appliance(name="s", device_type="3310", hm_ip="127.10.10.16", role="secondary")
    response = operator_api(
        "post",
        "/appliances/p/ha",
        {
            "secondary_name": "s",
            "secondary_ip": "127.10.10.16",
            "secondary_password": "s3cret-pass",
            "failover_type": "manual",
            "failback_type": "manual",
            "long_failover_wait": 10,
        },
    )
    assert response.status_code == 422
    assert "MSE-3310 cannot back up an MSE-3350" in response.json()["detail"]
    assert HAPair.objects.count() == 0 and Job.objects.count() == 0


def test_the_secondary_ip_must_match_the_registered_one(operator_api, seed_3355):
    response = operator_api(
        "post",
        "/appliances/mse3355-1/ha",
        {
            "secondary_name": "mse3355-2",
            "secondary_ip": "127.10.10.99",
            "secondary_password": "x",
        },
    )
    assert response.status_code == 422
    assert response.json()["errors"]["secondary_ip"]


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        json.dumps({"secondary_name": "s"}),
        json.dumps({"secondary_name": 5, "secondary_ip": [], "secondary_password": None}),
        json.dumps(
            {"secondary_name": "s", "secondary_ip": "1", "secondary_password": "x", "failover_type": "sometimes"}
        ),
        json.dumps(
            {"secondary_name": "s", "secondary_ip": "1", "secondary_password": "x", "long_failover_wait": "ten"}
        ),
        json.dumps({"secondary_name": "x" * 500, "secondary_ip": "1", "secondary_password": "x"}),
    ],
)
def test_bad_bodies_get_400_with_a_reason_never_500(operator_api, seed_3355, raw):
    response = operator_api("post", "/appliances/mse3355-1/ha", raw=raw)
    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert HAPair.objects.count() == 0


def test_a_monitor_is_refused_actions_with_403(client, monitor_user, seed_3355):
    token = token_for(monitor_user)
    response = client.post(
        "/api/v1/appliances/mse3355-1/ha",
        data=json.dumps({"secondary_name": "mse3355-2", "secondary_ip": "127.10.10.16", "secondary_password": "x"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 403
    assert "Monitor" in response.json()["detail"]
    assert client.get("/api/v1/appliances", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_an_operator_may_not_add_appliances_but_an_admin_may_try(client, operator_api, admin_user_):
    response = operator_api("post", "/appliances", {"name": "x", "ip": "127.10.10.50", "password": "pw"})
    assert response.status_code == 403
    # the admin passes the role check and reaches the agent, which is not there
    token = token_for(admin_user_)
    response = client.post(
        "/api/v1/appliances",
        data=json.dumps({"name": "x", "ip": "127.10.10.50", "password": "pw"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 422
    assert "Cannot reach the appliance at 127.10.10.50" in response.json()["detail"]
    assert not Appliance.objects.filter(name="x").exists()


def test_an_address_outside_the_agent_networks_is_never_contacted(client, admin_user_):
    token = token_for(admin_user_)
    response = client.post(
        "/api/v1/appliances",
        data=json.dumps({"name": "x", "ip": "10.10.10.12", "password": "pw"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 422
    assert "outside the networks the portal may call" in response.json()["detail"]


def test_switchover_before_the_pair_is_active_is_409_with_the_reasons(operator_api, seed_3355):
    primary, secondary = seed_3355
    services.ha_pair_create(primary=primary, secondary=secondary)
    response = operator_api("post", "/appliances/mse3355-1/ha/switchover", {"reason": "test"})
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "not answering" in detail and "PRIMARY_ACTIVE" in detail
    assert Job.objects.count() == 0


def test_preflight_lists_every_check(operator_api, seed_3355):
    primary, secondary = seed_3355
    services.ha_pair_create(primary=primary, secondary=secondary)
    body = operator_api("get", "/appliances/mse3355-1/ha/preflight?action=switchover").json()
    assert body["allowed"] is False
    labels = [check["label"] for check in body["checks"]]
    assert "Stabilisation window over" in labels and "Data replication in sync" in labels
    assert any("127.10.10.14" in line for line in body["consequences"])


def test_a_second_job_on_a_pair_is_409(operator_api, seed_3355):
    primary, secondary = seed_3355
    pair = services.ha_pair_create(primary=primary, secondary=secondary)
    Job.objects.create(kind="configure_ha", pair=pair, status="running")
    response = operator_api("patch", "/appliances/mse3355-1/ha", {"failover_type": "automatic"})
    assert response.status_code == 409
    assert "already running" in response.json()["detail"]


def test_maintenance_needs_a_reason_and_is_shown(operator_api, seed_3355):
    primary, secondary = seed_3355
    services.ha_pair_create(primary=primary, secondary=secondary)
    assert operator_api("post", "/appliances/mse3355-1/ha/maintenance", {"on": True}).status_code == 400
    response = operator_api("post", "/appliances/mse3355-1/ha/maintenance", {"on": True, "reason": "replacing a disk"})
    assert response.status_code == 200
    status = operator_api("get", "/appliances/mse3355-1/ha").json()
    assert status["maintenance"] == {
        "on": True,
        "by": "operator1",
        "reason": "replacing a disk",
        "since": status["maintenance"]["since"],
    }


def test_the_openapi_schema_is_served(client, operator_user):
    client.force_login(operator_user)
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert "/api/v1/appliances/{name}/ha/switchover" in response.json()["paths"]


def test_a_job_is_readable(operator_api):
    job = Job.objects.create(kind="start_services", status="failed", error="boom")
    body = operator_api("get", f"/jobs/{job.pk}").json()
    assert body["status"] == "failed" and body["error"] == "boom"
    assert operator_api("get", "/jobs/999999").status_code == 404


def test_the_openapi_document_and_docs_page_take_a_bearer_token(client, operator_user):
    token = token_for(operator_user)
    response = client.get("/api/v1/openapi.json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200 and "/api/v1/appliances/{name}/ha/events" in response.json()["paths"]
    assert client.get("/api/v1/docs", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    # without one: the document answers 401 in JSON, the page sends a browser to log in
    refused = client.get("/api/v1/openapi.json")
    assert refused.status_code == 401 and "Authentication required" in refused.json()["detail"]
    assert client.get("/api/v1/openapi.json", HTTP_AUTHORIZATION="Bearer mse_wrong").status_code == 401
    assert client.get("/api/v1/docs").status_code == 302


def test_every_operation_declares_its_refusals_with_the_error_schema(client, operator_user):
    client.force_login(operator_user)
    document = client.get("/api/v1/openapi.json").json()
    assert document["components"]["schemas"]["ErrorOut"]["required"] == ["detail"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            refusals = {code: r for code, r in operation["responses"].items() if code.startswith(("4", "5"))}
            assert "401" in refusals, (method, path)
            for code, response in refusals.items():
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, code)


@pytest.mark.parametrize(
    "path, body, words",
    [
        ("/ha/switchover", [None, None], "Input should be a valid dictionary"),  # not an object: nothing queued
        ("/ha/switchover", None, "reason"),  # no body at all
        ("/ha/switchover", {}, "reason: Field required"),
        ("/ha/switchover", {"reason": "   "}, "reason: String should match pattern"),  # blanks are no reason
        ("/ha/failback", {"reason": ""}, "reason: String should have at least 1 character"),
        ("/ha/recover", {"reason": 7}, "reason: Input should be a valid string"),
        ("/services/start", {"reason": "x", "force": True}, "force: Extra inputs are not permitted"),
        ("/ha/maintenance", {"on": "yes", "reason": "x"}, "on: Input should be a valid boolean"),
        ("/ha/maintenance", {"on": False}, "reason: Field required"),
    ],
)
def test_junk_or_wrong_typed_bodies_get_400_and_queue_nothing(operator_api, seed_3355, path, body, words):
    primary, secondary = seed_3355
    services.ha_pair_create(primary=primary, secondary=secondary)
    before = (Job.objects.count(), HAPair.objects.get().maintenance, HAEvent.objects.count())
    response = operator_api("post", f"/appliances/mse3355-1{path}", body)
    assert response.status_code == 400, response.content
    assert words in response.json()["detail"]
    assert (Job.objects.count(), HAPair.objects.get().maintenance, HAEvent.objects.count()) == before


@pytest.mark.parametrize(
    "body, words",
    [
        ({"name": "x", "ip": ">", "password": "pw"}, "ip: String should have at least 7 characters"),
        ({"name": "x", "ip": "abc.def.1.2", "password": "pw"}, "ip: String should match pattern"),
        ({"name": "x", "ip": "127.0.0.01", "password": "pw"}, "ip: String should match pattern"),
        ({"name": "x", "ip": "127.1.2.3/24", "password": "pw"}, "ip: String should"),
        ({"name": "x y", "ip": "127.1.2.3", "password": "pw"}, "name: String should match pattern"),
        ({"name": "x", "ip": "127.1.2.3", "password": "pw", "http_enabled": "true"}, "http_enabled: Input should be"),
    ],
)
def test_an_address_or_name_the_schema_refuses_never_reaches_a_query(admin_user_, client, body, words):
    token = token_for(admin_user_)
    response = client.post(
        "/api/v1/appliances",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 400 and words in response.json()["detail"], response.content
    assert not Appliance.objects.exists()


def test_a_junk_address_past_the_schema_is_refused_by_the_service_before_any_query(seed_3355):
    primary, _ = seed_3355
    with pytest.raises(services.ServiceError, match="is not an IPv4 address"):
        services.appliance_add(name="x", ip=">", password="pw")
    with pytest.raises(services.ServiceError, match="is not an IPv4 address"):
        services.ha_configure(primary=primary, secondary_name="s", secondary_ip=">", secondary_password="pw")
    assert not HAPair.objects.exists()


def test_a_pairs_events_come_in_keyset_pages_filtered_by_code_severity_and_time(operator_api, seed_3355):
    from datetime import UTC, datetime, timedelta

    primary, secondary = seed_3355
    pair = services.ha_pair_create(primary=primary, secondary=secondary)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    HAEvent.objects.filter(pair=pair).delete()
    for i in range(25):
        HAEvent.objects.create(
            pair=pair, appliance=primary, code="heartbeats_lost" if i % 5 == 0 else "active",
            description=f"event {i}", generated_by="mse3355-1", timestamp=start + timedelta(minutes=i),
            severity="critical" if i % 5 == 0 else "info",
        )  # fmt: skip
    seen, after = [], None
    while True:
        query = "?limit=10" + (f"&after={after}" if after else "")
        page = operator_api("get", f"/appliances/mse3355-1/ha/events{query}").json()
        seen += [event["description"] for event in page["events"]]
        after = page["next"]
        if after is None:
            break
    assert seen == [f"event {i}" for i in reversed(range(25))]  # newest first, each once
    lost = operator_api("get", "/appliances/mse3355-1/ha/events?code=heartbeats_lost").json()["events"]
    assert [e["description"] for e in lost] == ["event 20", "event 15", "event 10", "event 5", "event 0"]
    critical = operator_api("get", "/appliances/mse3355-1/ha/events?severity=critical&limit=2").json()
    assert len(critical["events"]) == 2 and critical["next"] is not None
    window = "since=2026-11-01T00:10:00Z&until=2026-11-01T00:13:00%2B00:00"
    timed = operator_api("get", f"/appliances/mse3355-1/ha/events?{window}").json()["events"]
    assert [e["description"] for e in timed] == ["event 12", "event 11", "event 10"]
    # refusals: a made-up cursor, a bad time, an unknown code, an empty window, an unpaired appliance
    assert operator_api("get", "/appliances/mse3355-1/ha/events?after=abc").status_code == 422
    assert operator_api("get", "/appliances/mse3355-1/ha/events?since=1700000000").status_code == 400
    assert operator_api("get", "/appliances/mse3355-1/ha/events?code=nope").status_code == 400
    assert (
        operator_api(
            "get", "/appliances/mse3355-1/ha/events?since=2026-11-01T00:00:00Z&until=2026-11-01T00:00:00Z"
        ).status_code
        == 422
    )
    assert operator_api("get", "/appliances/nobody/ha/events").status_code == 404


def test_a_pairing_refused_for_the_state_things_are_in_is_409_and_for_the_rules_422(operator_api, make_appliance):
    secondary = make_appliance(name="s", device_type="3355", hm_ip="127.10.20.2", role="secondary")
    first = make_appliance(name="p1", device_type="3355", hm_ip="127.10.20.3", vip="127.10.20.100", vip_prefixlen=24)
    make_appliance(name="p2", device_type="3355", hm_ip="127.10.20.4", vip="127.10.20.101", vip_prefixlen=24)
    make_appliance(name="small", device_type="3310", hm_ip="127.10.20.5", vip="127.10.20.102", vip_prefixlen=24)
    services.ha_pair_create(primary=first, secondary=secondary)
    body = {"secondary_name": "s", "secondary_ip": "127.10.20.2", "secondary_password": "s3cret-pass"}
    # s backs p1 already, and a 3355 backs one 3355 only: it may pass once p1's pair goes
    busy = operator_api("post", "/appliances/p2/ha", body)
    assert busy.status_code == 409 and "cannot back two MSE-3355" in busy.json()["detail"], busy.content
    # p1 is paired already: the same
    assert operator_api("post", "/appliances/p1/ha", body).status_code == 409
    # a rule of the request itself (the wait's range) with it: 422, it would never pass as it is
    bad = operator_api("post", "/appliances/p2/ha", {**body, "long_failover_wait": 1})
    assert bad.status_code == 422 and "Long Failover Wait must be between" in bad.json()["detail"], bad.content
    assert HAPair.objects.count() == 1 and Job.objects.count() == 0
