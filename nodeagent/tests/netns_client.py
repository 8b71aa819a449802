"""The client host's programs for the netns tests, run inside the client namespace with
``ip netns exec NS python -m nodeagent.tests.netns_client ...`` (so every request the
test makes to the lab comes from the client host, on the lab's LAN).

* ``writer --vip IP --password PW --out FILE [--rate 50] [--mac-prefix 02:00:00]``: POSTs a new element to the
  VIP's service API ``rate`` times a second until SIGTERM, one after another (a new one
  starts at the next tick, or at once when a request took longer). Each request becomes a
  JSON line in FILE: ``{"i", "mac", "t0", "t1", "ok", "status", "served_by", "err"}``
  with ``t0``/``t1`` = ``time.monotonic()`` at start/end (the same clock as the test
  process: no time namespaces here). ``ok`` = 201 (acknowledged). The element MACs are
  ``PREFIX:xx:xx:xx`` (the request number): two writers with different prefixes never
  write the same element.
* ``elements --vip IP --password PW``: prints ``{"status", "served_by", "macs"}`` of the
  whole element listing on the VIP.
* ``ha-info IP:PW [IP:PW ...]``: prints a JSON list, per node ``{"host", "status",
  "info"}`` (signed ``GET /hm/v1/ha-info?brief=1``; status null and ``error`` when it
  cannot be reached).
* ``events IP:PW``: prints a node's event log (a JSON list).
* ``witness-state IP:PORT PW``: prints a witness's ``{"status", "pairs"}`` (signed ``GET
  /witness/v1/state``; status null when it cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import time

import aiohttp

from nodeagent.client import AgentClient

PORT = 8001
ELEMENTS = "/api/contextaware/v1/elements"


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}


async def writer(vip: str, password: str, out: str, rate: float, timeout: float, mac_prefix: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = f"http://{vip}:{PORT}{ELEMENTS}"
    period = 1.0 / rate
    i = 0
    nxt = time.monotonic()
    # a fresh connection per request: a kept-alive one would hide the neighbour entry (the
    # request goes wherever ARP says the VIP is now) and a dead owner's half-open socket
    conn = aiohttp.TCPConnector(force_close=True)
    with open(out, "a", buffering=1) as f:
        async with aiohttp.ClientSession(headers=basic(password), connector=conn) as s:
            while not stop.is_set():
                mac = f"{mac_prefix}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
                rec = {"i": i, "mac": mac, "t0": time.monotonic(), "ok": False, "status": None, "served_by": None}
                try:
                    async with s.post(
                        url,
                        json={"mac": mac, "x": i, "y": -i, "floor": 1},
                        timeout=aiohttp.ClientTimeout(total=timeout),
                    ) as r:
                        rec["status"] = r.status
                        try:
                            body = await r.json(content_type=None)
                        except ValueError:
                            body = None
                        if isinstance(body, dict):
                            rec["served_by"] = body.get("served_by")
                        rec["ok"] = r.status == 201
                except (TimeoutError, aiohttp.ClientError, OSError) as e:
                    rec["err"] = f"{type(e).__name__}: {e}"[:200]
                rec["t1"] = time.monotonic()
                f.write(json.dumps(rec) + "\n")
                i += 1
                nxt += period
                delay = nxt - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except TimeoutError:
                        pass
                else:
                    nxt = time.monotonic()


async def elements(vip: str, password: str) -> dict:
    async with aiohttp.ClientSession(headers=basic(password)) as s:
        async with s.get(f"http://{vip}:{PORT}{ELEMENTS}?limit=10000000", timeout=aiohttp.ClientTimeout(total=10)) as r:
            body = await r.json(content_type=None)
            return {
                "status": r.status,
                "served_by": body.get("served_by") if isinstance(body, dict) else None,
                "macs": [e["mac"] for e in body.get("elements", [])] if isinstance(body, dict) else [],
            }


async def ha_info(targets: list[str], timeout: float) -> list[dict]:
    async with aiohttp.ClientSession() as s:

        async def one(t: str) -> dict:
            host, _, pw = t.partition(":")
            try:
                st, info = await AgentClient(s, host, pw, timeout=timeout).request("GET", "/hm/v1/ha-info?brief=1")
                return {"host": host, "status": st, "info": info}
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                return {"host": host, "status": None, "error": f"{type(e).__name__}: {e}"}

        return list(await asyncio.gather(*(one(t) for t in targets)))


async def events(target: str, timeout: float) -> list[dict]:
    """A node's event log (signed ``GET /hm/v1/events``)."""
    host, _, pw = target.partition(":")
    async with aiohttp.ClientSession() as s:
        return (await AgentClient(s, host, pw, timeout=timeout).call("GET", "/hm/v1/events?since=0&limit=1000"))[
            "events"
        ]


