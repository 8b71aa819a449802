"""The one client for agents: signed requests, timeouts, and replies sorted into three errors.

Each test talks to a loopback server that checks signatures with the real
``nodeagent.protocol.verify_request`` (``hapairs.tests.loopback.ScriptedAgent``) and
answers the one reply the test is about.
"""

from __future__ import annotations

import json

import pytest

from hapairs import agent_client
from hapairs.tests.loopback import Reply, ScriptedAgent, fresh_subnet
from nodeagent import protocol

PASSWORD = "pw-Agent-Client-7"
PATH = protocol.PATH_SERVICES_START


@pytest.fixture
def subnet(settings):
    settings.AGENT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    return fresh_subnet(75, settings.AGENT_PORT)


@pytest.fixture
def scripted_agent(subnet, settings):
    """A scripted agent on <subnet>.2; ``scripted_agent(replies)`` starts it."""
    started = []

    def start(replies, *, host=f"{subnet}.2", password=PASSWORD, **options):
        agent = ScriptedAgent(host, settings.AGENT_PORT, password, replies, **options).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def target(agent_or_host, *, password=PASSWORD, settings=None) -> agent_client.AgentTarget:
    host = agent_or_host if isinstance(agent_or_host, str) else agent_or_host.host
    port = agent_or_host.port if not isinstance(agent_or_host, str) else settings.AGENT_PORT
    return agent_client.AgentTarget(name="mse-ac", host=host, password=password, port=port)


def test_a_request_is_signed_so_that_the_agents_own_check_accepts_it(scripted_agent):
    # Given an agent that verifies signatures with the protocol's own check
    agent = scripted_agent(
        {
            ("POST", PATH): [Reply(200, {"running": True})],
            ("GET", protocol.PATH_HA_INFO): [Reply(200, {"peers": []})],
        }
    )

    # When the portal sends a body with a job's key, and the poller's kind of GET with a query
    reply = agent_client.call(target(agent), "POST", PATH, body={"peer": "127.0.0.9"}, idempotency_key="job-7:step")
    agent_client.call(target(agent), "GET", f"{protocol.PATH_HA_INFO}?brief=1&events_since=4")

    # Then the agent accepted both signatures (path and query included) and saw exactly that body and key
    assert reply == {"running": True}
    posted, got = agent.seen
    assert (posted.signature_error, got.signature_error) == (None, None)
    assert (posted.method, posted.path_qs, json.loads(posted.body), posted.idempotency_key) == (
        "POST",
        PATH,
        {"peer": "127.0.0.9"},
        "job-7:step",
    )
    assert got.path_qs == f"{protocol.PATH_HA_INFO}?brief=1&events_since=4" and got.idempotency_key is None


def test_a_wrong_password_is_refused_by_the_agent_and_named_as_a_credentials_problem(scripted_agent):
    # Given an agent whose password is not the one the portal holds
    agent = scripted_agent({("POST", PATH): [Reply(200, {})]})

    # When the portal calls it
    with pytest.raises(agent_client.AgentRejected) as refused:
        agent_client.call(target(agent, password="not-the-Password-1"), "POST", PATH, body={}, idempotency_key="k")

    # Then the agent's real check refused it, and the operator is told to check the password
    assert agent.seen[0].signature_error == "bad signature"
    assert refused.value.status == 401
    assert "refused the credentials" in refused.value.message and "password" in refused.value.message
    assert "not-the-Password-1" not in refused.value.message


def test_an_agent_that_is_slow_or_not_listening_is_unavailable(scripted_agent, subnet, settings):
    # Given an agent that takes two seconds to answer, and an address where nothing listens
    slow = scripted_agent({("GET", protocol.PATH_HA_INFO): [Reply(200, {}, delay=2.0)]})

    # When the portal calls each with a 0.3 s timeout
    with pytest.raises(agent_client.AgentUnavailable) as too_slow:
        agent_client.call(target(slow), "GET", protocol.PATH_HA_INFO, timeout=0.3)
    with pytest.raises(agent_client.AgentUnavailable) as closed:
        agent_client.call(target(f"{subnet}.8", settings=settings), "GET", protocol.PATH_HA_INFO, timeout=0.3)

    # Then both are retryable, and the messages say what happened
    assert "did not answer within 0.3 s" in too_slow.value.message
    assert "refused the connection or is unreachable" in closed.value.message


