"""Agent replies are checked before use, and signed event pushes are stored once each."""

from __future__ import annotations

import json

import pytest

from hapairs import agent_client, agent_replies, services
from hapairs.choices import JobKind
from hapairs.jobkeys import job_step_key
from hapairs.models import AuditEntry, HAEvent, HAPair, Job
from nodeagent import protocol

PATH = "/api/v1/ingest/events"


def event(seq, description="Active", peer="127.10.10.16", code="active", **extra):
    return {
        "seq": seq,
        "code": code,
        "description": description,
        "generated_by": "Primary",
        "timestamp": "2026-11-25T06:00:00Z",
        "remarks": "",
        "generation": 1,
        "peer": peer,
        **extra,
    }


# --- replies ------------------------------------------------------------------------------
def test_a_good_ha_info_is_parsed():
    info = agent_replies.parse_ha_info(
        {
            "node": "p",
            "running": True,
            "role": "primary",
            "generation": 3,
            "peers": [
                {
                    "hm_ip": "127.10.10.16",
                    "state": "PRIMARY_ACTIVE",
                    "heartbeat": "Up",
                    "data_replication": "Setting up",
                    "sync_percent": 66,
                    "mean_heartbeat_ms": 0.8,
                    "generation": 3,
                    "in_charge": True,
                    "status": "x",
                    "allowed_switch_at": None,
                }
            ],
        },
        source="p",
    )
    peer = info.peer("127.10.10.16")
    assert (peer.state, peer.heartbeat, peer.replication, peer.sync_percent) == (
        "PRIMARY_ACTIVE",
        "up",
        "setting_up",
        66,
    )


@pytest.mark.parametrize(
    "reply,complaint",
    [
        ([], "not a JSON object"),
        ({"peers": "x"}, "“peers” should be a list"),
        ({"peers": [{"hm_ip": "127.0.0.1", "state": "HAPPY"}]}, "not an HA state"),
        ({"peers": [{"hm_ip": "nope", "state": "PRIMARY_ACTIVE"}]}, "“hm_ip” should be an IPv4 address"),
        ({"peers": [{"hm_ip": "127.0.0.1", "sync_percent": 101}]}, "“sync_percent”"),
        ({"peers": [{"hm_ip": "127.0.0.1", "sync_percent": True}]}, "“sync_percent”"),
        ({"peers": [{"hm_ip": "127.0.0.1", "in_charge": "yes"}]}, "“in_charge”"),
        ({"peers": [{"hm_ip": "127.0.0.1", "mean_heartbeat_ms": "fast"}]}, "milliseconds"),
        ({"peers": [{"hm_ip": "127.0.0.1", "allowed_switch_at": "tomorrow"}]}, "ISO 8601"),
        ({"running": "yes"}, "“running”"),
        ({"peers": [{}, {}, {}]}, "at most two"),
    ],
)
def test_a_malformed_ha_info_is_refused_naming_the_field(reply, complaint):
    with pytest.raises(agent_client.AgentBadReply) as caught:
        agent_replies.parse_ha_info(reply, source="mse1")
    assert complaint in caught.value.message and caught.value.message.startswith("mse1 sent an unexpected reply")


@pytest.mark.parametrize(
    "reply,complaint",
    [
        ({"device_type": "3399", "version": "8.0.110.0", "hm_ip": "127.0.0.1"}, "device type '3399'"),
        ({"device_type": "3355", "version": "eight", "hm_ip": "127.0.0.1"}, "version 'eight'"),
        ({"device_type": "3355", "version": "8.0.110.0", "hm_ip": "127.0.0.1", "role": "boss"}, "role 'boss'"),
        ({"device_type": "3355", "version": "8.0.110.0", "hm_ip": "127.0.0.1", "netmask": "255.0.255.0"}, "netmask"),
        ({"device_type": "3355", "version": "8.0.110.0", "hm_ip": "127.0.0.1", "services": {}}, "“services”"),
        ({"version": "8.0.110.0", "hm_ip": "127.0.0.1"}, "“device_type” should be text"),
        (
            {"device_type": "3355", "version": "8.0.110.0", "hm_ip": "127.0.0.1", "direct_connect": "eth1"},
            "“direct_connect” should be an IPv4 address",
        ),  # fmt: skip
    ],
)
def test_a_malformed_server_info_is_refused(reply, complaint):
    with pytest.raises(agent_client.AgentBadReply) as caught:
        agent_replies.parse_server_info(reply, source="mse1")
    assert complaint in caught.value.message