async def witness_state(target: str, password: str, timeout: float) -> dict:
    host, _, port = target.partition(":")
    async with aiohttp.ClientSession() as s:
        try:
            st, out = await AgentClient(s, host, password, port=int(port), timeout=timeout, tls=False).request(
                "GET", "/witness/v1/state"
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return {"status": None, "error": f"{type(e).__name__}: {e}", "pairs": {}}
        return {"status": st, "pairs": out.get("pairs", {}) if isinstance(out, dict) else {}}


async def switchover(target: str, timeout: float) -> dict:
    """An operator's switchover asked of a node (signed ``POST /hm/v1/ha/failover``)."""
    host, _, pw = target.partition(":")
    async with aiohttp.ClientSession() as s:
        st, out = await AgentClient(s, host, pw, timeout=timeout).request("POST", "/hm/v1/ha/failover", {})
        return {"status": st, "answer": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netns_client")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("writer")
    w.add_argument("--vip", required=True)
    w.add_argument("--password", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--rate", type=float, default=50.0)
    # a request into a black hole (the VIP's old owner gone, the client's ARP entry not yet
    # moved) fails after this long, so a takeover is seen within it (1 s, one writer at a time,
    # added up to a whole second to the measured outage: 11.16 s for a takeover at 10.0 s)
    w.add_argument("--timeout", type=float, default=0.5)
    w.add_argument("--mac-prefix", default="02:00:00", help="the MACs' first three octets")
    e = sub.add_parser("elements")
    e.add_argument("--vip", required=True)
    e.add_argument("--password", required=True)
    h = sub.add_parser("ha-info")
    h.add_argument("targets", nargs="+", help="IP:PASSWORD")
    h.add_argument("--timeout", type=float, default=2.0)
    so = sub.add_parser("switchover")
    so.add_argument("target", help="IP:PASSWORD")
    so.add_argument("--timeout", type=float, default=5.0)
    ev = sub.add_parser("events")
    ev.add_argument("target", help="IP:PASSWORD")
    ev.add_argument("--timeout", type=float, default=2.0)
    ws = sub.add_parser("witness-state")
    ws.add_argument("target", help="IP:PORT")
    ws.add_argument("password")
    ws.add_argument("--timeout", type=float, default=2.0)
    a = ap.parse_args(argv)
    if a.cmd == "writer":
        asyncio.run(writer(a.vip, a.password, a.out, a.rate, a.timeout, a.mac_prefix))
    elif a.cmd == "elements":
        print(json.dumps(asyncio.run(elements(a.vip, a.password))))
    elif a.cmd == "switchover":
        print(json.dumps(asyncio.run(switchover(a.target, a.timeout))))
    elif a.cmd == "events":
        print(json.dumps(asyncio.run(events(a.target, a.timeout))))
    elif a.cmd == "witness-state":
        print(json.dumps(asyncio.run(witness_state(a.target, a.password, a.timeout))))
    else:
        print(json.dumps(asyncio.run(ha_info(a.targets, a.timeout))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
