"""Heartbeats as signed UDP datagrams (protocol 4): the wire format and its refusals, real
nodes beating over loopback, replays and forgeries refused, and the hysteresis (a stalled
receiver does not take a healthy primary over; a late answer is an answer)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from contextlib import asynccontextmanager

import aiohttp
import pytest

from nodeagent import datagram, heartbeat
from nodeagent import protocol as P
from nodeagent.cli import declared_pairs
from nodeagent.config import parse_fleet
from nodeagent.datagram import DatagramError, PeerKey
from nodeagent.node import Node
from nodeagent.server import NodeServer

from .agentutil import Proc, free_subnet, ha_info, node_toml, pair_toml, wait_until
from .test_server import fleet_dict, until

pytestmark = pytest.mark.serial  # response times and a stalled node's hysteresis: measured alone (make test)


def body(**kw):
    b = {"kind": "hb", "from": "127.0.0.2", "to": "127.0.0.3", "path": "hm", "boot": "b1", "seq": 1, "echo": None}
    b["view"] = {"state": "SECONDARY_ACTIVE", "generation": 1, "owner": "primary", "in_charge": False,
                 "running": True, "graceful": False, "phase": None, "synced": True}  # fmt: skip
    b.update(kw)
    return b


# ---------------------------------------------------------------- the wire format
@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "not a protocol-4"),
        (b"MHB3" + b"\0" * 40, "not a protocol-4"),
        (b"MHB4" + b"\0" * 32 + b"x" * 3000, "too large: over 2048 bytes"),
        (b"MHB4" + b"\0" * 32 + b"{nope", "not JSON"),
        (b"MHB4" + b"\0" * 32 + b"[1, 2]", "not a JSON object"),
        (b"MHB4" + b"\0" * 32 + b"\xff\xfe", "not JSON"),
        (b"MHB4" + b"\0" * 32 + b"[" * 1500 + b"]" * 500, "not JSON"),  # nested past the parser's depth
    ],
)
def test_garbage_is_refused_with_the_reason(data, why):
    with pytest.raises(DatagramError, match=why):
        datagram.parse(data)


@pytest.mark.parametrize(
    "change, why",
    [
        ({"kind": "lease"}, "unknown kind"),
        ({"seq": -1}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": "7"}, "seq"),
        ({"boot": ""}, "boot"),
        ({"boot": "x" * 40}, "boot"),
        ({"to": None}, "to is missing"),
        ({"view": []}, "view is missing"),
        ({"echo": "3"}, "echo"),
    ],
)
def test_malformed_bodies_are_refused(change, why):
    _, key = datagram.new_key()
    with pytest.raises(DatagramError, match=why):
        datagram.parse(datagram.encode(key, body(**change)))


def test_a_receiver_accepts_only_its_peers_current_boot_with_rising_sequence_numbers():
    boot, key = datagram.new_key()
    peer = PeerKey()
    dg = datagram.encode(key, body(boot=boot, seq=5))
    with pytest.raises(DatagramError, match="no heartbeat key"):
        peer.accept(*datagram.parse(dg))
    assert peer.learn({"boot": boot, "key": key.hex()})
    peer.accept(*datagram.parse(dg))
    with pytest.raises(DatagramError, match="replayed or stale"):
        peer.accept(*datagram.parse(dg))  # the same datagram again
    with pytest.raises(DatagramError, match="replayed or stale"):
        peer.accept(*datagram.parse(datagram.encode(key, body(boot=boot, seq=4))))  # an older one
    peer.accept(*datagram.parse(datagram.encode(key, body(boot=boot, seq=9))))
    # tampered: the generation changed after signing
    forged = datagram.encode(key, body(boot=boot, seq=10)).replace(b'"generation":1', b'"generation":9')
    with pytest.raises(DatagramError, match="bad signature"):
        peer.accept(*datagram.parse(forged))
    # signed with another key (someone who does not have the peer's)
    with pytest.raises(DatagramError, match="bad signature"):
        peer.accept(*datagram.parse(datagram.encode(datagram.new_key()[1], body(boot=boot, seq=11))))
    # the peer restarted: its new boot is learnt over TLS; the old boot's datagrams are refused
    boot2, key2 = datagram.new_key()
    assert peer.learn({"boot": boot2, "key": key2.hex()})
    with pytest.raises(DatagramError, match="not the peer's current"):
        peer.accept(*datagram.parse(datagram.encode(key, body(boot=boot, seq=12))))
    peer.accept(*datagram.parse(datagram.encode(key2, body(boot=boot2, seq=1))))  # a new boot counts afresh
    assert peer.refused == {"unkeyed": 1, "replay": 2, "signature": 2, "boot": 1}


@pytest.mark.parametrize(
    "announced",
    [None, "k", {"boot": "b"}, {"boot": "b", "key": "zz"}, {"boot": "b", "key": "ab" * 8}, {"key": "ab" * 32}],
)
def test_a_bad_key_announcement_is_ignored(announced):
    peer = PeerKey()
    assert not peer.learn(announced)
    assert peer.key == b""


# ---------------------------------------------------------------- real nodes on loopback
def _paired_fleet(net, wait=3):
    d = fleet_dict(net)
    d["node"] = d["node"][:2]
    d["pair"] = [{"primary": "prim", "secondary": "sec", "failover_type": "Automatic", "failover_wait": wait}]
    return parse_fleet(d, allow_short_wait=True)


async def _start_one(fleet, name, tmp_path, session, *, declared=True) -> NodeServer:
    node = Node(fleet.nodes[name], tmp_path / name, session=session, allow_short_wait=True)
    node.load(declared_pairs(fleet, name) if declared else [])
    srv = NodeServer(node)
    await srv.start()
    return srv


@asynccontextmanager
async def _paired(tmp_path):
    """A primary and a secondary in this process, paired by the fleet (wait 3 s)."""
    fleet = _paired_fleet(free_subnet())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        servers: list[NodeServer] = []
        try:
            for name in ("prim", "sec"):
                servers.append(await _start_one(fleet, name, tmp_path, session))
            yield fleet, servers, session
        finally:
            for s in servers:
                await s.close()


def test_heartbeats_are_datagrams_and_replays_forgeries_and_garbage_change_nothing(tmp_path):
    async def go():
        async with _paired(tmp_path) as (fleet, servers, session):
            net = fleet.nodes["prim"].hm_ip.rsplit(".", 1)[0]
            prim, sec = servers[0].node, servers[1].node
            ppr, spr = next(iter(prim.pairs.values())), next(iter(sec.pairs.values()))
            # tap the secondary's socket: every datagram it sends is kept (and still sent)
            sent: list[bytes] = []
            transport = sec.heartbeats.transports[P.HeartbeatPath.HM]
            real_sendto = transport.sendto

            def tap(data, addr=None):
                sent.append(bytes(data))
                real_sendto(data, addr)

            transport.sendto = tap  # type: ignore[method-assign]
            await until(lambda: ppr.ha.heartbeat_up and spr.ha.heartbeat_up and len(sent) >= 3, 8, "beats")
            # they are heartbeat datagrams, and the secondary measures the primary's answers
            _, _, first = datagram.parse(sent[0])
            assert first["kind"] == "hb" and first["to"] == prim.cfg.hm_ip and "key" not in json.dumps(first)
            await until(lambda: spr.mean_ms is not None, 5, "a response time")
            # the HTTP heartbeat of protocol 3 is gone
            st, _ = (
                await sec.heartbeats.node.pairs[prim.cfg.hm_ip]
                .client()
                .request("POST", P.PATH_PEER_HEARTBEAT, {"from": sec.cfg.hm_ip}, auto_key=False)
            )
            assert st in (404, 405)

            before_state = (ppr.ha.generation, ppr.ha.state, ppr.ha.in_charge)
            received, refused = prim.counters["heartbeats_received"], prim.counters["datagrams_refused"]
            attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            attacker.bind((f"{net}.9", 0))
            target = (prim.cfg.hm_ip, prim.cfg.port)
            forged = sent[-1].replace(b'"generation":1', b'"generation":7')  # valid JSON, bad signature
            assert forged != sent[-1]
            # a datagram far over the size limit is read only that far (the socket's buffer is
            # small), and refused as too large
            huge = b"MHB4" + b"\0" * 32 + b"x" * 60000
            bogus = [*sent[:3], forged, b"hello", b"MHB4" + b"\0" * 32 + b"{}", os.urandom(300), huge]
            for data in bogus:
                attacker.sendto(data, target)
            attacker.close()
            await until(lambda: prim.counters["datagrams_refused"] - refused >= len(bogus), 3, "refusals")
            assert prim.counters["datagrams_refused"] - refused == len(bogus)
            assert ppr.hb_peer.refused["replay"] >= 3 and ppr.hb_peer.refused["signature"] >= 1
            # nothing changed, and the real heartbeats go on
            assert (ppr.ha.generation, ppr.ha.state, ppr.ha.in_charge) == before_state
            await until(lambda: prim.counters["heartbeats_received"] > received + 2, 3, "beats go on")
            assert ppr.ha.heartbeat_up and spr.ha.heartbeat_up

    asyncio.run(go())


def test_a_restarted_node_gives_its_new_key_and_the_pair_beats_again(tmp_path):
    async def go():
        async with _paired(tmp_path) as (fleet, servers, session):
            prim = servers[0].node
            ppr = next(iter(prim.pairs.values()))
            await until(lambda: ppr.ha.heartbeat_up, 8, "beats")
            old_boot = ppr.hb_peer.boot
            await servers[1].close()  # the secondary stops and starts again: a new boot, a new key
            servers[1] = await _start_one(fleet, "sec", tmp_path, session, declared=False)
            node = servers[1].node
            await until(lambda: ppr.hb_peer.boot not in ("", old_boot), 5, "the new key")
            spr = next(iter(node.pairs.values()))
            await until(lambda: spr.ha.heartbeat_up and ppr.ha.heartbeat_up, 8, "beats again")
            got = prim.counters["heartbeats_received"]
            await until(lambda: prim.counters["heartbeats_received"] > got + 2, 3, "datagrams of the new boot")
            assert ppr.hb_peer.last_seq > 0 and spr.hb_peer.boot == prim.heartbeats.boot

    asyncio.run(go())


# ---------------------------------------------------------------- hysteresis (real processes)
@pytest.mark.slow
def test_a_stalled_secondary_does_not_take_over_a_healthy_primary_and_a_late_primary_is_alive(tmp_path):
    """The secondary's process is frozen for twice the wait, then woken: the silence it did not
    listen through is not a failover. Then the primary answers late (frozen 0.9 s of every
    1.0 s, for three waits): late answers are answers, no failover either. A primary that
    stays silent for the wait is still taken over (the failover works)."""
    net = free_subnet()
    ips = {"p": f"{net}.2", "vip": f"{net}.1", "s": f"{net}.3"}
    fleet = tmp_path / "fleet.toml"
    wait = 3
    fleet.write_text(
        node_toml("nico", "VA-High", "primary", ips["p"], "pw-primary", vip=ips["vip"])
        + node_toml("nico2", "VA-High", "secondary", ips["s"], "pw-secondary")
        + pair_toml("nico", "nico2", failover="Automatic", failback="Manual", wait=wait, stab=2)
    )
    primary = Proc(fleet, "nico", tmp_path / "nico", tmp_path)
    secondary = Proc(fleet, "nico2", tmp_path / "nico2", tmp_path)
    try:

        def state(host, pw):
            return ha_info(host, pw)["peers"][0]

        wait_until(
            lambda: (
                state(ips["s"], "pw-secondary")["state"] == "SECONDARY_ACTIVE"
                and state(ips["s"], "pw-secondary")["data_replication"] == "Up"
            ),
            20,
            what="paired",
        )
        # 1. the secondary frozen for twice the wait
        os.kill(secondary.p.pid, signal.SIGSTOP)
        time.sleep(2 * wait)
        os.kill(secondary.p.pid, signal.SIGCONT)
        time.sleep(wait + 1)
        s = state(ips["s"], "pw-secondary")
        assert s["state"] == "SECONDARY_ACTIVE", s
        assert state(ips["p"], "pw-primary")["state"] == "PRIMARY_ACTIVE"
        # 2. the primary answers, but late: running 0.1 s of every second
        until_t = time.monotonic() + 3 * wait
        while time.monotonic() < until_t:
            os.kill(primary.p.pid, signal.SIGSTOP)
            time.sleep(0.9)
            os.kill(primary.p.pid, signal.SIGCONT)
            time.sleep(0.1)
        time.sleep(1)
        s = state(ips["s"], "pw-secondary")
        assert s["state"] == "SECONDARY_ACTIVE", s
        events = ha_info(ips["s"], "pw-secondary")
        assert state(ips["p"], "pw-primary")["state"] == "PRIMARY_ACTIVE", events
        # 3. a primary really gone for the wait is taken over
        os.kill(primary.p.pid, signal.SIGSTOP)
        wait_until(lambda: state(ips["s"], "pw-secondary")["state"] == "FAILOVER_ACTIVE", 3 * wait, what="the takeover")
        os.kill(primary.p.pid, signal.SIGCONT)
    finally:
        for p in (primary, secondary):
            if p.p and p.p.poll() is None:
                os.kill(p.p.pid, signal.SIGCONT)
            p.stop()


def test_the_mean_response_time_is_of_the_last_50_heartbeats():
    from nodeagent.pair import RTTS_KEPT, PairRuntime

    pr = object.__new__(PairRuntime)  # only the response-time fields: no node needed
    pr.rtts, pr._rtt_next, pr._mean_ms, pr.peer_mean_ms = None, 0, None, 0.25
    assert pr.mean_ms == 0.25  # none measured yet: the peer's figure
    for _ in range(RTTS_KEPT):
        pr.add_rtt(0.010)  # 10 ms each
    assert pr.mean_ms == 10.0
    for _ in range(RTTS_KEPT - 10):
        pr.add_rtt(0.001)  # 40 fast ones replace the oldest 40
    assert pr.mean_ms == round((10 * 10.0 + 40 * 1.0) / 50, 3)
    for _ in range(10 + 7):
        pr.add_rtt(0.002)  # the ring wraps around
    assert len(pr.rtts) == RTTS_KEPT
    assert pr.mean_ms == round((33 * 1.0 + 17 * 2.0) / 50, 3)


@pytest.mark.skipif(heartbeat.STAMP_OPTION is None, reason="no kernel receive stamps on this platform")
def test_the_response_time_ends_at_the_kernels_receive_stamp_not_at_the_read():
    """A secondary busy when its ack arrives does not count its own delay as the primary's."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        receiver.setsockopt(socket.SOL_SOCKET, heartbeat.STAMP_OPTION, 1)
        # Linux turns receive stamping on for the whole stack by deferred work when the first
        # socket asks for it; a datagram that arrives before that is stamped when it is read.
        # Probe until the kernel stamps on arrival (an agent's first heartbeats fall back the same way).
        for _ in range(100):
            sender.sendto(b"probe", receiver.getsockname())
            time.sleep(0.02)
            _, probe, _, _ = receiver.recvmsg(64, heartbeat.STAMP_SPACE)
            stamped = heartbeat.arrival(probe)
            if stamped is not None and time.time() - stamped >= 0.01:
                break
        sent = (time.monotonic(), time.time())
        sender.sendto(b"ack", receiver.getsockname())
        time.sleep(0.2)  # the receiver's loop was busy this long before it read the ack
        data, ancillary, _, _ = receiver.recvmsg(64, heartbeat.STAMP_SPACE)
        now_mono = time.monotonic()
    finally:
        receiver.close()
        sender.close()
    arrived = heartbeat.arrival(ancillary)
    assert data == b"ack" and arrived is not None
    rtt = heartbeat.response_time(sent, now_mono, arrived)
    # the arrival, not the read (the message says how far the stamp was from the send)
    assert 0 <= rtt < 0.1 < 0.2 <= now_mono - sent[0], (rtt, arrived - sent[1], now_mono - sent[0])
    # a stamp outside the send .. read window (a wall clock stepped meanwhile): the read time
    assert heartbeat.response_time(sent, now_mono, sent[1] - 5) == now_mono - sent[0]
    assert heartbeat.response_time(sent, now_mono, sent[1] + 60) == now_mono - sent[0]
    assert heartbeat.response_time(sent, now_mono, None) == now_mono - sent[0]
    assert heartbeat.arrival([(socket.SOL_SOCKET, 1, b"\0" * 16), (socket.IPPROTO_IP, 35, b"\0" * 16)]) is None


