"""nodeagent.protocol: the one vocabulary of the wire, its versions, causes and old events."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from nodeagent import protocol as P
from nodeagent.client import VERSION_REFUSED, AgentClient
from nodeagent.config import parse_fleet
from nodeagent.node import Node

from .agentutil import free_subnet


def test_every_event_code_has_display_words_and_every_v1_text_maps_to_its_code():
    assert set(P.EVENT_TEXT) == set(P.EventCode)
    assert len(set(P.EVENT_TEXT.values())) == len(P.EVENT_TEXT), "two codes must not read the same"
    for code, text in P.EVENT_TEXT.items():
        assert code.text == text and P.V1_TEXT_CODES[text] is code
    assert P.V1_TEXT_CODES["Licence installed"] is P.EventCode.LICENSE_INSTALLED  # the old spelling


@pytest.mark.parametrize("theirs", [None, "", "1", "2", "3", "5", "three", 3.5])
def test_any_other_version_is_a_mismatch_that_names_both(theirs):
    with pytest.raises(P.ProtocolMismatch) as refused:
        P.check_version(theirs, who="the portal")
    assert "the portal speaks" in str(refused.value) and f"protocol {P.PROTOCOL_VERSION}" in str(refused.value)


def test_our_version_passes_as_header_text_or_number():
    P.check_version(str(P.PROTOCOL_VERSION), who="x")
    P.check_version(P.PROTOCOL_VERSION, who="x")


def test_a_v1_event_on_disk_gets_its_code_and_an_unknown_text_is_dropped():
    v1 = {
        "seq": 4,
        "description": "Instance is in failover active state",
        "generated_by": "Secondary",
        "timestamp": "2026-11-01T00:00:00+00:00",
        "remarks": "",
        "generation": 2,
        "peer": "127.0.0.2",
    }
    upgraded = P.event_upgraded(v1)
    assert upgraded is not None
    assert (upgraded["code"], upgraded["cause"], upgraded["seq"]) == ("failover_active", None, 4)
    assert P.event_upgraded({**v1, "description": "Something nobody wrote"}) is None
    v2 = {**v1, "code": "active", "cause": {"key": "k"}}
    assert P.event_upgraded(v2) == {**v2, "why": None}  # an event from before explanations: none
    v3 = {**v2, "why": P.explain("heartbeat.down", "Heartbeats down.", silence_s=3.04)}
    assert P.event_upgraded(v3) == v3
    assert v3["why"]["inputs"] == {"silence_s": 3.0}


def test_a_node_restarted_over_a_v1_event_log_serves_its_events_with_codes(tmp_path):
    # given a state directory an older agent wrote: events with texts and no codes
    net = free_subnet()
    fleet = parse_fleet(
        {
            "node": [
                {
                    "name": "old",
                    "type": "VA-High",
                    "version": "8.0.110.0",
                    "role": "primary",
                    "hm_ip": f"{net}.2",
                    "vip": f"{net}.1",
                    "netmask": "255.255.255.0",
                    "password": "pw-old",
                }
            ]
        }
    )
    state = tmp_path / "old"
    state.mkdir()
    lines = [
        {
            "seq": 1,
            "description": "Configuration successfully created",
            "generated_by": "Primary",
            "timestamp": "2026-11-01T00:00:00+00:00",
            "remarks": "",
            "generation": 1,
            "peer": None,
        },
        {
            "seq": 2,
            "description": "Licence installed",
            "generated_by": "Primary",
            "timestamp": "2026-11-01T00:00:01+00:00",
            "remarks": "CAS Elements: 100",
            "generation": 1,
            "peer": None,
        },
    ]
    (state / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    # when the new agent loads it
    node = Node(fleet.nodes["old"], state)
    node.load([])
    try:
        page = node.info.events_since(0, 100)
        # then every event has its code, and the next one is numbered after them
        assert [(e["seq"], e["code"]) for e in page["events"]] == [(1, "config_created"), (2, "license_installed")]
        assert node.emit(P.EventCode.SERVICES_STARTED)["seq"] == 3
    finally:
        node._event_log.close()


def test_a_peer_that_answers_in_another_version_is_a_refusal_not_an_answer():
    # given a peer that speaks protocol 1 (its answers carry no X-MSE-Protocol header)
    async def v1_peer(request):
        return web.json_response({"view": {"state": "PRIMARY_ACTIVE"}})

    async def go():
        app = web.Application()
        app.router.add_post(P.PATH_PEER_HEARTBEAT, v1_peer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as session:
                client = AgentClient(
                    session, "127.0.0.1", "pw", port=port, tls=False
                )  # a plain stand-in of another version
                return await client.request("POST", P.PATH_PEER_HEARTBEAT, {"from": "127.0.0.9"}, auto_key=False)
        finally:
            await runner.cleanup()

    # when a heartbeat is sent to it
    status, out = asyncio.run(go())
    # then the answer is not read as a heartbeat: it is a refusal naming the versions
    assert status == VERSION_REFUSED and "view" not in out
    assert "protocol mismatch" in out["error"] and f"protocol {P.PROTOCOL_VERSION}" in out["error"]