@pytest.mark.parametrize("status", [500, 503])
def test_a_5xx_is_unavailable_with_the_agents_reason(scripted_agent, status):
    # Given an agent failing on its side
    agent = scripted_agent({("POST", PATH): [Reply(status, {"error": "instance database is restarting"})]})

    # When the portal calls it
    with pytest.raises(agent_client.AgentUnavailable) as unavailable:
        agent_client.call(target(agent), "POST", PATH, body={}, idempotency_key="k")

    # Then the failure is retryable and carries the agent's reason and the status
    assert unavailable.value.status == status
    assert unavailable.value.message == "mse-ac failed on its side: instance database is restarting"


def test_a_4xx_is_rejected_with_the_agents_own_message(scripted_agent):
    # Given an agent refusing a failback inside its stabilisation window, then one answering
    # 404 with a body that is not JSON
    refusal = "Failback is not allowed until 2030-01-01T00:00:00+00:00"
    agent = scripted_agent({("POST", protocol.PATH_FAILBACK): [Reply(409, {"error": refusal}), Reply(404, b"<html>")]})

    # When the portal asks for the failback, twice
    with pytest.raises(agent_client.AgentRejected) as refused:
        agent_client.call(target(agent), "POST", protocol.PATH_FAILBACK, body={}, idempotency_key="k")
    with pytest.raises(agent_client.AgentRejected) as unreadable:
        agent_client.call(target(agent), "POST", protocol.PATH_FAILBACK, body={}, idempotency_key="k")

    # Then the operator reads the agent's words, prefixed with the appliance's name, or the
    # status when there are none; the status is kept for the caller to decide on
    assert (refused.value.status, refused.value.message) == (409, f"mse-ac: {refusal}")
    assert (unreadable.value.status, unreadable.value.message) == (404, "mse-ac: HTTP 404")


@pytest.mark.parametrize("body", [[1, 2], "Active", 7, b"not json at all"], ids=["list", "string", "number", "garbage"])
def test_a_2xx_that_is_not_a_json_object_is_a_bad_reply(scripted_agent, body):
    # Given an agent answering 200 with something other than a JSON object
    agent = scripted_agent({("GET", protocol.PATH_HA_INFO): [Reply(200, body)]})

    # When the portal reads it
    with pytest.raises(agent_client.AgentBadReply) as bad:
        agent_client.call(target(agent), "GET", protocol.PATH_HA_INFO)

    # Then it is refused as a bad reply
    assert "not a JSON object" in bad.value.message


def test_an_agent_of_another_protocol_version_is_refused_whatever_it_answered(scripted_agent):
    # Given an agent of protocol version 1 that answers 200
    agent = scripted_agent({("GET", protocol.PATH_HA_INFO): [Reply(200, {"peers": []})]}, protocol_version="1")

    # When the portal reads it
    with pytest.raises(agent_client.AgentRejected) as refused:
        agent_client.call(target(agent), "GET", protocol.PATH_HA_INFO)

    # Then the portal said which version it speaks, and refuses the answer, saying what to do
    assert agent.seen[0].protocol_version == str(protocol.PROTOCOL_VERSION)
    assert refused.value.message.startswith("protocol mismatch: mse-ac")
    assert "upgrade the older side" in refused.value.message


def test_an_address_outside_the_allowed_networks_is_refused_before_any_connection(scripted_agent, subnet, settings):
    # Given an agent listening on a loopback address outside the networks the portal may call
    agent = scripted_agent({("GET", protocol.PATH_HA_INFO): [Reply(200, {})]}, host=f"{subnet}.3")
    settings.AGENT_ALLOWED_NETWORKS = [f"{subnet}.128/25"]

    # When the portal is asked to call it (or a name instead of an address)
    with pytest.raises(agent_client.AgentRejected) as outside:
        agent_client.call(target(agent), "GET", protocol.PATH_HA_INFO)
    with pytest.raises(agent_client.AgentRejected) as by_name:
        agent_client.call(target("localhost", settings=settings), "GET", protocol.PATH_HA_INFO)

    # Then both are refused, saying why, and no request reached the agent
    assert f"{subnet}.3 is outside the networks the portal may call ({subnet}.128/25)" in outside.value.message
    assert "is not an IP address" in by_name.value.message
    assert agent.seen == []


def test_a_redirect_to_an_address_outside_the_allowed_networks_is_not_followed(scripted_agent, subnet, settings):
    # Given an allowed agent that redirects to a loopback address outside the allowed networks,
    # where something listens
    outside = scripted_agent({("GET", protocol.PATH_HA_INFO): [Reply(200, {"peers": []})]}, host=f"{subnet}.200")
    agent = scripted_agent(
        {
            ("GET", protocol.PATH_HA_INFO): [
                Reply(302, {}, headers={"Location": f"http://{outside.host}:{outside.port}{protocol.PATH_HA_INFO}"})
            ]
        }
    )
    settings.AGENT_ALLOWED_NETWORKS = [f"{subnet}.0/25"]

    # When the portal calls the allowed agent
    with pytest.raises(agent_client.AgentBadReply) as bad:
        agent_client.call(target(agent), "GET", protocol.PATH_HA_INFO)

    # Then the redirect was not followed: nothing reached the outside address, and the reply is refused
    assert len(agent.seen) == 1
    assert outside.seen == []
    assert "redirect (HTTP 302)" in bad.value.message