def test_a_datagram_made_from_its_kept_head_is_the_body_encode_makes():
    key = os.urandom(32)
    fixed = {k: v for k, v in body().items() if k not in ("seq", "echo")}
    head = datagram.head_of(fixed)
    for seq, echo, mean_ms in ((1, None, None), (7, 6, 0.412), (2**40, 3, float("nan")), (9, None, 3.0)):
        data = datagram.encode_with(key, head, seq, echo, mean_ms)
        tag, raw, parsed = datagram.parse(data)
        assert datagram.verify(key, tag, raw)
        shown = None if mean_ms is None or mean_ms != mean_ms else mean_ms
        assert parsed == {**fixed, "seq": seq, "echo": echo, "mean_ms": shown}
        assert json.loads(raw) == json.loads(datagram.encode(key, parsed)[36:])  # the object encode makes
    with pytest.raises(ValueError):
        datagram.head_of({})


def test_split_reads_back_the_members_encode_with_closes_a_body_with():
    key = os.urandom(32)
    fixed = {k: v for k, v in body().items() if k not in ("seq", "echo")}
    head = datagram.head_of(fixed)
    for seq, echo, mean_ms in ((1, None, None), (7, 6, 0.412), (2**40, 3, 1e-05), (9, None, 3.0), (5, 4, 1.5e16)):
        data = datagram.encode_with(key, head, seq, echo, mean_ms)
        assert datagram.split(data) == (head, seq, echo, mean_ms)
    good = datagram.encode_with(key, head, 3, 2, 0.5)
    # bodies of other shapes are not split (they are read whole): another order of members,
    # more after the last one, a non-number, not a heartbeat datagram, too large
    for data in (
        datagram.encode(key, body(seq=3)),  # seq before the view
        good[:-1] + b',"x":1}',
        good.replace(b'"mean_ms":0.5', b'"mean_ms":"0.5"'),
        good.replace(b'"echo":2', b'"echo":-2'),
        b"MHB3" + good[4:],
        b"MHB4" + b"\0" * 32 + b'"seq":1,"echo":null,"mean_ms":null}',  # no head
        good[:-1] + b" " * 2048 + b"}",
    ):
        assert datagram.split(data) is None, data


