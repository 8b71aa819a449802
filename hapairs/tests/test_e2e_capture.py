"""No secret on the wire: the loopback traffic of add, configure, switchover and failback,
captured with a raw packet socket, holds none of the appliances' passwords and no readable
body of the Health Monitor API.

A real portal (test process, live server, Celery worker) and two real agents on a fresh
127.x subnet; an AF_PACKET socket on ``lo`` (needs root, CAP_NET_RAW: skipped otherwise,
saying so; CI runs it) keeps every TCP segment to or from the HM port of those two
addresses. The capture checks itself: it must have seen TLS records (else a broken capture
would pass).
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import threading
import time

import pytest

from hapairs.models import HAPair
from hapairs.tests.e2e import AgentFarm, add, node_toml, wait_for, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.django_db(transaction=True)]

ETH_P_ALL = 0x0003
PORT = 8001
PASSWORDS = (b"pw-Capture-Primary-51", b"pw-Capture-Secondary-52")


class LoopbackCapture(threading.Thread):
    """TCP payloads to or from ``port`` on ``hosts``, as (src, sport, dst, dport, payload)."""

    def __init__(self, hosts: set[str], port: int) -> None:
        super().__init__(daemon=True)
        self.hosts, self.port = hosts, port
        self.segments: list[tuple[str, int, str, int, bytes]] = []
        self.datagrams: list[tuple[str, int, str, int, bytes]] = []  # UDP: the heartbeats
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                frame, meta = self.sock.recvfrom(262144)
            except TimeoutError:
                continue
            if meta[2] == socket.PACKET_OUTGOING:  # on lo every frame is seen twice: keep the incoming copy
                continue
            self._keep(frame)
        self.sock.close()

    def _keep(self, frame: bytes) -> None:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":  # Ethernet (lo's framing), IPv4
            return
        ip = frame[14:]
        ihl, proto = (ip[0] & 0x0F) * 4, ip[9]
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        total = struct.unpack("!H", ip[2:4])[0]
        if proto == 17:  # UDP: heartbeat datagrams (cleartext by design: signed, no secret)
            udp = ip[ihl:total]
            sport, dport = struct.unpack("!HH", udp[:4])
            if self.port in (sport, dport) and {src, dst} & self.hosts:
                self.datagrams.append((src, sport, dst, dport, bytes(udp[8:])))
            return
        if proto != 6:  # TCP
            return
        tcp = ip[ihl:total]
        sport, dport = struct.unpack("!HH", tcp[:4])
        if self.port not in (sport, dport) or not ({src, dst} & self.hosts):
            return
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if payload:
            self.segments.append((src, sport, dst, dport, bytes(payload)))


@pytest.fixture
def capture_allowed():
    if os.geteuid() != 0:
        if os.environ.get("MSEPORTAL_REQUIRE_NETNS"):
            pytest.fail("MSEPORTAL_REQUIRE_NETNS is set, but the capture needs root (CAP_NET_RAW)")
        pytest.skip(f"capturing loopback traffic needs root (CAP_NET_RAW); running as uid {os.geteuid()}")


def test_add_configure_switchover_and_failback_send_no_password_and_no_readable_hm_body(
    capture_allowed, tmp_path, subnet, worker, api
):
    p_ip, s_ip, vip = f"{subnet}.15", f"{subnet}.16", f"{subnet}.14"
    capture = LoopbackCapture({p_ip, s_ip}, PORT)
    capture.start()
    farm = AgentFarm(
        tmp_path,
        node_toml("cap-p", "3355", "primary", p_ip, PASSWORDS[0].decode(), vip=vip)
        + node_toml("cap-s", "3355", "secondary", s_ip, PASSWORDS[1].decode()),
        port=PORT,
    ).start()
    try:
        # Given an operator who adds the primary and pairs it, then switches over and fails back
        add(api, "cap-p", p_ip, PASSWORDS[0].decode())
        response = api(
            "post",
            "/appliances/cap-p/ha",
            {
                "secondary_name": "cap-s",
                "secondary_ip": s_ip,
                "secondary_password": PASSWORDS[1].decode(),  # the peer's password travels in this body
                "failover_type": "manual",
                "failback_type": "manual",
                "long_failover_wait": 10,
            },
        )
        assert response.status_code == 202, response.content
        wait_job(api, response.json()["id"], worker=worker)
        assert api("get", "/appliances/cap-p/ha").json()["status"] == "Active"
        response = api("post", "/appliances/cap-p/ha/switchover", {"reason": "capture test"})
        assert response.status_code == 202, response.content
        wait_job(api, response.json()["id"], worker=worker)
        response = api("post", "/appliances/cap-p/services/start", {"reason": "primary repaired"})
        wait_job(api, response.json()["id"], worker=worker)
        wait_for(lambda: api("get", "/appliances/cap-p/ha").json()["primary_state"] == "TERMINATED", timeout=30,
                 what="the primary back as TERMINATED")  # fmt: skip
        allowed_at = HAPair.objects.get().switch_allowed_at
        time.sleep(max(0.0, allowed_at.timestamp() - time.time()) + 1.5)
        response = api("post", "/appliances/cap-p/ha/failback", {"reason": "back to normal"})
        assert response.status_code == 202, response.content
        wait_job(api, response.json()["id"], worker=worker)
    finally:
        farm.stop()
        capture.stop.set()
        capture.join(5)

    # Then the capture saw the HM traffic: portal → both agents, and between the two peers
    segments = capture.segments
    wire = b"".join(seg[4] for seg in segments)
    reached = {dst for _, _, dst, dport, _ in segments if dport == PORT}
    assert reached == {p_ip, s_ip}, f"requests to both agents captured: {sorted(reached)}"
    # and none of it is readable: no password, no JSON, no HTTP
    for password in PASSWORDS:
        assert password not in wire, f"{password!r} crossed the wire in cleartext"
    # (a JSON object's first key, not just '{"', which ciphertext holds by chance every 64 KiB)
    json_key = re.search(rb'\{"[a-z_]{3,40}":', wire)
    assert json_key is None, (
        f"a JSON body in cleartext on the HM port: {wire[json_key.start() : json_key.start() + 80]!r}"
    )
    for readable in (b"HTTP/1.1", b"X-MSE-", b"/hm/v1/"):
        assert readable not in wire, f"{readable!r} in cleartext on the HM port"
    # (and it was TLS it saw: a capture that missed everything would pass the checks above)
    records = sum(1 for seg in segments if seg[4][:1] in (b"\x16", b"\x17") and seg[4][1:2] == b"\x03")
    assert records > 50, f"TLS records seen: {records}"
    # The heartbeats are datagrams (protocol 4): signed, readable, and with no secret in them —
    # no password and no heartbeat key (the key only ever travels inside TLS)
    beats = capture.datagrams
    assert {(src, dst) for src, _, dst, _, _ in beats} >= {(s_ip, p_ip), (p_ip, s_ip)}, "heartbeats both ways"
    for *_, data in beats:
        assert data.startswith(b"MHB4"), data[:16]
        for password in PASSWORDS:
            assert password not in data
        body = json.loads(data[36:])
        assert {"kind", "seq", "boot", "view"} <= body.keys() and not {"hb", "key", "password"} & body.keys(), body
    print(f"\n[capture] {len(beats)} heartbeat datagrams, none with a secret")
    print(f"\n[capture] {len(segments)} segments, {len(wire)} bytes on port {PORT}, {records} starting a TLS record")
