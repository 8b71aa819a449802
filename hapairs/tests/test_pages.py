"""The operator's pages through Django's test client: content, roles, HTMX partials,
refusals shown where they belong, and nothing written on bad input.

The walk through a real browser, real agents and a real worker is test_browser.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hapairs import services
from hapairs.agent_replies import HAInfo, PeerStatus
from hapairs.models import Appliance, HAEvent, HAPair, HeartbeatSample, Job
from hapairs.services.status import PollResult, status_record
from nodeagent import protocol

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def pair(make_appliance):
    primary = make_appliance(name="p1", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24)
    secondary = make_appliance(name="s1", hm_ip="127.10.10.16")
    return services.ha_pair_create(primary=primary, secondary=secondary)


def info(peer_ip, state, *, in_charge, generation=1, sync=100, status="Active", allowed=None):
    return HAInfo(
        node="n",
        running=True,
        role="",
        generation=generation,
        peers=[
            PeerStatus(
                peer_hm_ip=peer_ip,
                state=state,
                running=True,
                heartbeat="up",
                replication="up",
                sync_percent=sync,
                mean_heartbeat_ms=1.2,
                generation=generation,
                in_charge=in_charge,
                status=status,
                allowed_switch_at=allowed,
                instance_db_name="mseos3",
            )
        ],
    )


def healthy(pair, **kwargs):
    status_record(
        [
            PollResult(pair.primary_id, info("127.10.10.16", "PRIMARY_ACTIVE", in_charge=True, **kwargs)),
            PollResult(pair.secondary_id, info("127.10.10.15", "SECONDARY_ACTIVE", in_charge=False, **kwargs)),
        ]
    )


PAGES = [
    "/mse/",
    "/mse/add/",
    "/mse/p1/",
    "/mse/p1/ha/",
    "/mse/p1/ha/configure/",
    "/mse/p1/ha/switchover/",
    "/mse/p1/ha/delete/",
    "/ha/",
    "/jobs/",
    "/licenses/",
    "/mse/p1/hainfo.txt",
]


@pytest.mark.parametrize("url", PAGES)
def test_every_page_needs_a_login(client, pair, url):
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response["Location"]


@pytest.mark.parametrize("url", [u for u in PAGES if not u.endswith(".txt")])
def test_every_page_renders_for_a_monitor(client, pair, monitor_user, url):
    client.force_login(monitor_user)
    response = client.get(url)
    assert response.status_code in (200, 403), url
    if response.status_code == 200:
        assert b'<nav class="mainnav"' in response.content


def test_the_list_shows_the_seed_columns_and_the_configure_link(client, pair, make_appliance, operator_user):
    make_appliance(name="lonely", hm_ip="127.10.10.30")
    client.force_login(operator_user)
    page = client.get("/mse/").content.decode()
    for label in ("Device Name", "Device Type", "IP Address", "Version", "Reachability Status", "Secondary Server"):
        assert label in page
    assert 'href="/mse/lonely/ha/configure/">N/A (Click here to configure)</a>' in page
    # a paired primary shows its VIP as IP Address and its secondary's name
    row = page[page.index('href="/mse/p1/"') :]
    row = row[: row.index("</tr>")]
    assert "127.10.10.14" in row and "s1" in row and "127.10.10.15" not in row
    assert "Secondary of" in page


def test_the_list_filters_sorts_and_pages(client, make_appliance, operator_user):
    for n in range(60):
        make_appliance(name=f"node{n:02d}", hm_ip=f"127.30.0.{n + 2}", device_type="3310" if n % 2 else "3355")
    client.force_login(operator_user)
    page = client.get("/mse/").content.decode()
    assert "node00" in page and "node55" not in page and "1–50 of 60" in page
    page = client.get("/mse/?page=2").content.decode()
    assert "node55" in page and "node00" not in page
    page = client.get("/mse/?sort=-name").content.decode()
    assert page.index("node59") < page.index("node58")
    page = client.get("/mse/?device_type=3310&q=node0").content.decode()
    assert "node01" in page and "node02" not in page
    # bad parameters are ignored, never a 500
    for query in (
        "?page=abc",
        "?page=-4",
        "?sort=password_ciphertext",
        "?device_type=9999",
        "?paired=maybe",
        "?page=99999",
    ):
        assert client.get("/mse/" + query).status_code == 200, query


def test_the_list_needs_the_same_queries_whatever_the_fleet_size(client, make_appliance, operator_user):
    client.force_login(operator_user)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/mse/").status_code == 200
        return len(captured)

    for n in range(5):
        primary = make_appliance(name=f"a{n}", hm_ip=f"127.31.0.{n + 2}", vip=f"127.31.1.{n + 2}", vip_prefixlen=16)
        secondary = make_appliance(name=f"b{n}", hm_ip=f"127.31.2.{n + 2}")
        services.ha_pair_create(primary=primary, secondary=secondary)
    small = queries()
    for n in range(5, 40):
        primary = make_appliance(name=f"a{n}", hm_ip=f"127.31.0.{n + 2}", vip=f"127.31.1.{n + 2}", vip_prefixlen=16)
        secondary = make_appliance(name=f"b{n}", hm_ip=f"127.31.2.{n + 2}")
        services.ha_pair_create(primary=primary, secondary=secondary)
    assert queries() == small


def test_htmx_gets_only_the_table(client, pair, operator_user):
    client.force_login(operator_user)
    response = client.get("/mse/?sort=type", HTTP_HX_TARGET="mse-table", **HX)
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<div id="mse-table">') and "<html" not in body


def test_the_status_screen_shows_the_seed_fields_and_stops_polling_when_settled(client, pair, operator_user):
    healthy(pair)
    client.force_login(operator_user)
    page = client.get("/mse/p1/ha/").content.decode()
    for label in (
        "Status",
        "Heartbeats",
        "Data Replication",
        "Mean Heartbeat Response Time",
        "Events Log",
        "Event Description",
        "Generated By",
        "Timestamp",
        "Remarks",
        "Refresh Status",
        "PRIMARY_ACTIVE",
        "SECONDARY_ACTIVE",
        "Generation",
    ):
        assert label in page, label
    assert 'id="ha-status-text">Active' in page
    assert 'hx-trigger="every 2s"' not in page  # nothing moves: no polling
    response = client.get("/mse/p1/ha/", HTTP_HX_TARGET="ha-status", **HX)
    assert response.status_code == 286  # htmx stops polling


def test_the_events_log_shows_why_an_agent_decided_beside_the_event(client, pair, operator_user):
    why = protocol.explain("takeover.silence", "Takeover after 10.2 s without heartbeats; the wait is 10 s.",
                           silence_s=10.2, failover_wait_s=10.0)  # fmt: skip
    services.event_record(code="failover_shutting_down_primary", generated_by="Secondary", pair=pair, why=why)
    services.event_record(code="config_updated", generated_by="Primary", pair=pair)  # asked for: no why
    client.force_login(operator_user)
    page = client.get("/mse/p1/ha/").content.decode()
    assert "Requested by / why" in page
    assert (
        '<div class="why" data-rule="takeover.silence" title="silence_s=10.2, failover_wait_s=10.0">'
        "Why: Takeover after 10.2 s without heartbeats; the wait is 10 s.</div>"
    ) in page
    assert page.count('class="why"') == 1


def test_the_status_screen_polls_and_shows_progress_while_synchronising(client, pair, operator_user):
    status_record(
        [
            PollResult(
                pair.primary_id,
                info(
                    "127.10.10.16",
                    "PRIMARY_ACTIVE",
                    in_charge=True,
                    sync=66,
                    status="Primary and secondary server synchronization in progress (66% complete)",
                ),
            ),
        ]
    )
    client.force_login(operator_user)
    response = client.get("/mse/p1/ha/", HTTP_HX_TARGET="ha-status", **HX)
    body = response.content.decode()
    assert response.status_code == 200
    assert 'hx-trigger="every 2s"' in body and "<html" not in body
    assert "synchronization in progress (66% complete)" in body
    assert '<progress max="100" value="66"' in body


def test_the_status_chart_is_drawn_from_heartbeat_samples(client, pair, operator_user):
    now = timezone.now()
    HeartbeatSample.objects.bulk_create(
        [
            HeartbeatSample(pair=pair, at=now - timedelta(minutes=10 - i), mean_ms=ms)
            for i, ms in enumerate([1.0, 3.0, 2.0])
        ]
    )
    client.force_login(operator_user)
    page = client.get("/mse/p1/ha/").content.decode()
    assert '<svg class="spark"' in page and "1.0–3.0 ms" in page
    points = page.split('points="')[1].split('"')[0].split()
    assert len(points) == 3 and points[1].endswith(",2.0")  # the highest value is at the top


def test_polling_samples_the_mean_heartbeat_once_a_minute(pair):
    healthy(pair)
    healthy(pair)  # the same minute: no second sample
    assert HeartbeatSample.objects.filter(pair=pair).count() == 1
    HAPair.objects.filter(pk=pair.pk).update(status_updated_at=timezone.now() - timedelta(minutes=2))
    healthy(pair)
    assert list(HeartbeatSample.objects.filter(pair=pair).values_list("mean_ms", flat=True)) == [1.2, 1.2]


def test_a_monitor_sees_no_action_and_is_refused_by_the_server(client, pair, monitor_user):
    healthy(pair)
    client.force_login(monitor_user)
    page = client.get("/mse/p1/ha/").content.decode()
    for action in ("Switchover…", "Failback…", "Start maintenance", "Edit parameters"):
        assert action not in page
    assert "Add Mobility Services Engine" not in client.get("/mse/").content.decode()
    refused = [
        client.post("/mse/p1/ha/switchover/", {"reason": "x"}),
        client.post("/mse/p1/ha/failback/", {"reason": "x"}),
        client.post("/mse/p1/ha/maintenance/", {"on": "on", "reason": "x"}),
        client.post("/mse/p1/ha/delete/", {"confirm": "s1"}),
        client.post("/mse/p1/ha/recover/", {"reason": "x"}),
        client.post(
            "/mse/p1/ha/configure/", {"failover_type": "automatic", "failback_type": "manual", "failover_wait": 10}
        ),
        client.post("/mse/add/", {"name": "x", "ip": "127.0.0.9", "username": "admin", "password": "p"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert b"Your role (Monitor) may not" in refused[0].content
    assert not Job.objects.exists()
    assert not HAPair.objects.get().maintenance


def test_a_switchover_inside_the_window_is_refused_with_when(client, pair, operator_user):
    allowed = timezone.now() + timedelta(minutes=25)
    healthy(pair, allowed=allowed)
    client.force_login(operator_user)
    page = client.get("/mse/p1/ha/failback/").content.decode()
    assert "Pre-flight check" in page and "Stabilisation window over" in page
    assert "is allowed from" in page and "Confirm failback" not in page
    response = client.post("/mse/p1/ha/failback/", {"reason": "too early"})
    assert response.status_code == 409
    assert "Failback refused." in response.content.decode() and "allowed from" in response.content.decode()
    assert not Job.objects.exists()


def test_a_switchover_passes_the_preflight_and_queues_one_job(client, pair, operator_user):
    healthy(pair)
    client.force_login(operator_user)
    page = client.get("/mse/p1/ha/switchover/").content.decode()
    assert "Confirm switchover" in page and "✘" not in page
    response = client.post("/mse/p1/ha/switchover/", {"reason": "patching p1"})
    assert response.status_code == 302 and response["Location"] == "/mse/p1/ha/"
    job = Job.objects.get()
    assert (job.kind, job.reason, job.requested_by.username) == ("switchover", "patching p1", "operator1")
    # a second one while the first is queued is refused, saying which job holds the pair
    again = client.post("/mse/p1/ha/switchover/", {"reason": "again"})
    assert again.status_code == 409 and f"job #{job.pk}" in again.content.decode()
    assert Job.objects.count() == 1


def test_the_switchover_page_after_a_cancelled_one_says_what_ran_and_what_to_do(client, pair, operator_user):
    healthy(pair)
    Job.objects.create(pair=pair, kind="switchover", status="cancelled", error="Cancelled by alice. Done: nothing.")
    client.force_login(operator_user)
    page = client.get("/mse/p1/ha/switchover/").content.decode()
    assert '<section class="card after-cancel" role="status">' in page
    assert "was cancelled. Cancelled by alice. Done: nothing." in page
    assert "nothing needs undoing. Run the switchover again when ready." in page
    assert "Confirm switchover" in page  # the pair is healthy: it may be run again


def test_maintenance_needs_a_reason_and_shows_who(client, pair, operator_user):
    healthy(pair)
    client.force_login(operator_user)
    client.post("/mse/p1/ha/maintenance/", {"on": "on", "reason": ""})
    assert not HAPair.objects.get().maintenance
    client.post("/mse/p1/ha/maintenance/", {"on": "on", "reason": "replacing a disk"})
    page = client.get("/mse/p1/ha/").content.decode()
    assert "Maintenance mode" in page and "operator1" in page and "replacing a disk" in page
    assert "maintenance" in client.get("/mse/").content.decode()
    assert "Not in maintenance" in client.get("/mse/p1/ha/switchover/").content.decode()


def test_configure_shows_rule_violations_next_to_the_field_and_creates_nothing(client, make_appliance, operator_user):
    make_appliance(name="big", device_type="3350", hm_ip="127.10.10.22", vip="127.10.10.21", vip_prefixlen=24)
    make_appliance(name="small", device_type="3310", hm_ip="127.10.10.17")
    client.force_login(operator_user)
    form = {
        "secondary_name": "small",
        "secondary_ip": "127.10.10.17",
        "failover_type": "manual",
        "failback_type": "manual",
        "failover_wait": "10",
        "stage": "save",
    }
    response = client.post("/mse/big/ha/configure/", form)
    page = response.content.decode()
    assert response.status_code == 400
    message = "MSE-3310 cannot back up an MSE-3350: the secondary must be of equal or higher specification"
    assert message in page[page.index('id="err-secondary_name"') :][:400]
    assert not HAPair.objects.exists() and not Job.objects.exists()
    # the same check runs live (HTMX), answering with the rule check and the field's error
    live = client.post("/mse/big/ha/configure/", {**form, "stage": "validate"}, **HX).content.decode()
    assert (
        "This pairing would be refused" in live and 'id="err-secondary_name" class="error" hx-swap-oob="true"' in live
    )
    assert "<html" not in live


def test_configure_asks_for_confirmation_without_showing_the_password_then_pairs(client, make_appliance, operator_user):
    make_appliance(name="p3355", device_type="3355", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24)
    make_appliance(name="s3355", device_type="3355", hm_ip="127.10.10.16", password="old-secret")
    client.force_login(operator_user)
    form = {
        "secondary_name": "s3355",
        "secondary_ip": "127.10.10.16",
        "secondary_password": "new-secret-42",
        "failover_type": "automatic",
        "failback_type": "manual",
        "failover_wait": "10",
        "stage": "save",
    }
    ask = client.post("/mse/p3355/ha/configure/", form).content.decode()
    assert "Confirm the High Availability configuration" in ask and "new-secret-42" not in ask
    assert not HAPair.objects.exists()
    token = ask.split('name="token" value="')[1].split('"')[0]
    # a forged or stale token does nothing
    stale = client.post("/mse/p3355/ha/configure/", {"stage": "confirm", "token": "forged"})
    assert stale.status_code == 302 and not HAPair.objects.exists()
    done = client.post("/mse/p3355/ha/configure/", {"stage": "confirm", "token": token}).content.decode()
    assert (
        "Please Wait. High Availability configuration is being created at the Primary and Secondary servers. "
        "This will take a few seconds..." in done
    )
    assert 'http-equiv="refresh" content="3;url=/mse/p3355/ha/"' in done
    pair = HAPair.objects.get()
    assert (pair.failover_type, pair.secondary.get_password()) == ("automatic", "new-secret-42")
    assert Job.objects.get().kind == "configure_ha"
    # the token is spent: replaying it pairs nothing twice
    client.post("/mse/p3355/ha/configure/", {"stage": "confirm", "token": token})
    assert HAPair.objects.count() == 1 and Job.objects.count() == 1


def test_configure_of_a_paired_primary_updates_its_parameters(client, pair, operator_user):
    client.force_login(operator_user)
    page = client.get("/mse/p1/ha/configure/").content.decode()
    assert "Primary Health Monitor IP" in page and "Delete secondary…" in page
    response = client.post(
        "/mse/p1/ha/configure/",
        {"failover_type": "automatic", "failback_type": "manual", "failover_wait": "12", "reason": "go automatic"},
    )
    assert response.status_code == 302
    job = Job.objects.get()
    assert job.kind == "update_ha" and "Failover mode set to AUTOMATIC." in job.params["remarks"]
    bad = client.post(
        "/mse/p1/ha/configure/", {"failover_type": "sometimes", "failback_type": "manual", "failover_wait": "1"}
    )
    assert bad.status_code == 400 and Job.objects.count() == 1


def test_delete_secondary_needs_the_name_typed(client, pair, operator_user):
    client.force_login(operator_user)
    response = client.post("/mse/p1/ha/delete/", {"confirm": "p1", "reason": "decommission"})
    assert response.status_code == 400 and "Type the secondary" in response.content.decode()
    assert not Job.objects.exists()
    response = client.post("/mse/p1/ha/delete/", {"confirm": "s1", "reason": "decommission"})
    assert response.status_code == 302
    assert Job.objects.get().kind == "delete_secondary"


def test_add_refuses_an_unreachable_appliance_and_saves_nothing(client, admin_user_):
    client.force_login(admin_user_)
    response = client.post("/mse/add/", {"name": "ghost", "ip": "127.9.9.9", "username": "admin", "password": "pw"})
    page = response.content.decode()
    assert response.status_code == 200 and "Cannot reach the appliance at 127.9.9.9" in page
    assert not Appliance.objects.filter(name="ghost").exists()
    bad = client.post("/mse/add/", {"name": "bad name!", "ip": "10.0.0.300", "username": "admin", "password": ""})
    assert bad.status_code == 200 and not Appliance.objects.filter(name="bad name!").exists()


def test_agent_text_of_an_unreachable_appliance_says_so(client, pair, operator_user):
    client.force_login(operator_user)
    response = client.get("/mse/p1/hainfo.txt")
    assert response.status_code == 503 and response.content.decode().startswith("Cannot read it from p1 now")


def test_the_overview_lists_each_secondary_with_its_primaries(client, make_appliance, operator_user):
    secondary = make_appliance(name="mse3355-2", device_type="3355", hm_ip="127.10.10.16")
    one = make_appliance(name="mse3310", device_type="3310", hm_ip="127.10.10.17", vip="127.10.10.18", vip_prefixlen=24)
    two = make_appliance(name="mse3350", device_type="3350", hm_ip="127.10.10.22", vip="127.10.10.21", vip_prefixlen=24)
    services.ha_pair_create(primary=one, secondary=secondary)
    services.ha_pair_create(primary=two, secondary=secondary)
    client.force_login(operator_user)
    page = client.get("/ha/").content.decode()
    for label in (
        "Secondary Server Name",
        "Secondary HM IP Address",
        "Secondary Device Type",
        "Version",
        "Associated Primary MSEs",
        "Heartbeats",
    ):
        assert label in page
    row = page[page.index("mse3355-2") :]
    assert row.index("mse3310") < row.index("mse3350") and "MSE-3350" in row


def test_jobs_list_and_detail(client, pair, operator_user):
    job = services.ha_delete_secondary(pair=pair, by=operator_user, reason="tidy up")
    client.force_login(operator_user)
    assert "Delete secondary" in client.get("/jobs/").content.decode()
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "tidy up" in page and 'hx-trigger="every 1s"' in page  # pending: live
    live = client.get(f"/jobs/{job.pk}/", HTTP_HX_TARGET="job-progress", **HX)
    assert live.status_code == 200 and "<html" not in live.content.decode()
    Job.objects.filter(pk=job.pk).update(status="failed", error="mse2 refused: stale generation")
    done = client.get(f"/jobs/{job.pk}/", HTTP_HX_TARGET="job-progress", **HX)
    assert done.status_code == 286 and "stale generation" in done.content.decode()
    assert client.get("/jobs/99999/").status_code == 404
    assert HAEvent.objects.filter(job=job).exists()


def _activation_file(udi: str):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from django.core.files.uploadedfile import SimpleUploadedFile

    from hapairs import licenses

    key = Ed25519PrivateKey.generate()
    text = licenses.render_license_file(
        [licenses.LicenseSpec(feature=licenses.ACTIVATION_FEATURE, count=1, host_udi=udi)], key
    )
    return key, SimpleUploadedFile("act.lic", text.encode())


def test_license_upload_page_verifies_and_a_paired_vas_activation_cannot_be_removed(
    client, settings, make_appliance, operator_user
):
    from hapairs import licenses
    from hapairs.models import LicenseFile

    mse1 = make_appliance(
        name="mse1",
        device_type="VA-High",
        hm_ip="127.10.10.12",
        vip="127.10.10.11",
        vip_prefixlen=24,
        udi="AIR-MSE-VA-K9:V01:one",
    )
    mse2 = make_appliance(name="mse2", device_type="VA-High", hm_ip="127.10.10.13", udi="AIR-MSE-VA-K9:V01:two")
    key, upload = _activation_file(mse1.udi)
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = licenses.public_key_b64(key.public_key())
    client.force_login(operator_user)
    # bound to mse1: refused for mse2 with the reason next to the file, nothing stored
    wrong = client.post("/licenses/upload/", {"appliance": "mse2", "file": upload})
    assert wrong.status_code == 400 and "mse2" in wrong.content.decode() and not LicenseFile.objects.exists()
    upload.seek(0)
    done = client.post("/licenses/upload/", {"appliance": "mse1", "file": upload})
    assert done.status_code == 302
    page = client.get("/licenses/").content.decode()
    assert "MSE_ACTIVATION" in page and "Delete activation license" in page
    # activate mse2 too (another key is fine: both trusted), pair them, then try to remove mse1's activation
    key2, upload2 = _activation_file(mse2.udi)
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = ",".join(licenses.public_key_b64(k.public_key()) for k in (key, key2))
    assert client.post("/licenses/upload/", {"appliance": "mse2", "file": upload2}).status_code == 302
    Job.objects.update(status="succeeded")  # the install jobs have no worker here
    services.ha_pair_create(primary=mse1, secondary=mse2)
    jobs_before = Job.objects.count()
    response = client.post(f"/licenses/{LicenseFile.objects.get(appliance=mse1).pk}/remove/", follow=True)
    assert "delete the secondary from the pair first" in response.content.decode()
    assert Job.objects.count() == jobs_before


def test_recover_is_offered_only_for_a_primary_that_lost_its_configuration(client, pair, operator_user):
    healthy(pair)
    client.force_login(operator_user)
    assert "Recover primary…" not in client.get("/mse/p1/ha/").content.decode()
    refused = client.post("/mse/p1/ha/recover/", {"reason": "just in case"})
    assert refused.status_code == 409 and "there is nothing to recover" in refused.content.decode()
    assert not Job.objects.exists()
    # the primary answers but reports no pair any more
    lost = HAInfo(node="p1", running=True, role="primary", generation=0, peers=[])
    status_record([PollResult(pair.primary_id, lost)])
    page = client.get("/mse/p1/ha/").content.decode()
    assert "has lost its high availability configuration" in page and "Recover primary…" in page
    response = client.post("/mse/p1/ha/recover/", {"reason": "rebuilt p1"})
    assert response.status_code == 302
    assert Job.objects.get().kind == "recover_primary"


def test_the_license_summary_counts_what_is_held_not_what_was_removed(client, settings, make_appliance, operator_user):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hapairs import licenses
    from hapairs.models import License

    node = make_appliance(name="cas1", device_type="3355", hm_ip="127.10.10.40", udi="AIR-MSE-3355-K9:V01:cas1")
    key = Ed25519PrivateKey.generate()
    settings.MSEPORTAL_LICENSE_PUBLIC_KEYS = licenses.public_key_b64(key.public_key())
    for count in (100, 50):
        text = licenses.render_license_file(
            [licenses.LicenseSpec(feature="CAS_ELEMENTS", count=count, host_udi="ANY")], key
        )
        services.license_upload(appliance=node, filename=f"cas{count}.lic", data=text.encode())
    client.force_login(operator_user)
    summary = client.get("/mse/cas1/").content.decode()
    assert "CAS Elements 150" in summary
    License.objects.filter(count=50).update(status="removed")
    summary = client.get("/mse/cas1/").content.decode()
    assert "CAS Elements 100" in summary and "CAS Elements 150" not in summary


@pytest.mark.parametrize(
    "old,new",
    [
        ("/licences/", "/licenses/"),
        ("/licences/?page=2", "/licenses/?page=2"),
        ("/licences/upload/", "/licenses/upload/"),
        ("/licences/7/remove/", "/licenses/7/remove/"),
    ],
)
def test_the_old_spelling_of_the_license_pages_redirects_permanently(client, operator_user, old, new):
    client.force_login(operator_user)
    response = client.get(old)
    assert response.status_code == 301 and response["Location"] == new
    if "remove" not in old:
        assert client.get(old, follow=True).status_code == 200


def test_a_pairing_refused_between_save_and_confirm_says_why_and_creates_nothing(client, make_appliance, operator_user):
    primary = make_appliance(
        name="p3355", device_type="3355", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24
    )
    make_appliance(name="s3355", device_type="3355", hm_ip="127.10.10.16")
    client.force_login(operator_user)
    form = {
        "secondary_name": "s3355",
        "secondary_ip": "127.10.10.16",
        "failover_type": "manual",
        "failback_type": "manual",
        "failover_wait": "10",
        "stage": "save",
    }
    ask = client.post("/mse/p3355/ha/configure/", form).content.decode()
    token = ask.split('name="token" value="')[1].split('"')[0]
    # meanwhile other operators give s3355 its two primaries
    secondary = Appliance.objects.get(name="s3355")
    for name, kind, n in (("p3310", "3310", 17), ("p3350", "3350", 22)):
        other = make_appliance(
            name=name, device_type=kind, hm_ip=f"127.10.10.{n}", vip=f"127.10.11.{n}", vip_prefixlen=16
        )
        services.ha_pair_create(primary=other, secondary=secondary)
    response = client.post("/mse/p3355/ha/configure/", {"stage": "confirm", "token": token})
    page = response.content.decode()
    assert response.status_code == 400
    assert "s3355 already backs two primaries" in page[page.index('id="err-secondary_name"') :][:400]
    assert HAPair.objects.count() == 2 and not Job.objects.filter(kind="configure_ha").exists()
    assert not HAPair.objects.filter(primary=primary).exists()


JUNK = [
    {},
    {"stage": "confirm"},
    {"stage": "save", "secondary_name": "x" * 500, "secondary_ip": "not-an-ip", "failover_wait": "1e9"},
    {
        "stage": "validate",
        "secondary_name": "ok",
        "secondary_ip": "127.0.0.1",
        "failover_wait": "-5",
        "failover_type": "sideways",
    },
    {"on": "maybe", "reason": "r" * 5000, "confirm": "\x00", "page": "abc"},
    {"name": "../etc", "ip": "999.1.1.1", "username": "", "password": "x" * 10_000, "appliance": "nope"},
    # unicode at its edges: a right-to-left override, NULs, full-width digits, emoji, a combining flood
    {"name": "\u202emse\x00", "ip": "１２７.０.０.１", "secondary_name": "mse\u0301" * 300, "reason": "😀" * 600,
     "secondary_ip": "127.0.0.1\x00", "failover_wait": "١٠", "stage": "save", "on": "on", "confirm": "\ufeff"},
    {"reason": "x" * 1_000_000, "stage": "save"},  # big, under the upload limit
]  # fmt: skip
RAW_JUNK = [
    b"reason=%ff%fe%00&name=%ed%a0%80&stage=save",  # bytes that are no UTF-8 (a lone surrogate's)
    b"&&&==&reason&reason=a&reason=b" + b"&x=1" * 2000,  # repeated and empty fields, many of them
    b"reason=" + b"x" * (3 * 1024 * 1024),  # over DATA_UPLOAD_MAX_MEMORY_SIZE
]
POSTS = [
    "/mse/add/",
    "/mse/lonely/ha/configure/",
    "/mse/p1/ha/configure/",
    "/mse/p1/ha/switchover/",
    "/mse/p1/ha/failback/",
    "/mse/p1/ha/maintenance/",
    "/mse/p1/ha/delete/",
    "/mse/p1/ha/recover/",
    "/mse/p1/ha/refresh/",
    "/licenses/upload/",
    "/licenses/999/remove/",
    "/mse/nope/ha/configure/",
    "/jobs/999/cancel/",
    "/reports/new/",
    "/reports/999/edit/",
    "/reports/999/send/",
    "/reports/999/delete/",
    "/reports/deliveries/999/retry/",
]


@pytest.mark.parametrize("url", POSTS)
def test_junk_posted_anywhere_is_refused_cleanly_and_changes_nothing(client, pair, make_appliance, admin_user_, url):
    make_appliance(name="lonely", hm_ip="127.10.10.30")
    healthy(pair)
    client.force_login(admin_user_)
    before = (Appliance.objects.count(), HAPair.objects.count(), Job.objects.count())
    for body in JUNK:
        for htmx in ({}, {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "\x00" * 10}):
            response = client.post(url, body, **htmx)
            assert response.status_code < 500, (url, str(body)[:80], response.status_code)
    for raw in RAW_JUNK:
        response = client.generic("POST", url, raw, content_type="application/x-www-form-urlencoded")
        assert response.status_code < 500, (url, raw[:60], response.status_code)
    assert (Appliance.objects.count(), HAPair.objects.count(), Job.objects.count()) == before


def test_a_pending_job_can_be_cancelled_by_an_operator_only(client, pair, operator_user, monitor_user):
    job = services.ha_delete_secondary(pair=pair, by=operator_user, reason="tidy up")
    client.force_login(monitor_user)
    assert "Cancel this job" not in client.get(f"/jobs/{job.pk}/").content.decode()
    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 403
    client.force_login(operator_user)
    assert "Cancel this job" in client.get(f"/jobs/{job.pk}/").content.decode()
    client.post(f"/jobs/{job.pk}/cancel/")
    job.refresh_from_db()
    assert job.status == "cancelled"
    again = client.post(f"/jobs/{job.pk}/cancel/", follow=True).content.decode()
    assert "cannot be cancelled" in again


@pytest.mark.parametrize("action", ["switchover", "recover", "failback"])
def test_a_disruptive_action_needs_a_reason_on_the_page_too(client, pair, operator_user, action):
    healthy(pair)
    client.force_login(operator_user)
    for reason in ("", "   "):
        response = client.post(f"/mse/p1/ha/{action}/", {"reason": reason})
        page = response.content.decode()
        assert response.status_code in (200, 400), response.status_code
        if 'name="reason"' in page:  # (a failback the pre-flight refuses shows no form: nothing to confirm)
            assert "Say why: it is recorded with the job and in the events log." in page
    assert not Job.objects.exists()


GET_JUNK = [
    "?sort=%00&desc=maybe&page=-1&q=" + "x" * 5000,
    "?page=99999999999999999999999&cursor=junk&after=%ff",
    "?q=%ed%a0%80&device_type=%E2%80%AE&reachability=" + "ａ" * 100,
    "?events=-5&events_page=abc&cursor=" + "A" * 3000,
    "?days=1e99&format=%00&raw=1&status=weird&kind=[]",
]
GETS = ["/mse/", "/ha/", "/jobs/", "/licenses/", "/reports/", "/reports/preview/", "/mse/p1/ha/", "/mse/p1/"]


@pytest.mark.parametrize("url", GETS)
def test_junk_query_strings_on_any_page_are_ignored_or_refused_never_a_500(client, pair, operator_user, url):
    client.force_login(operator_user)
    for query in GET_JUNK:
        for htmx in ({}, {"HTTP_HX_REQUEST": "true"}):
            response = client.get(url + query, **htmx)
            assert response.status_code < 500, (url, query[:60], response.status_code)


def test_the_delete_page_offers_removal_from_the_primary_only_when_the_secondary_is_unreachable(
    client, pair, operator_user, django_capture_on_commit_callbacks
):
    healthy(pair)
    client.force_login(operator_user)
    assert 'id="one-side"' not in client.get("/mse/p1/ha/delete/").content.decode()  # both answer
    HAPair.objects.filter(pk=pair.pk).update(secondary_reachable=False)
    page = client.get("/mse/p1/ha/delete/").content.decode()
    assert "Remove the pairing from the primary only" in page and "stays PRIMARY_ACTIVE" in page
    unconfirmed = client.post("/mse/p1/ha/delete/", {"side": "primary", "reason": "disk died"})
    assert (
        unconfirmed.status_code == 400 and "Confirm that s1 is down or will be rebuilt" in unconfirmed.content.decode()
    )
    assert not Job.objects.exists()
    with django_capture_on_commit_callbacks():
        done = client.post("/mse/p1/ha/delete/", {"side": "primary", "reason": "disk died", "down_confirmed": "yes"})
    job = Job.objects.get()
    assert done.status_code == 302 and (job.kind, job.reason) == ("remove_from_primary", "disk died")


def test_removing_from_the_secondary_alone_is_refused_while_it_is_in_charge(pair, operator_user):
    HAPair.objects.filter(pk=pair.pk).update(
        primary_reachable=False, secondary_reachable=True, secondary_state="FAILOVER_ACTIVE", secondary_in_charge=True
    )
    pair.refresh_from_db()
    with pytest.raises(services.ServiceError) as refused:
        services.ha_remove_one_side(pair=pair, side="secondary", confirmed=True, by=operator_user, reason="p1 gone")
    assert "s1 is in charge (FAILOVER_ACTIVE)" in refused.value.message and refused.value.conflict
    assert not Job.objects.exists()


def test_the_frame_offers_the_audit_to_the_roles_that_may_open_it_from_one_query_of_groups(
    client, pair, make_user, django_user_model
):
    from hapairs.roles import ADMIN, MONITOR, OPERATOR

    root = django_user_model.objects.create_superuser("root1", password="a-long-root-pw-1")  # no group
    for user, role, offered in (
        (make_user(ADMIN, "a9"), ADMIN, True),
        (make_user(OPERATOR, "o9"), OPERATOR, True),
        (make_user(MONITOR, "m9"), MONITOR, False),
        (root, "", True),
    ):
        client.force_login(user)
        client.get("/ha/")
        with CaptureQueriesContext(connection) as queries:
            page = client.get("/ha/").content.decode()
        sql = " ".join(q["sql"] for q in queries)  # read now: the next request clears the log
        assert "auth_permission" not in sql, (role, "the frame looked up permissions")
        assert sql.count('FROM "auth_group"') == 1, (role, "one query of the groups")
        nav = page[page.index('<nav class="mainnav"') : page.index("</nav>")]
        assert ('href="/audit/"' in nav) is offered, role
        assert (client.get("/audit/").status_code == 200) is offered, role  # the page agrees
        whoami = page[page.index('<form class="whoami"') :]
        assert whoami[: whoami.index("</span>")].endswith(f"{user.username}" + (f" · {role}" if role else "")), role
