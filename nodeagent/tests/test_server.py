"""The HM API of real nodes (in this process, real sockets on loopback): signing,
idempotency, pairing through the API, licenses, stop/start, health checks, trap pushes."""

from __future__ import annotations

import asyncio
import json
import re
import time
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from nodeagent import protocol as P
from nodeagent import tlsid, tlsport
from nodeagent.client import AgentClient
from nodeagent.config import parse_fleet
from nodeagent.node import Node
from nodeagent.server import NodeServer

from .agentutil import free_subnet


def fleet_dict(net, traps=()):
    return {
        "node": [
            {
                "name": "prim",
                "type": "VA-High",
                "version": "8.0.110.0",
                "role": "primary",
                "hm_ip": f"{net}.2",
                "vip": f"{net}.1",
                "netmask": "255.255.255.0",
                "password": "pw-prim",
                "trap_destinations": list(traps),
            },
            {
                "name": "sec",
                "type": "VA-High",
                "version": "8.0.110.0",
                "role": "secondary",
                "hm_ip": f"{net}.3",
                "password": "pw-sec",
            },
            {
                "name": "old",
                "type": "VA-High",
                "version": "7.2.103.0",
                "role": "primary",
                "hm_ip": f"{net}.4",
                "vip": f"{net}.5",
                "netmask": "255.255.255.0",
                "password": "pw-old",
            },
        ]
    }


@asynccontextmanager
async def running(tmp_path, traps=()):
    net = free_subnet()
    fleet = parse_fleet(fleet_dict(net, traps), allow_short_wait=True)
    servers = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:  # TLS, unpinned
        try:
            for name, cfg in fleet.nodes.items():
                node = Node(cfg, tmp_path / name, session=session, allow_short_wait=True)
                node.load([])
                srv = NodeServer(node)
                await srv.start()
                servers[name] = srv
            clients = {n: AgentClient(session, s.node.cfg.hm_ip, s.node.cfg.password) for n, s in servers.items()}
            yield net, {n: s.node for n, s in servers.items()}, clients, session
        finally:
            for s in servers.values():
                await s.close()


