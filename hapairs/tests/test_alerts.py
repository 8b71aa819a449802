"""Alerts: sent at once when the services record a failover, failback, split brain,
unreachable node, failed job or expiring license — after commit, through a real SMTP
server and a real webhook receiver on loopback — saying who acted and why, and rate
limited per pair and kind.

Celery runs eagerly (the tasks, their autoretry and the mail backend are the real ones).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from hapairs import selectors, services
from hapairs.choices import AlertStatus, DeliveryStatus, EventCode, JobKind, JobStatus
from hapairs.jobkeys import job_step_key
from hapairs.models import Alert, Delivery, HAEvent, Job
from hapairs.services.status import PollResult, status_record
from hapairs.tests.mailutil import Inbox, WebhookReceiver, point_mail_at
from hapairs.tests.reportfleet import agent_event, healthy, license, peer_info

pytestmark = pytest.mark.django_db

SECRET = "webhook-secret-for-tests"


@pytest.fixture
def inbox(settings):
    box = Inbox().start()
    point_mail_at(settings, box.port)
    settings.ALERT_RECIPIENTS = ["noc@example.net"]
    settings.ALERT_WEBHOOK_URL = ""
    yield box
    box.stop()


@pytest.fixture
def pair(make_appliance):
    primary = make_appliance(name="seoul-p", hm_ip="127.43.0.11", vip="127.43.0.10", vip_prefixlen=24)
    secondary = make_appliance(name="seoul-s", hm_ip="127.43.0.12")
    made = services.ha_pair_create(primary=primary, secondary=secondary)
    healthy(made)
    made.refresh_from_db()
    return made


def test_an_operators_failover_sends_one_alert_saying_who_and_why(
    pair, operator_user, inbox, eager, django_capture_on_commit_callbacks
):
    job = services.ha_switchover(pair=pair, by=operator_user, reason="Firmware upgrade of seoul-p, change CHG-1042")

    # the agents' event arrives: stored, and nothing sent until the transaction commits
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        agent_event(
            pair,
            pair.secondary,
            1,
            EventCode.FAILOVER_ACTIVE,
            at=timezone.now(),
            generation=2,
            cause_key=job_step_key(job.pk, "switchover_invoke"),
        )
    assert len(callbacks) == 1 and not inbox.messages and not Alert.objects.exists()
    for callback in callbacks:
        with django_capture_on_commit_callbacks(execute=True):
            callback()

    [received] = inbox.wait_for(1)
    assert received.rcpt_tos == ["noc@example.net"]
    assert received.subject == (
        "[mseportal] Failover on seoul-p → seoul-s: seoul-s is in charge — requested by operator1"
    )
    assert f"Who:   operator1 (job #{job.pk}, Switchover)" in received.text
    assert "Why:   “Firmware upgrade of seoul-p, change CHG-1042”" in received.text
    assert "What:  Instance is in failover active state" in received.text
    assert (
        "<strong>operator1</strong>" in received.html
        and "Firmware upgrade of seoul-p, change CHG-1042" in received.html
    )
    alert = Alert.objects.get()
    assert (alert.kind, alert.status, alert.actor, alert.reason, alert.job_id) == (
        "failover",
        AlertStatus.SENT,
        "operator1",
        "Firmware upgrade of seoul-p, change CHG-1042",
        job.pk,
    )

    # the same event again (a poll after the push), and the other node's view: one alert
    with django_capture_on_commit_callbacks(execute=True):
        agent_event(pair, pair.secondary, 1, EventCode.FAILOVER_ACTIVE, at=timezone.now(), generation=2)
        services.alert_queue(kind="failover", event=HAEvent.objects.get(code=EventCode.FAILOVER_ACTIVE))
    assert len(inbox.messages) == 1 and Alert.objects.count() == 1


def test_an_automatic_failover_says_the_agents_did_it_themselves(
    pair, inbox, eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        agent_event(pair, pair.secondary, 1, EventCode.FAILOVER_ACTIVE, at=timezone.now(), generation=2)

    [received] = inbox.wait_for(1)
    assert received.subject.endswith("— automatic failover, by the agents")
    assert "Who:   nobody: the agents did it themselves (automatic failover by the agents)" in received.text
    assert "heartbeats from seoul-p were missing for the Long Failover Wait (10 s)" in received.text
    assert "Why:" not in received.text
    assert Alert.objects.get().actor == "the agents"


def test_a_flapping_pair_is_rate_limited_and_the_next_alert_says_how_many_were_held_back(
    pair, inbox, eager, settings, django_capture_on_commit_callbacks
):
    settings.ALERT_MIN_INTERVAL_SECONDS = 2
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):  # over, back, over, back, over within seconds
        for seq, generation in enumerate(range(2, 7), start=1):
            description = EventCode.FAILOVER_ACTIVE if generation % 2 == 0 else EventCode.FAILBACK_COMPLETE
            agent_event(pair, pair.secondary, seq, description, at=now + timedelta(seconds=seq), generation=generation)

    # one failover and one failback went out; two failovers and a failback were held back
    assert [m.subject.split(":")[0] for m in inbox.wait_for(2)] == [
        "[mseportal] Failover on seoul-p → seoul-s",
        "[mseportal] Failback on seoul-p → seoul-s",
    ]
    assert list(Alert.objects.order_by("pk").values_list("kind", "status")) == [
        ("failover", "sent"),
        ("failback", "sent"),
        ("failover", "suppressed"),
        ("failback", "suppressed"),
        ("failover", "suppressed"),
    ]
    # each decision says why, and the Events Log shows it beside the event that raised it
    decisions = [a.decision for a in Alert.objects.order_by("pk")]
    assert [d["rule"] for d in decisions] == ["alert.sent", "alert.sent"] + ["alert.rate_limit"] * 3
    assert decisions[4]["text"].startswith("Alert held back: 3 in the last 2 seconds for this subject; one was sent")
    assert decisions[4]["inputs"]["held_back"] == 2 and decisions[4]["inputs"]["interval_s"] == 2
    shown = [e["alert_decision"] for e in selectors.pair_status(pair)["events"] if e["alert_decision"]]
    assert [d["rule"] for d in shown] == ["alert.rate_limit"] * 3 + ["alert.sent"] * 2  # newest first
    assert shown[0]["text"] == decisions[4]["text"]

    time.sleep(2.1)  # the interval passes; the pair fails over once more
    with django_capture_on_commit_callbacks(execute=True):
        agent_event(pair, pair.secondary, 6, EventCode.FAILBACK_COMPLETE, at=timezone.now(), generation=7)
        agent_event(pair, pair.secondary, 7, EventCode.FAILOVER_ACTIVE, at=timezone.now(), generation=8)
    assert len(inbox.wait_for(4)) == 4
    failback, failover = inbox.messages[2:]
    assert "Also: 1 more “failback” alert for this pair was held back since" in failback.text
    assert "Also: 2 more “failover” alerts for this pair were held back since" in failover.text
    assert "(at most one every 2 seconds)" in failover.text
    assert "2 more “failover” alerts for this pair were held back" in failover.html
    assert Alert.objects.filter(status="sent").order_by("pk").last().suppressed_before == 2
    assert Alert.objects.order_by("pk").last().decision["text"].endswith("; 2 held back before it.")


def test_another_pair_is_not_held_back_by_the_first(
    pair, make_appliance, inbox, eager, django_capture_on_commit_callbacks
):
    other = services.ha_pair_create(
        primary=make_appliance(name="busan-p", hm_ip="127.43.1.11", vip="127.43.1.10", vip_prefixlen=24),
        secondary=make_appliance(name="busan-s", hm_ip="127.43.1.12"),
    )
    healthy(other)
    with django_capture_on_commit_callbacks(execute=True):
        agent_event(pair, pair.secondary, 1, EventCode.FAILOVER_ACTIVE, at=timezone.now(), generation=2)
        agent_event(other, other.secondary, 1, EventCode.FAILOVER_ACTIVE, at=timezone.now(), generation=2)
    assert len(inbox.wait_for(2)) == 2


def test_the_webhook_receives_a_signed_post_and_is_retried_on_a_server_error(
    pair, inbox, eager, settings, django_capture_on_commit_callbacks
):
    receiver = WebhookReceiver(statuses=[503]).start()  # down once, then answers 204
    settings.ALERT_WEBHOOK_URL, settings.ALERT_WEBHOOK_SECRET = receiver.url, SECRET
    try:
        with django_capture_on_commit_callbacks(execute=True):  # both nodes claim the VIP
            status_record(
                [
                    PollResult(pair.primary_id, peer_info(pair.secondary.hm_ip, "PRIMARY_ACTIVE", in_charge=True)),
                    PollResult(pair.secondary_id, peer_info(pair.primary.hm_ip, "FAILOVER_ACTIVE", in_charge=True)),
                ]
            )
    finally:
        receiver.stop()

    assert len(receiver.posts) == 2  # the 503, then the retry
    for post in receiver.posts:
        timestamp, body = post.headers["x-mseportal-timestamp"], post.body
        expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert post.headers["x-mseportal-signature"] == f"sha256={expected}"
        assert post.headers["content-type"] == "application/json" and post.path == "/hooks/mse"
        assert abs(int(timestamp) - time.time()) < 60
    assert receiver.posts[0].body == receiver.posts[1].body
    assert receiver.posts[0].headers["x-mseportal-delivery"] == receiver.posts[1].headers["x-mseportal-delivery"]
    payload = json.loads(receiver.posts[1].body)
    assert payload["alert"] == "split_brain"
    assert payload["pair"] == {"primary": "seoul-p", "secondary": "seoul-s"}
    assert payload["actor"]["kind"] == "portal" and payload["event"]["severity"] == "critical"
    assert "take the VIP down on the secondary" in payload["event"]["remarks"]
    webhook = Delivery.objects.get(channel="webhook")
    assert (webhook.status, webhook.attempts) == (DeliveryStatus.SENT, 2)
    assert "HTTP 503" in webhook.attempt_log[0]["error"]
    # and the e-mail went out too
    [received] = inbox.wait_for(1)
    assert received.subject.startswith("[mseportal] Split brain on seoul-p → seoul-s: both nodes hold")


def test_a_tampered_body_does_not_match_the_signature(pair, inbox, eager, settings, django_capture_on_commit_callbacks):
    receiver = WebhookReceiver().start()
    settings.ALERT_WEBHOOK_URL, settings.ALERT_WEBHOOK_SECRET = receiver.url, SECRET
    try:
        with django_capture_on_commit_callbacks(execute=True):
            agent_event(pair, pair.secondary, 1, EventCode.FAILOVER_ACTIVE, at=timezone.now(), generation=2)
    finally:
        receiver.stop()
    [post] = receiver.posts
    timestamp = post.headers["x-mseportal-timestamp"]
    tampered = post.body.replace(b"seoul-p", b"evil-p")
    forged = hmac.new(SECRET.encode(), timestamp.encode() + b"." + tampered, hashlib.sha256).hexdigest()
    assert post.headers["x-mseportal-signature"] != f"sha256={forged}"
    wrong_key = hmac.new(b"another-secret", timestamp.encode() + b"." + post.body, hashlib.sha256).hexdigest()
    assert post.headers["x-mseportal-signature"] != f"sha256={wrong_key}"
    assert json.loads(post.body)["actor"]["says"] == "automatic failover by the agents"


def test_a_failed_job_alerts_with_who_asked_for_it_and_why(
    pair, operator_user, inbox, eager, django_capture_on_commit_callbacks
):
    job = services.ha_update(
        pair=pair,
        failover_type="automatic",
        failback_type="manual",
        failover_wait=20,
        by=operator_user,
        reason="Make seoul fail over by itself",
    )
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.FAILED, error="seoul-s did not answer (gave up after 5 attempts)"
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.job_failed_event(job=job)

    [received] = inbox.wait_for(1)
    assert received.subject == (
        f"[mseportal] Update high availability parameters failed on seoul-p → seoul-s (job #{job.pk}) "
        "— requested by operator1"
    )
    assert f"Who:   operator1 (job #{job.pk}, Update high availability parameters)" in received.text
    assert "Why:   “Make seoul fail over by itself”" in received.text
    assert "Error: seoul-s did not answer (gave up after 5 attempts)" in received.text
    assert job.kind == JobKind.UPDATE_HA


def test_a_node_that_stops_answering_alerts_once(pair, inbox, eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        status_record([PollResult(pair.secondary_id, None, error="timed out after 5 s")])
        status_record([PollResult(pair.secondary_id, None, error="timed out after 5 s")])  # still down: no news

    [received] = inbox.wait_for(1)
    assert received.subject == ("[mseportal] seoul-s is not answering the portal — detected by the portal's polling")
    assert "Remarks: timed out after 5 s" in received.text
    assert HAEvent.objects.filter(description="seoul-s is not answering the portal").count() == 1


def test_many_nodes_lost_at_once_send_one_alert_naming_them(
    make_appliance, inbox, eager, django_capture_on_commit_callbacks
):
    from hapairs.models import Appliance
    from hapairs.services.status import MASS_UNREACHABLE

    nodes = [make_appliance(name=f"edge{n}", hm_ip=f"127.44.0.{n + 10}") for n in range(MASS_UNREACHABLE + 3)]
    Appliance.objects.update(reachability="reachable")
    with django_capture_on_commit_callbacks(execute=True):
        status_record([PollResult(node.pk, None, error="connection refused") for node in nodes])

    [received] = inbox.wait_for(1)
    assert received.subject.startswith(f"[mseportal] {len(nodes)} nodes stopped answering the portal at once")
    assert "edge0" in received.text and "edge7" in received.text
    # every node still has its own line in the events log
    assert HAEvent.objects.filter(code=EventCode.NODE_UNREACHABLE).count() == len(nodes)
    assert Alert.objects.count() == 1


def test_an_expiring_license_alerts_once_per_step(pair, inbox, eager, settings, django_capture_on_commit_callbacks):
    settings.ALERT_MIN_INTERVAL_SECONDS = 0  # the steps are days apart; here they run a moment apart
    evaluation = license(pair.secondary, "CAS_ELEMENTS", days=12, evaluation=True)
    license(pair.primary, "WIPS_MONITOR", days=45)  # not yet
    today = timezone.localdate()
    with django_capture_on_commit_callbacks(execute=True):
        assert len(services.license_expiry_check(today=today)) == 1
        assert services.license_expiry_check(today=today) == []  # the next day's run: nothing new
        assert services.license_expiry_check(today=today + timedelta(days=1)) == []
        week_before = services.license_expiry_check(today=today + timedelta(days=6))

    assert [alert.key for alert in week_before] == [f"license:{evaluation.pk}:7d"]
    first, second = inbox.wait_for(2)
    assert first.subject.startswith("[mseportal] License CAS_ELEMENTS on seoul-s: 12 days left")
    assert "License: CAS_ELEMENTS (L-CAS_ELEM) × 100, evaluation" in first.text
    assert second.subject.startswith("[mseportal] License CAS_ELEMENTS on seoul-s: 6 days left")


def test_schedules_that_also_take_alerts_add_their_recipients(
    pair, operator_user, inbox, eager, settings, django_capture_on_commit_callbacks
):
    settings.ALERT_RECIPIENTS = []
    services.report_schedule_create(name="NOC", recipients="noc@example.net, Duty@Example.net", also_alerts=True)
    services.report_schedule_create(name="Managers", recipients="boss@example.net")
    with django_capture_on_commit_callbacks(execute=True):
        agent_event(pair, pair.secondary, 1, EventCode.FAILOVER_ACTIVE, at=timezone.now(), generation=2)
    [received] = inbox.wait_for(1)
    assert sorted(received.rcpt_tos) == ["Duty@Example.net", "noc@example.net"]


def test_with_nobody_to_tell_the_alert_is_recorded_and_nothing_sent(
    pair, settings, eager, django_capture_on_commit_callbacks
):
    settings.ALERT_RECIPIENTS, settings.ALERT_WEBHOOK_URL = [], ""
    with django_capture_on_commit_callbacks(execute=True):
        agent_event(pair, pair.secondary, 1, EventCode.FAILOVER_ACTIVE, at=timezone.now(), generation=2)
    assert Alert.objects.get().status == AlertStatus.NOBODY and not Delivery.objects.exists()
    assert Alert.objects.get().decision["rule"] == "alert.no_recipients"


def test_a_heartbeat_path_down_is_one_warning_alert_with_the_remedy_and_changes_nothing(
    pair, inbox, eager, django_capture_on_commit_callbacks
):
    # given an Active pair; when both nodes report their direct link quiet (the LAN still carries heartbeats)
    before = (pair.primary_state, pair.secondary_state, pair.last_failover_at)
    with django_capture_on_commit_callbacks(execute=True):
        agent_event(pair, pair.secondary, 1, EventCode.HEARTBEAT_PATH_DOWN, at=timezone.now(), generation=1)
        agent_event(pair, pair.primary, 1, EventCode.HEARTBEAT_PATH_DOWN, at=timezone.now(), generation=1)
    # then one alert says which pair, that nothing failed over, and what to check
    [received] = inbox.wait_for(1)
    assert received.subject.startswith("[mseportal] Heartbeat path down on seoul-p → seoul-s")
    assert "nothing failed over" in received.text and "cable" in received.text
    assert Alert.objects.filter(kind="heartbeat_path").count() == 1
    # and the events are warnings that change no state
    assert set(HAEvent.objects.filter(code=EventCode.HEARTBEAT_PATH_DOWN).values_list("severity", flat=True)) == {
        "warning"
    }
    pair.refresh_from_db()
    assert (pair.primary_state, pair.secondary_state, pair.last_failover_at) == before


def test_a_takeover_the_witnesses_refused_is_a_partition_alert_naming_the_rule(
    pair, inbox, eager, django_capture_on_commit_callbacks
):
    # when the secondary reports that the witnesses refused its takeover
    with django_capture_on_commit_callbacks(execute=True):
        agent_event(pair, pair.secondary, 1, EventCode.TAKEOVER_REFUSED, at=timezone.now(), generation=1)
    # then one alert says it is a partition, that the pair did not split, and what to do
    [received] = inbox.wait_for(1)
    assert received.subject.startswith("[mseportal] Partition on seoul-p → seoul-s: Takeover refused by the witnesses")
    assert "never two owners" in received.text and "Do not switch over by hand" in received.text
    assert Alert.objects.get().kind == "partition"