def test_the_password_is_never_in_a_targets_repr_or_in_any_error(scripted_agent, subnet, settings, make_appliance):
    # Given an appliance whose password is stored encrypted, and agents failing every way
    appliance = make_appliance(name="mse-secret", hm_ip=f"{subnet}.2", password=PASSWORD)
    built = agent_client.target_for(appliance)
    agent = scripted_agent(
        {
            ("POST", PATH): [Reply(503, {}), Reply(409, {"error": "no"}), Reply(200, [1])],
        }
    )

    # When the target is printed and each kind of failure is raised
    messages = []
    for _ in range(3):
        with pytest.raises(agent_client.AgentError) as failed:
            agent_client.call(built, "POST", PATH, body={}, idempotency_key="k")
        messages.append(failed.value.message)
        messages.append(str(failed.value))
    with pytest.raises(agent_client.AgentError) as unsigned:
        agent_client.call(target(agent, password="wrong-Password-2"), "POST", PATH, body={}, idempotency_key="k")
    messages.append(unsigned.value.message)

    # Then the password was used (the agent accepted the signatures) but is never shown
    assert built.password == PASSWORD and built.port == settings.AGENT_PORT
    assert [seen.signature_error for seen in agent.seen] == [None, None, None, "bad signature"]
    assert PASSWORD not in repr(built) and "mse-secret" in repr(built)
    assert len(messages) == 7 and not any(PASSWORD in m or "wrong-Password-2" in m for m in messages)


def test_a_pinned_agent_is_called_only_with_its_certificate_and_first_contact_says_which_it_saw(scripted_agent):
    # Given an agent with its own certificate
    agent = scripted_agent({("GET", protocol.PATH_HA_INFO): [Reply(200, {"peers": []})]})

    # When the portal first contacts it (no pin yet), the call says which certificate it saw
    reply, seen = agent_client.call_seen(target(agent), "GET", protocol.PATH_HA_INFO)
    assert reply == {"peers": []} and seen == agent.fingerprint

    # and pinned to it, the portal talks to it
    pinned = agent_client.AgentTarget(name="mse-ac", host=agent.host, password=PASSWORD, port=agent.port,
                                      fingerprint=seen)  # fmt: skip
    assert agent_client.call(pinned, "GET", protocol.PATH_HA_INFO) == {"peers": []}
    assert len(agent.seen) == 2

    # When the agent presents another certificate than the pinned one
    other = "AB:" * 31 + "CD"
    moved = agent_client.AgentTarget(name="mse-ac", host=agent.host, password=PASSWORD, port=agent.port,
                                     fingerprint=other)  # fmt: skip
    with pytest.raises(agent_client.AgentCertificateChanged) as changed:
        agent_client.call(moved, "POST", PATH, body={"peer": "127.0.0.9"})

    # Then the portal refuses it, naming both certificates and the remedy, and sent it nothing
    assert (changed.value.expected, changed.value.got) == (other, agent.fingerprint)
    assert "different TLS certificate" in changed.value.message and "trust the new one" in changed.value.message
    assert len(agent.seen) == 2, "nothing reached the agent"


@pytest.mark.parametrize(
    ("header", "sent", "received", "expected"),
    [
        ("1000.250", 990.0, 990.1, 10.2),  # 10.2 s ahead, the round trip's middle at 990.05
        ("980.000", 990.0, 990.0, -10.0),
        (None, 990.0, 990.1, None),  # an agent that does not say
        ("soon", 990.0, 990.1, None),
        ("nan", 990.0, 990.1, None),
        ("inf", 990.0, 990.1, None),
        ("", 990.0, 990.1, None),
        ("1000.0", 990.0, 991.0, None),  # a 1 s round trip says too little
    ],
)
def test_an_answers_clock_is_read_from_its_header_and_a_bad_or_late_one_says_nothing(header, sent, received, expected):
    headers = {} if header is None else {protocol.HEADER_TIME: header}
    offset = agent_client.clock_offset_of(headers, sent, received)
    assert (offset if offset is None else round(offset, 3)) == expected