def test_a_repeated_head_is_verified_not_parsed_and_its_replays_and_forgeries_are_refused(tmp_path, monkeypatch):
    parsed: list[bytes] = []
    real_parse = datagram.parse

    def counting_parse(data):
        parsed.append(data)
        return real_parse(data)

    monkeypatch.setattr(datagram, "parse", counting_parse)

    async def go():
        async with _paired(tmp_path) as (fleet, servers, session):
            prim, sec = servers[0].node, servers[1].node
            ppr, spr = next(iter(prim.pairs.values())), next(iter(sec.pairs.values()))
            sent: list[bytes] = []
            transport = sec.heartbeats.transports[P.HeartbeatPath.HM]
            real_sendto = transport.sendto

            def tap(data, addr=None):
                sent.append(bytes(data))
                real_sendto(data, addr)

            transport.sendto = tap  # type: ignore[method-assign]
            await until(lambda: ppr.ha.heartbeat_up and spr.ha.heartbeat_up and spr.mean_ms is not None, 8, "beats")
            # steady beats: each is received and answered (the secondary measures every one),
            # and none is parsed, on either side: their heads are those already read. A window
            # in which either side's head changed (replication catching up changes a view) is
            # tried again: only a head read before may go unparsed
            HM = P.HeartbeatPath.HM

            def heads():
                return tuple(pr.hb_heard[HM][0] if pr.hb_heard and HM in pr.hb_heard else None for pr in (ppr, spr))

            for _ in range(10):
                before, reads = heads(), len(parsed)
                got, answered = prim.counters["heartbeats_received"], sec.counters["heartbeats_received"]
                await until(lambda got=got: prim.counters["heartbeats_received"] >= got + 4, 10, "four more beats")
                await until(lambda n=answered: sec.counters["heartbeats_received"] >= n + 4, 10, "their acks")
                if None not in before and heads() == before:
                    break
            else:
                raise AssertionError("the heads never stayed the same for four beats")
            assert len(parsed) == reads, "a datagram with a known head was parsed"
            assert ppr.ha.heartbeat_up and prim.counters["datagrams_refused"] == 0
            # a replay and a forged tail (a higher sequence number, unsigned) of a known head
            # are refused by the signature and the sequence checks all the same
            last_seq, refused = ppr.hb_peer.last_seq, dict(ppr.hb_peer.refused)
            replay = sent[-1]
            forged = replay.replace(b'"seq":%d' % datagram.split(replay)[1], b'"seq":%d' % (last_seq + 100))
            assert (
                datagram.split(forged) is not None
                and heartbeat.head_key(datagram.split(forged)[0]) == ppr.hb_heard[P.HeartbeatPath.HM][0]
            )
            attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            attacker.bind((sec.cfg.hm_ip, 0))
            for data in (replay, forged):
                attacker.sendto(data, (prim.cfg.hm_ip, prim.cfg.port))
            attacker.close()
            await until(lambda: sum(ppr.hb_peer.refused.values()) >= sum(refused.values()) + 2, 3, "refusals")
            assert ppr.hb_peer.refused.get("replay", 0) == refused.get("replay", 0) + 1
            assert ppr.hb_peer.refused.get("signature", 0) == refused.get("signature", 0) + 1
            assert ppr.hb_peer.last_seq < last_seq + 100
            assert len(parsed) == reads  # refused without being parsed either
            # the secondary's side changes (a newer generation, the primary still its owner):
            # its head is new, so it is read whole; the primary answers at once with its side
            # as it stood, then again with its side after absorbing (the newer generation)
            acks: list[dict] = []
            ptransport = prim.heartbeats.transports[P.HeartbeatPath.HM]
            real_psend = ptransport.sendto

            def ptap(data, addr=None):
                acks.append(real_parse(bytes(data))[2])
                real_psend(data, addr)

            ptransport.sendto = ptap  # type: ignore[method-assign]
            generation = spr.ha.generation
            spr.ha.generation = generation + 1
            await until(lambda: any(a["view"]["generation"] == generation + 1 for a in acks), 5, "the new generation")
            await until(lambda: spr.peer_view.generation == generation + 1, 2, "the secondary hears it")
            first_new = next(i for i, a in enumerate(acks) if a["view"]["generation"] == generation + 1)
            assert first_new >= 1 and acks[first_new]["echo"] is None, acks  # the second answer
            assert acks[first_new - 1]["echo"] is not None and acks[first_new - 1]["view"]["generation"] == generation
            assert acks[first_new]["seq"] == acks[first_new - 1]["seq"] + 1
            assert ppr.ha.generation == generation + 1 and ppr.ha.in_charge and spr.ha.heartbeat_up

    asyncio.run(go())