def test_the_direct_connect_address_is_read_from_server_info():
    base = {"device_type": "3355", "version": "8.0.110.0", "hm_ip": "198.18.7.12"}
    found = agent_replies.parse_server_info({**base, "direct_connect": "198.19.7.1"}, source="mse1")
    assert found.direct_ip == "198.19.7.1"
    assert agent_replies.parse_server_info({**base, "direct_connect": None}, source="mse1").direct_ip is None


WHY = {"rule": "takeover.silence", "text": "Takeover after 3.1 s.", "inputs": {"silence_s": 3.1}}


def test_an_events_why_is_read_with_its_inputs_and_its_text_bounded():
    why = {**WHY, "text": "x" * 400, "inputs": {"silence_s": 3.1, "paths": "hm,direct", "witnesses": 0, "ok": True,
                                                "majority": None, "note": "y" * 300}}  # fmt: skip
    (parsed,) = agent_replies.parse_events([{**event(1), "why": why}], source="mse1")
    assert parsed.why["rule"] == "takeover.silence" and len(parsed.why["text"]) == 300
    assert parsed.why["inputs"] == {**why["inputs"], "note": "y" * 200}
    assert agent_replies.parse_events([event(1)], source="mse1")[0].why is None


@pytest.mark.parametrize(
    "events,complaint",
    [
        ({}, "“events” should be a list"),
        ([event(0)], "“seq”"),
        ([event(1, timestamp=None)], "no timestamp"),
        ([{**event(1), "description": 7}], "“description”"),
        ([{**event(1), "why": "because"}], "“why” should be an object"),
        ([{**event(1), "why": {**WHY, "rule": "Takeover Silence"}}], "should name its rule"),
        ([{**event(1), "why": {**WHY, "rule": "takeover"}}], "should name its rule"),  # not dotted
        ([{**event(1), "why": {**WHY, "rule": "a." + "b" * 64}}], "should name its rule"),
        ([{**event(1), "why": {**WHY, "text": ["x"]}}], "“text” should be text"),
        ([{**event(1), "why": {**WHY, "inputs": [1]}}], "inputs should be an object of at most 20"),
        ([{**event(1), "why": {**WHY, "inputs": {f"k{i}": i for i in range(21)}}}], "at most 20"),
        ([{**event(1), "why": {**WHY, "inputs": {"Silence": 1}}}], "is not a lower-case name"),
        ([{**event(1), "why": {**WHY, "inputs": {"silence_s": {"nested": 1}}}}], "should be text, a number"),
        ([{**event(1), "why": {**WHY, "inputs": {"silence_s": float("nan")}}}], "out of range"),
        ([{**event(1), "why": {**WHY, "inputs": {"silence_s": 2**70}}}], "out of range"),
    ],
)
def test_malformed_events_are_refused(events, complaint):
    with pytest.raises(agent_client.AgentBadReply, match=complaint):
        agent_replies.parse_events(events, source="mse1")


# --- the signed push endpoint --------------------------------------------------------------------
@pytest.fixture
def sender(make_appliance):
    primary = make_appliance(name="p", hm_ip="127.10.10.15", vip="127.10.10.14", vip_prefixlen=24, password="pw-p")
    secondary = make_appliance(name="s", hm_ip="127.10.10.16", password="pw-s")
    services.ha_pair_create(primary=primary, secondary=secondary)
    return primary


def push(client, body, *, password="pw-p", headers_override=None):
    raw = json.dumps(body).encode()
    headers = protocol.sign_request(password, "POST", PATH, raw)
    headers[protocol.HEADER_PROTOCOL] = str(protocol.PROTOCOL_VERSION)
    headers.update(headers_override or {})
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    return client.post(PATH, data=raw, content_type="application/json", **extra), headers


@pytest.mark.django_db
def test_a_signed_push_is_stored_once_even_if_sent_twice(client, sender, django_capture_on_commit_callbacks):
    body = {"node": "p", "hm_ip": "127.10.10.15", "events": [event(1, "Configuration successfully created"), event(2)]}
    with django_capture_on_commit_callbacks():
        first, _ = push(client, body)
        second, _ = push(client, body)  # a fresh signature, the same events
    assert first.status_code == 200 and first.json() == {"stored": 2}
    assert second.status_code == 200 and second.json() == {"stored": 0}
    stored = HAEvent.objects.filter(appliance=sender, seq__isnull=False)
    assert stored.count() == 2 and all(e.pair_id for e in stored)
    sender.refresh_from_db()
    assert sender.last_event_seq == 2
    # in the audit trail as the agent's write, once (the repeat stored nothing)
    (audit,) = AuditEntry.objects.filter(action="events.ingest")
    assert (audit.source, audit.actor_name, audit.object_repr) == ("agent", "agent 127.10.10.15", str(sender))
    assert audit.after == {"events_stored": 2, "seq_from": 1, "seq_to": 2}


