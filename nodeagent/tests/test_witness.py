"""The witness: its arbiter's rules (pure, time passed in), the state machine's gate on an
automatic takeover, and the witness's signed API on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import aiohttp
import pytest

from nodeagent import protocol as P
from nodeagent.client import AgentClient
from nodeagent.haconfig import PairConfig
from nodeagent.hastate import PairHA, PeerView
from nodeagent.protocol import HAState, Mode, Role
from nodeagent.witness import PATH_CONFIRM, PATH_LEASE, PATH_STATE, Arbiter, build_witness_app

from .agentutil import REPO, free_subnet
from .test_server import pair_body, pair_up, running, until

PAIR = "198.18.1.12/198.18.1.13"
WAIT = 3.0


def arbiter_heard_at(t: float) -> Arbiter:
    a = Arbiter(0.0)
    assert a.lease(PAIR, generation=1, solo=False, ttl=1.0, now=t)[0]
    return a


def test_a_takeover_is_refused_while_the_witness_hears_the_primary():
    a = arbiter_heard_at(10.0)
    ok, why = a.confirm(PAIR, generation=2, wait=WAIT, mode="safe", now=12.0)
    assert not ok and why.startswith("takeover refused: witness sees the primary")


def test_a_takeover_is_refused_while_the_primarys_lease_runs():
    a = Arbiter(0.0)
    a.lease(PAIR, generation=1, solo=False, ttl=5.0, now=10.0)  # a lease longer than the wait
    ok, why = a.confirm(PAIR, generation=2, wait=WAIT, mode="safe", now=13.5)
    assert not ok and "lease runs" in why


def test_a_primary_gone_for_the_wait_is_confirmed_and_can_never_lease_again_below_that_generation():
    a = arbiter_heard_at(10.0)
    ok, why = a.confirm(PAIR, generation=2, wait=WAIT, mode="safe", now=13.1)
    assert ok and "not been heard for 3.1 s" in why
    # the old primary wakes up: no lease for it any more
    ok, why = a.lease(PAIR, generation=1, solo=False, ttl=1.0, now=14.0)
    assert not ok and "step down" in why
    # a repeat of the confirmation is a confirmation (the secondary asks again)
    assert a.confirm(PAIR, generation=2, wait=WAIT, mode="safe", now=14.0)[0]


def test_safe_mode_never_takes_over_a_primary_that_acknowledged_writes_alone():
    a = Arbiter(0.0)
    a.lease(PAIR, generation=1, solo=True, ttl=1.0, now=10.0)  # the secondary was not in step
    ok, why = a.confirm(PAIR, generation=2, wait=WAIT, mode="safe", now=20.0)
    assert not ok and "a takeover would lose them" in why
    # availability mode trades those writes for service, and says so
    ok, why = a.confirm(PAIR, generation=2, wait=WAIT, mode="availability", now=20.0)
    assert ok and "lost" in why
    # back in step: safe mode confirms again
    b = Arbiter(0.0)
    b.lease(PAIR, generation=1, solo=True, ttl=1.0, now=10.0)
    b.lease(PAIR, generation=1, solo=False, ttl=1.0, now=11.0)
    assert b.confirm(PAIR, generation=2, wait=WAIT, mode="safe", now=20.0)[0]


def test_a_restarted_witness_remembers_its_confirmations_and_confirms_nothing_before_a_whole_wait():
    a = arbiter_heard_at(10.0)
    assert a.confirm(PAIR, generation=2, wait=WAIT, mode="safe", now=14.0)[0]
    saved = json.loads(json.dumps(a.state()))
    b = Arbiter(100.0, saved)  # restarted at t=100
    assert not b.lease(PAIR, generation=1, solo=False, ttl=1.0, now=100.5)[0]
    assert not b.confirm(PAIR, generation=3, wait=WAIT, mode="safe", now=101.0)[0]  # it has heard nobody yet
    assert b.confirm(PAIR, generation=3, wait=WAIT, mode="safe", now=103.5)[0]


# ---------------------------------------------------------------- the state machine's gate
def secondary_with(witnesses: tuple[str, ...]) -> PairHA:
    cfg = PairConfig(
        Mode.AUTOMATIC, Mode.MANUAL, WAIT, 0, witnesses=witnesses, witness_password="pw-w" if witnesses else ""
    )
    s, _ = PairHA.create(Role.SECONDARY, cfg, 0.0)
    view = PeerView(state=HAState.PRIMARY_ACTIVE, generation=1, owner=Role.PRIMARY, in_charge=True, running=True,
                    graceful=False, synced=True)  # fmt: skip
    s.on_heartbeat(1.0, view)
    s.synced = True
    return s


def test_with_witnesses_an_automatic_takeover_waits_for_their_confirmation():
    s = secondary_with(("198.18.1.50:8002",))
    s.tick(10.0)  # long past the wait
    assert s.automatic_takeover_due(10.0) and s.state is not HAState.FAILOVER_INVOKED
    s.takeover_confirmed_until = 12.0  # a majority confirmed
    notes = s.tick(10.5)
    assert s.state is HAState.FAILOVER_INVOKED and "A majority of witnesses confirmed it." in notes[-1].remarks


def test_without_witnesses_an_automatic_takeover_is_as_before():
    s = secondary_with(())
    s.tick(10.0)
    assert s.state is HAState.FAILOVER_INVOKED


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"witnesses": ("nonsense",)}, 'a witness is "IP:PORT"'),
        ({"witnesses": ("198.18.1.50:99999",)}, "port must be 1-65535"),
        ({"witnesses": ("198.18.1.50",)}, "need a witness_password"),
        ({"witness_mode": "yolo", "witnesses": ()}, "witness_mode must be"),
    ],
)
def test_bad_witness_settings_are_refused_with_the_reason(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PairConfig(Mode.AUTOMATIC, Mode.MANUAL, WAIT, 0, **kw)


# ---------------------------------------------------------------- the signed API (loopback)
def test_the_witness_api_is_signed_versioned_and_answers_by_the_rules(tmp_path):
    async def go():
        host = f"{free_subnet()}.50"
        runner = aiohttp.web.AppRunner(build_witness_app("pw-witness", tmp_path / "w.json"))
        await runner.setup()
        await aiohttp.web.TCPSite(runner, host, 18002).start()
        try:
            async with aiohttp.ClientSession() as s:
                good = AgentClient(s, host, "pw-witness", port=18002, tls=False)
                st, out = await good.request("POST", PATH_LEASE, {"pair": PAIR, "generation": 1, "solo": False, "ttl": 1},
                                             auto_key=False)  # fmt: skip
                assert (st, out["granted"]) == (200, True)
                st, out = await good.request("POST", PATH_CONFIRM, {"pair": PAIR, "generation": 2, "wait": 3},
                                             auto_key=False)  # fmt: skip
                assert st == 409 and "witness sees the primary" in out["reason"]
                st, out = await good.request("GET", PATH_STATE)
                assert st == 200 and out["pairs"][PAIR]["generation"] == 1
                # a wrong password, junk, and another protocol version are refused and change nothing
                st, _ = await AgentClient(s, host, "wrong-pw", port=18002, tls=False).request(
                    "POST", PATH_LEASE, {"pair": PAIR, "generation": 9, "solo": True, "ttl": 1}, auto_key=False
                )
                assert st == 401
                st, out = await good.request("POST", PATH_LEASE, {"pair": PAIR}, auto_key=False)
                assert st == 400 and "bad request" in out["error"]
                headers = P.sign_request("pw-witness", "GET", PATH_STATE, b"")
                async with s.get(f"http://{host}:18002{PATH_STATE}", headers=headers) as r:
                    assert r.status == 400 and "protocol mismatch" in (await r.json())["error"]
                st, out = await good.request("GET", PATH_STATE)
                assert out["pairs"][PAIR]["generation"] == 1 and out["pairs"][PAIR]["solo"] is False
        finally:
            await runner.cleanup()

    asyncio.run(go())


def test_witnesses_given_to_a_running_pair_that_had_none_are_asked_at_once(tmp_path):
    # (the portal's update job: a configure of an existing pair naming witnesses)
    async def go():
        async with running(tmp_path) as (net, nodes, clients, _session):
            # Given a paired primary without witnesses, and a witness on loopback
            await pair_up(nodes, clients)
            host = f"{net}.50"
            runner = aiohttp.web.AppRunner(build_witness_app("pw-witness"))
            await runner.setup()
            await aiohttp.web.TCPSite(runner, host, 18002).start()
            try:
                assert (await clients["prim"].call("GET", P.PATH_HA_INFO))["peers"][0]["witnesses"] == []
                # When the pair is configured again with that witness
                body = pair_body("primary", nodes["sec"], witnesses=[f"{host}:18002"], witness_password="pw-witness")
                st, out = await clients["prim"].request("POST", P.PATH_HA_CONFIGURE, body)
                assert st == 200, out

                # Then the primary asks it for its lease straight away (no restart needed)
                async def answered():
                    return (await clients["prim"].call("GET", P.PATH_HA_INFO))["peers"][0]["witnesses"]

                (answer,) = await until(answered, 5, "the primary's first witness answer")
                assert (answer["address"], answer["ok"]) == (f"{host}:18002", True) and "lease for" in answer["answer"]
            finally:
                await runner.cleanup()

    asyncio.run(go())


def test_the_witness_command_takes_its_password_from_the_environment_and_refuses_none(tmp_path):
    host = f"{free_subnet()}.50"
    argv = [sys.executable, "-m", "nodeagent", "witness", "--listen", f"{host}:18012", "--state-file",
            str(tmp_path / "w.json")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MSE_WITNESS_PASSWORD"}
    # without a password anywhere: a clear refusal, nothing listens
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO, env=env)
    assert refused.returncode != 0 and "MSE_WITNESS_PASSWORD" in refused.stderr, refused.stderr
    # with it in the environment (as mse-witness.service gives it): the witness answers, signed with it
    proc = subprocess.Popen(argv, cwd=REPO, env={**env, "MSE_WITNESS_PASSWORD": "pw-from-env"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:

        async def state():
            async with aiohttp.ClientSession() as s:
                return await AgentClient(s, host, "pw-from-env", port=18012, tls=False).request("GET", PATH_STATE)

        deadline = time.monotonic() + 15
        while True:
            try:
                status, _ = asyncio.run(state())
                break
            except (aiohttp.ClientError, OSError):
                assert time.monotonic() < deadline and proc.poll() is None, "the witness did not start"
                time.sleep(0.2)
        assert status == 200
    finally:
        proc.terminate()
        proc.wait(10)