async def until(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = pred()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return r
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def pair_body(role, peer_node, **kw):
    c = peer_node.cfg
    body = {
        "role": role,
        "peer": {
            "name": c.name,
            "hm_ip": c.hm_ip,
            "password": c.password,
            "version": c.version,
            "udi": c.udi,
            "device_type": c.device_type,
            "vip": c.vip,
            "netmask": c.netmask,
        },
        "failover_type": "Manual",
        "failback_type": "Manual",
        "failover_wait": 10,
    }
    body.update(kw)
    return body


async def pair_up(nodes, clients, **kw):
    st, out = await clients["sec"].request("POST", P.PATH_HA_CONFIGURE, pair_body("secondary", nodes["prim"], **kw))
    assert st == 201, out
    st, out = await clients["prim"].request("POST", P.PATH_HA_CONFIGURE, pair_body("primary", nodes["sec"], **kw))
    assert st == 201, out

    async def ok():
        i = await clients["sec"].call("GET", P.PATH_HA_INFO)
        return i["peers"] and i["peers"][0]["state"] == "SECONDARY_ACTIVE" and i["peers"][0]["data_replication"] == "Up"

    await until(ok, 5, "paired")


def run(coro):
    return asyncio.run(coro)


# ---------------------------------------------------------------- protocol version
def test_a_correctly_signed_request_in_another_protocol_version_is_refused_and_changes_nothing(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            url = f"https://{nodes['prim'].cfg.hm_ip}:{P.DEFAULT_PORT}{P.PATH_SERVICES_STOP}"
            for version in (None, "1"):  # a protocol-1 portal sends no header
                # given a portal of another version, signing correctly
                h = {
                    **P.sign_request("pw-prim", "POST", P.PATH_SERVICES_STOP, b"{}"),
                    P.IDEMPOTENCY_HEADER: "kv",
                    "Content-Type": "application/json",
                }
                if version:
                    h[P.HEADER_PROTOCOL] = version
                # when it asks for a stop
                async with session.post(url, data=b"{}", headers=h) as r:
                    body = await r.json()
                    # then it is told which versions disagree, and nothing changed
                    assert r.status == 400 and "protocol mismatch" in body["error"], body
                    assert f"speaks protocol {P.PROTOCOL_VERSION}" in body["error"]
                    assert r.headers[P.HEADER_PROTOCOL] == str(P.PROTOCOL_VERSION)
                assert nodes["prim"].services_running

    run(go())


def test_plain_http_to_the_hm_port_is_refused_naming_both_versions_and_changes_nothing(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            prim = nodes["prim"]
            url = f"http://{prim.cfg.hm_ip}:{P.DEFAULT_PORT}{P.PATH_SERVICES_STOP}"
            h = {
                **P.sign_request("pw-prim", "POST", P.PATH_SERVICES_STOP, b"{}"),
                P.IDEMPOTENCY_HEADER: "kp",
                "Content-Type": "application/json",
                P.HEADER_PROTOCOL: "2",
            }
            # given an older portal, in plain HTTP: it is told why, in both versions' words
            async with aiohttp.ClientSession() as plain, plain.post(url, data=b"{}", headers=h) as r:
                body = await r.json()
                assert r.status == 400 and r.headers[P.HEADER_PROTOCOL] == str(P.PROTOCOL_VERSION)
                assert (
                    "protocol 2" in body["error"] and f"protocol {P.PROTOCOL_VERSION} over HTTPS only" in body["error"]
                )
            assert prim.services_running, "nothing was carried out"
            # and the same port answers TLS, with the node's own certificate
            st, _ = await clients["prim"].request("GET", P.PATH_HA_INFO)
            assert st == 200
            assert prim.identity is not None and prim.identity.cert_path.exists()
            # a client pinned to another fingerprint refuses to talk to it before sending anything
            wrong = AgentClient(session, prim.cfg.hm_ip, "pw-prim", fingerprint="00:" * 31 + "00")
            try:
                await wrong.request("POST", P.PATH_SERVICES_STOP, {})
            except aiohttp.ServerFingerprintMismatch as e:
                assert ":".join(f"{b:02X}" for b in e.got) == prim.identity.fingerprint
            else:
                raise AssertionError("a wrong pin was accepted")
            assert prim.services_running
            # and one pinned to its certificate talks to it
            right = AgentClient(session, prim.cfg.hm_ip, "pw-prim", fingerprint=prim.identity.fingerprint)
            assert (await right.request("GET", P.PATH_HA_INFO))[0] == 200

    run(go())


def test_pinned_requests_reuse_one_tls_connection(tmp_path):
    # a heartbeat makes a new client each time: pinned to the same certificate, they must share
    # the session's open TLS connection, not handshake anew every beat
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            prim = nodes["prim"]
            counts = {"new": 0, "reused": 0}
            trace = aiohttp.TraceConfig()

            async def created(*_):
                counts["new"] += 1

            async def reused(*_):
                counts["reused"] += 1

            trace.on_connection_create_end.append(created)
            trace.on_connection_reuseconn.append(reused)
            async with aiohttp.ClientSession(trace_configs=[trace]) as traced:
                for _ in range(3):
                    client = AgentClient(traced, prim.cfg.hm_ip, "pw-prim", fingerprint=prim.identity.fingerprint)
                    assert (await client.request("GET", P.PATH_HA_INFO))[0] == 200
            assert counts == {"new": 1, "reused": 2}, counts

    run(go())


def test_the_cause_of_a_command_is_echoed_on_its_events_and_not_on_later_ones(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            cause = {"key": "mseportal-job-7:stop", "by": "alice", "reason": "change CHG-9"}
            # when the manager stops the services with a cause
            st, _ = await clients["prim"].request(
                "POST", P.PATH_SERVICES_STOP, {"cause": cause}, idempotency_key="mseportal-job-7:stop"
            )
            assert st == 200
            # and starts them with only an idempotency key
            st, _ = await clients["prim"].request("POST", P.PATH_SERVICES_START, {}, idempotency_key="job-8:start")
            assert st == 200
            events = (await clients["prim"].call("GET", P.PATH_EVENTS + "?since=0"))["events"]
            by_code = {e["code"]: e for e in events}
            # then each event names its command: the full cause, or the key alone
            assert by_code["services_stopped"]["cause"] == cause
            assert by_code["services_started"]["cause"] == {"key": "job-8:start"}
            assert by_code["services_started"]["description"] == P.EventCode.SERVICES_STARTED.text
            # and a cause is text only, bounded: junk is dropped, never refused
            assert P.cause_from({"key": 5, "by": ["x"], "reason": "r" * 900}) == {"reason": "r" * 500}
            assert P.cause_from("junk") is None and P.cause_from(None, key="  ") is None

    run(go())


# ---------------------------------------------------------------- signing
def test_unsigned_stale_replayed_or_forged_requests_get_401_and_change_nothing(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            url = f"https://{nodes['prim'].cfg.hm_ip}:{P.DEFAULT_PORT}{P.PATH_SERVICES_STOP}"
            base = {P.IDEMPOTENCY_HEADER: "k1", "Content-Type": "application/json"}
            # unsigned
            async with session.post(url, data=b"{}", headers=base) as r:
                assert r.status == 401 and (await r.json())["error"] == "unsigned request"
            # forged (wrong password)
            h = {**base, **P.sign_request("wrong", "POST", P.PATH_SERVICES_STOP, b"{}")}
            async with session.post(url, data=b"{}", headers=h) as r:
                assert r.status == 401 and (await r.json())["error"] == "bad signature"
            # stale
            h = {
                **base,
                **P.sign_request("pw-prim", "POST", P.PATH_SERVICES_STOP, b"{}", timestamp=int(time.time()) - 3600),
            }
            async with session.post(url, data=b"{}", headers=h) as r:
                error = (await r.json())["error"]
                assert r.status == 401, error
                assert re.match(r"stale request: signed -360[01] s off this node's clock", error), error
                assert "accepted within 300 s" in error
                # every answer, a refusal too, carries the node's clock (the portal measures its offset)
                assert abs(float(r.headers[P.HEADER_TIME]) - time.time()) < 5, r.headers
            # body changed after signing
            h = {**base, **P.sign_request("pw-prim", "POST", P.PATH_SERVICES_STOP, b"{}")}
            async with session.post(url, data=b'{"x":1}', headers=h) as r:
                assert r.status == 401
            assert nodes["prim"].services_running, "nothing changed"
            # a GET is signed too; a replay of it is refused
            path = P.PATH_HA_INFO
            h = {**P.sign_request("pw-prim", "GET", path, b""), P.HEADER_PROTOCOL: str(P.PROTOCOL_VERSION)}
            u = f"https://{nodes['prim'].cfg.hm_ip}:{P.DEFAULT_PORT}{path}"
            async with session.get(u, headers=h) as r:
                assert r.status == 200
            async with session.get(u, headers=h) as r:
                assert r.status == 401 and (await r.json())["error"] == "replayed request"
            # a signed, fresh request with a key does work
            st, out = await clients["prim"].request("POST", P.PATH_SERVICES_STOP, {})
            assert st == 200 and not nodes["prim"].services_running

    run(go())


def test_query_string_is_signed(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            h = P.sign_request("pw-prim", "GET", P.PATH_EVENTS + "?since=0", b"")
            u = f"https://{nodes['prim'].cfg.hm_ip}:{P.DEFAULT_PORT}{P.PATH_EVENTS}?since=5"
            async with session.get(u, headers=h) as r:
                assert r.status == 401

    run(go())


# ---------------------------------------------------------------- idempotency
def test_a_repeated_mutating_request_returns_the_first_answer(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            c = clients["prim"]
            body = {"text": "LICENSE-FILE-1", "features": {"CAS Elements": 100}}
            st1, out1 = await c.request("POST", P.PATH_LICENSES, body, idempotency_key="job-1-step-2")
            assert st1 == 201
            st2, out2 = await c.request("POST", P.PATH_LICENSES, body, idempotency_key="job-1-step-2")
            assert (st2, out2) == (st1, out1)
            assert len(nodes["prim"].licenses) == 1
            # same key, another request: refused
            st, out = await c.request("POST", P.PATH_LICENSES, {"text": "OTHER"}, idempotency_key="job-1-step-2")
            assert st == 422
            # no key: refused
            st, out = await c.request("POST", P.PATH_LICENSES, body, auto_key=False)
            assert st == 400 and P.IDEMPOTENCY_HEADER in out["error"]
            # a stop repeated after the node is started again does not stop it again
            st, a = await c.request("POST", P.PATH_SERVICES_STOP, {}, idempotency_key="stop-1")
            st, b = await c.request("POST", P.PATH_SERVICES_START, {}, idempotency_key="start-1")
            seq = nodes["prim"].seq
            st, again = await c.request("POST", P.PATH_SERVICES_STOP, {}, idempotency_key="stop-1")
            assert again == a and nodes["prim"].services_running
            assert nodes["prim"].seq == seq
            # licenses: list, remove, server info shows the licensed limit
            lid = out1["id"]
            info = await c.call("GET", P.PATH_SERVER_INFO)
            assert info["licenses"][0]["features"] == {"CAS Elements": 100} and "text" not in info["licenses"][0]
            assert (await c.request("DELETE", P.PATH_LICENSE.format(license_id=lid)))[0] == 200
            assert (await c.request("DELETE", P.PATH_LICENSE.format(license_id=lid)))[0] == 404

    run(go())


def test_idempotency_answers_survive_a_restart(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            st, out = await clients["prim"].request("POST", P.PATH_LICENSES, {"text": "L"}, idempotency_key="k")
        async with running(tmp_path) as (net, nodes, clients, session):
            pass
        return out

    run(go())
    stored = json.loads((tmp_path / "prim" / "idempotency.json").read_text())
    assert stored["k"]["status"] == 201


# ---------------------------------------------------------------- pairing through the API
def test_pairing_through_the_api_and_its_refusals(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            # a node refuses a role it was not set up with
            st, out = await clients["prim"].request("POST", P.PATH_HA_CONFIGURE, pair_body("secondary", nodes["sec"]))
            assert st == 409 and "switched roles" in out["error"]
            # versions must match
            st, out = await clients["sec"].request("POST", P.PATH_HA_CONFIGURE, pair_body("secondary", nodes["old"]))
            assert st == 409 and "same software version" in out["error"]
            # bad failover wait
            st, out = await clients["sec"].request(
                "POST", P.PATH_HA_CONFIGURE, pair_body("secondary", nodes["prim"], failover_wait=500)
            )
            assert st == 400 and "between 2 and 120" in out["error"]
            await pair_up(nodes, clients)

            async def measured():
                i = await clients["prim"].call("GET", P.PATH_HA_INFO)
                return i["peers"][0]["mean_heartbeat_ms"] is not None and i

            info = await until(measured, 5, "mean heartbeat time on the primary")
            p = info["peers"][0]
            assert p["state"] == "PRIMARY_ACTIVE" and p["heartbeat"] == "Up" and p["status"] == "Active"
            assert p["instance_db_name"] == "mseos3s" and p["instance_db_port"] == 1624
            assert p["mean_heartbeat_ms"] is not None and p["mean_heartbeat_ms"] > 0
            ev = await clients["prim"].call("GET", P.PATH_EVENTS + "?since=0")
            d = [e["description"] for e in ev["events"]]
            assert (
                d.index("Configuration successfully created")
                < d.index("Heartbeats have been setup successfully")
                < d.index("Active")
            )
            assert all(e["generated_by"] == "Primary" and e["generation"] >= 1 for e in ev["events"] if e["peer"])
            # paging by seq
            ev2 = await clients["prim"].call("GET", P.PATH_EVENTS + f"?since={ev['events'][1]['seq']}&limit=1")
            assert [e["seq"] for e in ev2["events"]] == [ev["events"][2]["seq"]]
            # ha-info carries the same events inline when asked (the poller's single request)
            inline = await clients["prim"].call(
                "GET", P.PATH_HA_INFO + f"?events_since={ev['events'][1]['seq']}&events_limit=1"
            )
            assert inline["events"] == ev2["events"] and inline["peers"][0]["state"] == "PRIMARY_ACTIVE"
            assert {
                "name": "Context Aware Service",
                "version": "8.0.1.79",
                "admin_status": "Enabled",
                "operation_status": "Up",
            } in inline["services"]
            up_to_date = await clients["prim"].call("GET", P.PATH_HA_INFO + f"?events_since={inline['last_seq']}")
            assert up_to_date["events"] == []
            assert "events" not in await clients["prim"].call("GET", P.PATH_HA_INFO)
            st, out = await clients["prim"].request("GET", P.PATH_HA_INFO + "?events_since=x")
            assert st == 400 and "integers" in out["error"]
            # a change of failover type
            st, out = await clients["prim"].request(
                "POST", P.PATH_HA_CONFIGURE, pair_body("primary", nodes["sec"], failover_type="Automatic")
            )
            assert st == 200 and out["peer"]["failover_type"] == "Automatic"
            ev = await clients["prim"].call("GET", P.PATH_EVENTS + "?since=0")
            assert {"description": "Configuration updated", "remarks": "Failover mode set to AUTOMATIC."}.items() <= ev[
                "events"
            ][-1].items()
            # a primary has one secondary
            st, out = await clients["prim"].request("POST", P.PATH_HA_CONFIGURE, pair_body("primary", nodes["old"]))
            assert st == 409
            # deleting the secondary from the manager: both forget the pair; the primary keeps its VIP
            st, out = await clients["prim"].request("DELETE", P.PATH_HA_PEER.format(peer_hm_ip=nodes["sec"].cfg.hm_ip))
            assert st == 200
            st, out = await clients["sec"].request("DELETE", P.PATH_HA_PEER.format(peer_hm_ip=nodes["prim"].cfg.hm_ip))
            assert st == 200
            assert nodes["prim"].cfg.vip in nodes["prim"].vip_driver.bound
            assert (await clients["prim"].call("GET", P.PATH_HA_INFO))["peers"] == []

    run(go())


def test_stop_by_hand_is_graceful_no_takeover(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            await pair_up(nodes, clients, failover_type="Automatic", failover_wait=0.5)
            prim, sec = nodes["prim"], nodes["sec"]
            st, out = await clients["prim"].request("POST", P.PATH_SERVICES_STOP, {})
            assert st == 200 and out["states"][sec.cfg.hm_ip] == "GRACEFUL_SHUTDOWN"
            assert prim.cfg.vip not in prim.vip_driver.bound
            await until(
                lambda: next(iter(sec.pairs.values())).ha.state is P.HAState.GRACEFUL_SHUTDOWN,
                3,
                "secondary GRACEFUL_SHUTDOWN",
            )
            await asyncio.sleep(1.5)  # three failover waits: still no takeover
            assert not sec.desired_vips() and next(iter(sec.pairs.values())).ha.state is P.HAState.GRACEFUL_SHUTDOWN
            # health checks (unsigned): nobody answers /primary
            async with session.get(f"https://{prim.cfg.hm_ip}:{P.DEFAULT_PORT}/primary") as r:
                assert r.status == 503
            async with session.get(f"https://{prim.cfg.hm_ip}:{P.DEFAULT_PORT}/health") as r:
                assert r.status == 503
            st, out = await clients["prim"].request("POST", P.PATH_SERVICES_START, {})
            await until(lambda: prim.cfg.vip in prim.vip_driver.bound, 3, "primary takes its VIP back")
            async with session.get(f"https://{prim.cfg.hm_ip}:{P.DEFAULT_PORT}/primary") as r:
                assert r.status == 200
            async with session.get(f"https://{sec.cfg.hm_ip}:{P.DEFAULT_PORT}/secondary") as r:
                assert r.status == 200
            await until(
                lambda: next(iter(sec.pairs.values())).ha.state is P.HAState.SECONDARY_ACTIVE, 3, "SECONDARY_ACTIVE"
            )

    run(go())


def test_switchover_is_refused_until_synchronised_and_forwarded_to_the_secondary(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            await pair_up(nodes, clients)
            st, out = await clients["prim"].request("POST", P.PATH_FAILBACK, {})
            assert st == 409 and "nothing to fail back" in out["error"]
            # a command from an older generation is refused
            st, out = await clients["prim"].request("POST", P.PATH_FAILOVER, {"generation": 0})
            assert st == 409 and "stale" in out["error"]
            st, out = await clients["prim"].request("POST", P.PATH_FAILOVER, {}, idempotency_key="sw-1")
            assert st == 202 and out["state"] == "FAILOVER_INVOKED"
            await until(
                lambda: nodes["sec"].cfg.hm_ip and nodes["prim"].cfg.vip in nodes["sec"].vip_driver.bound,
                5,
                "VIP moved",
            )
            # the repeat of the same job step does not start a second failover
            st2, out2 = await clients["prim"].request("POST", P.PATH_FAILOVER, {}, idempotency_key="sw-1")
            assert (st2, out2) == (st, out)
            # the failback is refused for 30 minutes, with the time it becomes allowed
            st, out = await clients["sec"].request("POST", P.PATH_FAILBACK, {})
            assert st == 409

    run(go())


# ---------------------------------------------------------------- trap destinations
def test_events_are_pushed_signed_to_trap_destinations(tmp_path):
    received = []
    bad = []

    async def ingest(request):
        body = await request.read()
        try:
            P.verify_request("pw-prim", "POST", request.path_qs, body, request.headers, replay_cache=None)
        except P.SignatureError as e:
            bad.append(str(e))
            return web.json_response({"error": str(e)}, status=401)
        received.append(json.loads(body))
        return web.json_response({"ok": True})

    async def go():
        app = web.Application()
        app.router.add_post("/api/v1/ingest/events", ingest)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/api/v1/ingest/events"
        try:
            async with running(tmp_path) as (net, nodes, clients, session):
                st, out = await clients["prim"].request("PUT", P.PATH_TRAP_DESTINATIONS, {"urls": [url]})
                assert st == 200 and out["destinations"][0]["url"] == url
                st, out = await clients["prim"].request(
                    "PUT", P.PATH_TRAP_DESTINATIONS, {"urls": ["http://10.1.2.3/x"]}
                )
                assert st == 400  # never anything but loopback
                await clients["prim"].request(
                    "POST", P.PATH_LICENSES, {"text": "L1", "features": {"CAS Elements": 100}}
                )
                await until(
                    lambda: any(e["code"] == "license_installed" for r in received for e in r["events"]), 5, "push"
                )
                info = await clients["prim"].call("GET", P.PATH_TRAP_DESTINATIONS)
                assert info["destinations"][0]["pushed_seq"] == nodes["prim"].seq
        finally:
            await runner.cleanup()

    run(go())
    assert not bad
    seqs = [e["seq"] for r in received for e in r["events"]]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    assert received[0]["node"] == "prim" and received[0]["protocol"] == P.PROTOCOL_VERSION


async def _eq(coro, expected) -> bool:
    return (await coro) == expected


def scraped(node) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    from nodeagent import metrics

    body, _ = metrics.exposition(node)
    return {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for family in text_string_to_metric_families(body.decode())
        for x in family.samples
    }


def test_direct_connect_carries_the_heartbeats(tmp_path):
    async def go():
        net = free_subnet()
        d = fleet_dict(net)
        d["node"][0]["direct_connect"] = f"{net}.7"
        d["node"][1]["direct_connect"] = f"{net}.8"
        d["pair"] = [{"primary": "prim", "secondary": "sec", "failover_wait": 2}]
        fleet = parse_fleet(d)
        from nodeagent.cli import declared_pairs

        servers = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:  # TLS, unpinned
            try:
                for name in ("prim", "sec"):
                    node = Node(fleet.nodes[name], tmp_path / name, session=session)
                    node.load(declared_pairs(fleet, name))
                    srv = NodeServer(node)
                    await srv.start()
                    servers.append(srv)
                prim, sec = servers[0].node, servers[1].node
                pr = next(iter(sec.pairs.values()))
                assert pr.direct and pr.client().base == f"https://{net}.7:{P.DEFAULT_PORT}"
                await until(
                    lambda: next(iter(prim.pairs.values())).ha.heartbeat_up, 5, "heartbeats over direct connect"
                )
                # the HM API answers on the direct-connect address too
                c = AgentClient(session, f"{net}.7", "pw-prim")
                info = await c.call("GET", P.PATH_HA_INFO)
                assert info["peers"][0]["direct_connect"] is True
                # heartbeats travel both paths
                hm = AgentClient(session, f"{net}.3", "pw-sec")

                async def paths():
                    return (await hm.call("GET", P.PATH_HA_INFO))["peers"][0]["paths"]

                await until(lambda: _eq(paths(), {"hm": "Up", "direct": "Up"}), 5, "both paths up")
                # the metrics count the datagrams of each path apart
                got = scraped(sec)
                assert got[("mse_agent_heartbeats_sent_total", (("path", "direct"),))] >= 1
                assert got[("mse_agent_heartbeats_sent_total", (("path", "hm"),))] >= 1
                assert got[("mse_agent_heartbeats_received_total", (("path", "direct"),))] >= 1
                # and a replica behind: the records it lacks, and for how long (no await here: the
                # next heartbeat would tell the truth again)
                pr.peer_digest = {**pr.peer_digest, "lsn": pr.instance.lsn + 5}
                pr.note_lag()
                time.sleep(0.05)
                got = scraped(sec)
                assert got[("mse_agent_pair_replication_lag_records", (("peer", "prim"),))] == 5
                assert got[("mse_agent_pair_replication_lag_seconds", (("peer", "prim"),))] >= 0.05
            finally:
                for s in servers:
                    await s.close()

    run(go())


def test_a_plain_client_that_stalls_is_closed_and_the_site_stops_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(tlsport, "PEEK_TIMEOUT", 0.5)

    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            prim = nodes["prim"]
            # a client that sends one plain byte and then nothing: closed after the timeout, unanswered
            reader, writer = await asyncio.open_connection(prim.cfg.hm_ip, P.DEFAULT_PORT)
            writer.write(b"G")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 3) == b"", "the stalled connection was closed"
            writer.close()
            # and one that connects and sends nothing at all
            reader2, writer2 = await asyncio.open_connection(prim.cfg.hm_ip, P.DEFAULT_PORT)
            assert await asyncio.wait_for(reader2.read(), 3) == b""
            writer2.close()
            # meanwhile TLS clients are served
            assert (await clients["prim"].request("GET", P.PATH_HA_INFO))[0] == 200

    run(go())


def test_a_tls_identity_is_private_and_never_replaced_behind_the_operators_back(tmp_path):
    made = tlsid.ensure(tmp_path, name="n1", addresses=["127.0.0.1"])
    assert made.made and (made.key_path.stat().st_mode & 0o777) == 0o600
    again = tlsid.ensure(tmp_path, name="n1", addresses=["127.0.0.1"])
    assert not again.made and again.fingerprint == made.fingerprint
    # a certificate without its key (or the reverse) is refused, not silently replaced
    made.key_path.unlink()
    try:
        tlsid.ensure(tmp_path, name="n1", addresses=["127.0.0.1"])
    except ValueError as e:
        assert "key.pem is not" in str(e) and "restore it" in str(e)
    else:
        raise AssertionError("a lone certificate was accepted")
    assert made.cert_path.exists(), "nothing was thrown away"


def test_a_fingerprint_is_read_without_cryptography_and_a_file_that_is_no_certificate_is_refused(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    made = tlsid.ensure(tmp_path / "a", name="a", addresses=["127.0.0.1"])
    other = tlsid.ensure(tmp_path / "b", name="b", addresses=["127.0.0.2"])
    der = x509.load_pem_x509_certificate(made.cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert tlsid.read_fingerprint(made.cert_path) == tlsid.fingerprint_of(der) == made.fingerprint
    chain = tmp_path / "chain.pem"  # an operator's chain: the leaf first
    chain.write_text(made.cert_path.read_text() + other.cert_path.read_text())
    assert tlsid.read_fingerprint(chain) == made.fingerprint != other.fingerprint
    body = made.cert_path.read_text().splitlines()
    bad = {
        "no block": "hello\n",
        "a key, no certificate": made.key_path.read_text(),
        "base64 that is no X.509": "\n".join([body[0], "QUJD" * 16, body[-1]]) + "\n",
        "a broken body": "\n".join([body[0], body[1][:-7] + "!!!!!!!", *body[2:]]) + "\n",
        "not ASCII": "\n".join([body[0], "é" * 64, body[-1]]),
    }
    for what, text in bad.items():
        f = tmp_path / "bad.pem"
        f.write_text(text)
        try:
            tlsid.read_fingerprint(f)
        except tlsid.IdentityError as e:
            assert "bad.pem: not a PEM certificate" in str(e), (what, e)
        else:
            raise AssertionError(f"{what}: read as a certificate")


def test_identities_made_in_children_are_new_pairs_and_a_child_that_fails_says_why(tmp_path):
    wanted = [(tmp_path / f"n{i}", f"n{i}", [f"127.0.{i // 250}.{i % 250 + 1}"], None, None) for i in range(450)]
    operators = (tmp_path / "op", "op", ["127.0.1.1"], "/etc/op.pem", "/etc/op.key")  # theirs: not made
    assert tlsid.make_missing([*wanted, operators]) == 450 and not (tmp_path / "op").exists()
    assert tlsid.make_missing(wanted) == 0, "made once"
    got = [tlsid.ensure(sd, name=name, addresses=addresses) for sd, name, addresses, _, _ in wanted]
    assert all(g.made for g in got) and len({g.fingerprint for g in got}) == 450
    again = tlsid.ensure(wanted[0][0], name="n0", addresses=wanted[0][2])  # a restart in this process
    assert not again.made and again.fingerprint == got[0].fingerprint, "loaded and checked as a pair this time"
    assert tlsid.read_fingerprint(got[7].cert_path) == got[7].fingerprint
    (tmp_path / "blocked").write_text("a file where the state directory should be")
    try:
        tlsid.make_missing([(tmp_path / "blocked", "x", ["127.0.2.1"], None, None)])
    except tlsid.IdentityError as e:
        assert "the identities could not be made" in str(e) and "blocked" in str(e), e
    else:
        raise AssertionError("a child that could not make an identity passed")


def test_a_serving_agent_makes_its_identity_in_a_child_and_never_loads_cryptography(tmp_path):
    import ssl

    from .agentutil import Proc, node_toml, wait_until

    net = free_subnet()
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(node_toml("lone", "3355", "primary", f"{net}.2", "pw-lone", vip=f"{net}.1"))

    def presented() -> str:
        try:
            pem = ssl.get_server_certificate((f"{net}.2", P.DEFAULT_PORT), timeout=1)
        except OSError:
            return ""
        return tlsid.fingerprint_of(ssl.PEM_cert_to_DER_cert(pem))

    cert = tmp_path / "lone" / "tls" / tlsid.CERT_FILE
    fingerprints = []
    for start in ("first", "again"):
        proc = Proc(fleet, "lone", tmp_path / "lone", tmp_path)
        try:
            wait_until(lambda: presented() != "", 15, what=f"the agent serving TLS ({start} start)")
            maps = open(f"/proc/{proc.p.pid}/maps").read()
            assert "/cryptography/" not in maps, f"{start} start: the serving process loaded cryptography"
            assert presented() == tlsid.read_fingerprint(cert), start
            assert (tmp_path / "lone" / "tls" / tlsid.KEY_FILE).stat().st_mode & 0o777 == 0o600
            fingerprints.append(presented())
        finally:
            proc.stop()
    assert fingerprints[0] == fingerprints[1], "the second start kept the identity the first made"


def test_a_reset_whose_instance_cannot_be_read_again_changes_nothing_and_says_to_empty_it(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            await pair_up(nodes, clients)
            sec, prim_ip = nodes["sec"], nodes["prim"].cfg.hm_ip
            path = P.PATH_HA_PEER_RESET.format(peer_hm_ip=prim_ip)

            async def active_again():
                i = await clients["sec"].call("GET", P.PATH_HA_INFO)
                return i["peers"][0]["state"] == "SECONDARY_ACTIVE" and i["peers"][0]["data_replication"] == "Up"

            first = sec.pairs[prim_ip]
            st, out = await clients["sec"].request("POST", path, {})  # keeping the data: made again
            assert (st, out) == (200, {"reset": prim_ip, "empty_data": False, "records": 0}), out
            assert sec.pairs[prim_ip] is not first and first.beat_job is None
            await until(active_again, 10, "the pair Active after a reset keeping the data")
            before = sec.pairs[prim_ip]
            with open(before.instance.meta_path, "w") as f:
                f.write('{"sync_lsn": "not a number"}')  # the files as the reset would read them again
            st, out = await clients["sec"].request("POST", path, {})
            assert st == 507 and "nothing was changed" in out["error"] and "emptying its data" in out["error"], out
            assert sec.pairs[prim_ip] is before and before.beat_job is not None, "the pairing kept, still beating"
            st, out = await clients["sec"].request("POST", path, {"empty_data": True})
            assert (st, out) == (200, {"reset": prim_ip, "empty_data": True, "records": 0}), out
            fresh = sec.pairs[prim_ip]
            assert fresh is not before and fresh.ha.generation == before.ha.generation and before.beat_job is None
            await until(active_again, 10, "the pair Active again after the reset")

    run(go())


def test_synchronized_service_assignments_are_listed_and_deleted_only_by_a_signed_request(tmp_path):
    async def go():
        async with running(tmp_path) as (net, nodes, clients, session):
            node = nodes["prim"]
            node.assignments = [{"service": "Context Aware Service", "element": "Campus > Floor 1"}]
            url = f"https://{node.cfg.hm_ip}:{P.DEFAULT_PORT}{P.PATH_SERVICE_ASSIGNMENTS}"
            async with session.delete(url, headers={P.IDEMPOTENCY_HEADER: "k1"}) as r:
                assert r.status == 401  # unsigned: nothing deleted
            assert len(node.assignments) == 1
            client = clients["prim"]
            status, listed = await client.request("GET", P.PATH_SERVICE_ASSIGNMENTS)
            assert status == 200 and listed["assignments"][0]["element"] == "Campus > Floor 1"
            _, info = await client.request("GET", P.PATH_SERVER_INFO)
            assert info["service_assignments"] == 1
            status, out = await client.request("DELETE", P.PATH_SERVICE_ASSIGNMENTS, idempotency_key="del-1")
            assert (status, out) == (200, {"deleted": 1}) and node.assignments == []
            assert json.loads((node.sd.root / "service-assignments.json").read_text()) == []
            _, info = await client.request("GET", P.PATH_SERVER_INFO)
            assert info["service_assignments"] == 0

    asyncio.run(go())


def test_the_kept_events_are_read_back_as_they_were_kept_after_any_sequence_number():
    from nodeagent.node import EVENT_FIELDS, EventList

    events = EventList()
    kept = [
        {name: (seq if name == "seq" else f"{name}-{seq}") for name in EVENT_FIELDS} | {"cause": {"by": "op"}}
        for seq in range(1, 8)
    ]
    for ev in kept:
        events.append(ev)  # type: ignore[arg-type]
    assert list(events) == kept and events[0] == kept[0] and events[-1] == kept[-1] and len(events) == 7
    assert events.since(0, 3) == kept[:3] and events.since(3, 100) == kept[3:] and events.since(7, 5) == []
    assert events.since(-5, 1) == kept[:1]
    events.drop_oldest(5)
    assert list(events) == kept[5:] and events.since(0, 10) == kept[5:] and events.since(6, 10) == kept[6:]
