"""Webhooks per event code (MSEPORTAL_EVENT_WEBHOOKS): the events of the listed codes, the
portal's own and the agents' ingested ones, each queued once as a signed webhook delivery;
other codes none. Sending (signature, retries) is the alert webhook's (test_alerts)."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from hapairs import services
from hapairs.models import Delivery
from hapairs.services._common import event_record
from hapairs.tests.reportfleet import agent_event
from mseportal.envconf import ConfigError, env_event_webhooks

pytestmark = pytest.mark.django_db
HOOK_A, HOOK_B = "https://hooks.example.net/noc", "https://hooks.example.net/pager"


@pytest.fixture
def hooks(settings, django_capture_on_commit_callbacks):
    settings.ALERT_WEBHOOK_SECRET = "a-webhook-secret"
    settings.EVENT_WEBHOOKS = {"failover_active": [HOOK_A, HOOK_B], "appliance_added": [HOOK_A]}
    return settings.EVENT_WEBHOOKS


def test_an_agents_failover_is_posted_to_each_of_its_webhooks_once(hooks, make_appliance):
    primary = make_appliance(name="p1", hm_ip="127.31.0.2", vip="127.31.0.1", vip_prefixlen=24)
    secondary = make_appliance(name="s1", hm_ip="127.31.0.3")
    pair = services.ha_pair_create(primary=primary, secondary=secondary)
    Delivery.objects.all().delete()  # the adds' own (appliance_added)
    now = timezone.now()
    agent_event(pair, secondary, 7, "heartbeats_lost", at=now, generation=1)
    assert not Delivery.objects.exists()  # not a listed code
    agent_event(pair, secondary, 8, "failover_active", at=now, generation=2)
    agent_event(pair, secondary, 8, "failover_active", at=now, generation=2)  # pushed again: stored once
    sent = Delivery.objects.order_by("pk")
    assert [(d.kind, d.channel, d.recipients) for d in sent] == [("event", "webhook", [HOOK_A]),
                                                                  ("event", "webhook", [HOOK_B])]  # fmt: skip
    body = json.loads(sent[0].body_text)
    assert body["event"] == "failover_active" and body["seq"] == 8 and body["generation"] == 2
    assert body["appliance"] == "s1" and body["pair"] == {"primary": "p1", "secondary": "s1"}


def test_the_portals_own_events_of_a_listed_code_are_posted_and_others_not(hooks, make_appliance):
    make_appliance(name="lone")  # its add records appliance_added
    assert [json.loads(d.body_text)["event"] for d in Delivery.objects.all()] == ["appliance_added"]
    event_record(code="maintenance_on", generated_by="noc")
    assert Delivery.objects.count() == 1


def test_the_setting_is_codes_then_a_url_and_refused_otherwise():
    got = env_event_webhooks(
        {"H": f"failover_active, failback_complete={HOOK_A}; failover_active={HOOK_B}"}, "H"
    )  # fmt: skip
    assert got == {"failover_active": [HOOK_A, HOOK_B], "failback_complete": [HOOK_A]}
    assert env_event_webhooks({}, "H") == {}
    for bad in ("failover_active", f"={HOOK_A}", "failover_active=ftp://x", "failover_active=https://"):
        with pytest.raises(ConfigError, match="is not CODE"):
            env_event_webhooks({"H": bad}, "H")


def test_an_unknown_event_code_stops_the_portal_at_start_with_the_codes():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "DEBUG": "1", "MSEPORTAL_ALERT_WEBHOOK_SECRET": "s3cret",
           "MSEPORTAL_EVENT_WEBHOOKS": f"failover_active,failover_actve={HOOK_A}"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=Path(__file__).resolve().parents[2], env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "MSEPORTAL_EVENT_WEBHOOKS names event codes the portal does not have: failover_actve" in done.stderr
    assert "failover_active" in done.stderr.split("(the codes:")[1]
