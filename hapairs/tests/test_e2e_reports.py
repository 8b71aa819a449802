"""End to end: an operator's switchover through real agents and a real Celery worker (beat
on the database scheduler) reaches the alert recipients by SMTP and the webhook, saying
who asked for it and why; "Send now" is built in the request and sent by the worker.

The SMTP server and the webhook receiver run in this process on loopback; the worker is
pointed at them through EMAIL_URL and MSEPORTAL_ALERT_WEBHOOK_URL, as a deployment would be.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os

import pytest

from hapairs import services
from hapairs.choices import DeliveryStatus
from hapairs.models import Alert, Delivery, HAPair, Job
from hapairs.tests.e2e import AgentFarm, Worker, node_toml, wait_for
from hapairs.tests.loopback import third_octet
from hapairs.tests.mailutil import Inbox, WebhookReceiver

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SECRET = "e2e-webhook-secret"
_subnets = itertools.count(20 + os.getpid() % 150)


@pytest.fixture
def subnet():
    return f"127.63.{third_octet(_subnets)}"


@pytest.fixture
def inbox():
    box = Inbox().start()
    yield box
    box.stop()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def worker(tmp_path, live_server, inbox, webhook):
    started = Worker(
        tmp_path,
        {
            "MSEPORTAL_INGEST_URL": f"{live_server.url}/api/v1/ingest/events",
            "MSEPORTAL_POLL_SECONDS": "2",
            "MSEPORTAL_RESUME_SECONDS": "2",
            "MSEPORTAL_HA_SYNC_TIMEOUT_SECONDS": "90",
            "EMAIL_URL": f"smtp://127.0.0.1:{inbox.port}?timeout=5",
            "MSEPORTAL_ALERT_RECIPIENTS": "noc@example.net",
            "MSEPORTAL_ALERT_WEBHOOK_URL": webhook.url,
            "MSEPORTAL_ALERT_WEBHOOK_SECRET": SECRET,
        },
    ).start()
    yield started
    started.stop_checked()


def finished(job_id: int, worker: Worker) -> Job:
    job = wait_for(
        lambda: Job.objects.filter(pk=job_id, status__in=["succeeded", "failed"]).first(),
        timeout=120,
        what=f"job {job_id}",
    )
    assert job.status == "succeeded", (job.error, worker.tail())
    return job


def test_a_switchover_alerts_by_mail_and_webhook_and_send_now_goes_through_the_worker(
    tmp_path, subnet, inbox, webhook, worker, operator_user, settings
):
    p_ip, s_ip, vip = f"{subnet}.15", f"{subnet}.16", f"{subnet}.14"
    farm = AgentFarm(
        tmp_path,
        node_toml("seoul-1", "3355", "primary", p_ip, "pw-p", vip=vip)
        + node_toml("seoul-2", "3355", "secondary", s_ip, "pw-s"),
        port=settings.AGENT_PORT,
    ).start()
    try:
        primary = services.appliance_add(name="seoul-1", ip=p_ip, password="pw-p", by=operator_user)
        _, job = services.ha_configure(
            primary=primary,
            secondary_name="seoul-2",
            secondary_ip=s_ip,
            secondary_password="pw-s",
            by=operator_user,
            reason="new HA pair",
        )
        finished(job.pk, worker)
        pair = wait_for(
            lambda: HAPair.objects.filter(
                primary_state="PRIMARY_ACTIVE", secondary_state="SECONDARY_ACTIVE", sync_percent=100
            ).first(),
            timeout=60,
            what="the pair to be Active",
        )

        # When the operator switches over, with a reason
        job = services.ha_switchover(pair=pair, by=operator_user, reason="Power supply swap on seoul-1, CHG-7")
        finished(job.pk, worker)

        # Then the alert recipients get one mail saying who and why
        [alert] = [m for m in inbox.wait_for(1, timeout=30) if "Failover on" in m.subject]
        assert (
            alert.subject == "[mseportal] Failover on seoul-1 → seoul-2: seoul-2 is in charge — requested by operator1"
        )
        assert f"Who:   operator1 (job #{job.pk}, Switchover)" in alert.text
        assert "Why:   “Power supply swap on seoul-1, CHG-7”" in alert.text
        # and the webhook one signed POST
        wait_for(lambda: webhook.posts, timeout=30, what="the webhook")
        post = webhook.posts[0]
        signed = post.headers["x-mseportal-timestamp"].encode() + b"." + post.body
        assert (
            post.headers["x-mseportal-signature"]
            == "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        )
        payload = json.loads(post.body)
        assert (payload["alert"], payload["actor"]["name"], payload["actor"]["reason"]) == (
            "failover",
            "operator1",
            "Power supply swap on seoul-1, CHG-7",
        )
        assert Alert.objects.get(kind="failover").status == "sent"

        # When the operator sends a report now, the worker delivers it
        schedule = services.report_schedule_create(name="NOC", recipients="noc@example.net", by=operator_user)
        delivery = services.report_send_now(schedule=schedule, by=operator_user)
        report = wait_for(
            lambda: next((m for m in inbox.messages if m.subject.startswith("[mseportal] NOC, ")), None),
            timeout=30,
            what="the report",
        )
        assert (
            f"Failover — requested by operator1 (job #{job.pk}): “Power supply swap on seoul-1, CHG-7”" in report.text
        )
        assert "seoul-1 → seoul-2  [Failed over]" in report.text
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.SENT and delivery.attempts == 1
        assert Delivery.objects.filter(kind="alert", channel="email", status="sent").count() == 1
    finally:
        farm.stop()