@pytest.mark.django_db
def test_a_protocol_1_agents_push_is_refused_by_version_and_stores_nothing(client, sender):
    # given an agent that speaks protocol 1 (no X-MSE-Protocol header, events without codes)
    body = {"node": "p", "hm_ip": "127.10.10.15", "events": [{k: v for k, v in event(1).items() if k != "code"}]}
    # when it pushes, correctly signed
    response, _ = push(client, body, headers_override={protocol.HEADER_PROTOCOL: ""})
    # then the portal says which versions disagree, and stores nothing
    assert response.status_code == 400
    assert (
        "protocol mismatch" in response.json()["detail"]
        and f"protocol {protocol.PROTOCOL_VERSION}" in response.json()["detail"]
    )
    assert not HAEvent.objects.filter(seq__isnull=False).exists()


@pytest.mark.django_db
def test_an_event_with_a_code_the_portal_does_not_know_is_refused(client, sender):
    response, _ = push(client, {"node": "p", "hm_ip": "127.10.10.15", "events": [event(1, code="reboot_the_world")]})
    assert response.status_code == 400 and "reboot_the_world" in response.json()["detail"]
    assert not HAEvent.objects.filter(seq__isnull=False).exists()


@pytest.mark.django_db
def test_an_event_caused_by_a_job_is_stored_with_that_job(client, sender, django_capture_on_commit_callbacks):
    # given a job of the portal's, and an event echoing its step's key; another echoing a key that names no job
    pair = HAPair.objects.get(primary=sender)
    job = Job.objects.create(kind=JobKind.SWITCHOVER, pair=pair, reason="change CHG-7")
    key = job_step_key(job.pk, "switchover_invoke")
    events = [
        event(1, code="failover_active", cause={"key": key, "by": "op", "reason": "change CHG-7"}),
        event(2, cause={"key": "someone-elses-key"}),
        event(3, cause=None),
    ]
    with django_capture_on_commit_callbacks():
        response, _ = push(client, {"node": "p", "hm_ip": "127.10.10.15", "events": events})
    assert response.status_code == 200
    stored = {e.seq: e for e in HAEvent.objects.filter(appliance=sender, seq__isnull=False)}
    assert (stored[1].code, stored[1].job_id, stored[1].cause_key) == ("failover_active", job.pk, key)
    assert (stored[2].job_id, stored[2].cause_key) == (None, "someone-elses-key")
    assert (stored[3].job_id, stored[3].cause_key) == (None, "")


@pytest.mark.django_db
def test_a_replayed_push_is_refused(client, sender):
    body = {"node": "p", "hm_ip": "127.10.10.15", "events": [event(1)]}
    first, headers = push(client, body)
    assert first.status_code == 200
    again, _ = push(client, body, headers_override=headers)
    assert again.status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize(
    "password,hm_ip,expected",
    [("wrong-password", "127.10.10.15", 401), ("pw-p", "127.99.99.99", 401)],
)
def test_bad_signatures_and_unknown_senders_are_refused_and_store_nothing(client, sender, password, hm_ip, expected):
    response, _ = push(client, {"node": "p", "hm_ip": hm_ip, "events": [event(1)]}, password=password)
    assert response.status_code == expected
    assert not HAEvent.objects.filter(seq__isnull=False).exists()


@pytest.mark.django_db
def test_an_unsigned_push_is_refused(client, sender):
    response = client.post(
        PATH, data=json.dumps({"hm_ip": "127.10.10.15", "events": []}), content_type="application/json"
    )
    assert response.status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"hm_ip": 5}'])
def test_garbage_is_a_4xx(client, sender, raw):
    headers = protocol.sign_request("pw-p", "POST", PATH, raw)
    headers[protocol.HEADER_PROTOCOL] = str(protocol.PROTOCOL_VERSION)
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    response = client.post(PATH, data=raw, content_type="application/json", **extra)
    assert 400 <= response.status_code < 500


@pytest.mark.django_db
def test_malformed_events_in_a_signed_push_are_400_and_store_nothing(client, sender):
    response, _ = push(client, {"node": "p", "hm_ip": "127.10.10.15", "events": [event(1), {"seq": "x"}]})
    assert response.status_code == 400
    assert not HAEvent.objects.filter(seq__isnull=False).exists()
