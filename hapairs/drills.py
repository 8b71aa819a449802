"""Failover drills: the probe that writes through the VIP while a drill runs, and the
scorecard made of what it saw and of the agents' events.

The probe is a client of the pair's service API, as an application would be: every
``1/rate`` seconds it POSTs a new element to ``https://VIP:port/api/contextaware/v1/elements``
(HTTP Basic as admin, over TLS to a certificate pinned for one of the two nodes: the
password never leaves in cleartext, nor to a third host), and notes when each write was
acknowledged and by which node. At the end it lists the elements back: an acknowledged
write missing there is lost.

It runs in a thread of the worker that runs the drill's job (its own event loop), from the
job's "start the probe" step to its scorecard step; the job runner stops it however the
job ends (``jobs.at_job_end``). Only the worker holds its figures: a drill whose worker
died part-way ends without a probe, and its scorecard says so.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp

from nodeagent import tlsid

log = logging.getLogger("hapairs.drills")

ELEMENTS = "/api/contextaware/v1/elements"
RATE = 20.0  # writes a second
TIMEOUT = 1.0  # seconds a write may take; a slower one counts as failed


@dataclass
class Attempt:
    t0: float  # wall clock (time.time()): comparable with the agents' event times
    t1: float
    mac: str
    ok: bool  # 201: the write was acknowledged
    served_by: str | None = None  # the node that answered (its certificate, and its word)
    error: str = ""


class _EitherNode(aiohttp.Fingerprint):
    """The VIP's certificate must be one of the pair's two pinned certificates; which one it
    was says who served (aiohttp checks it after the handshake, before the request is sent)."""

    def __init__(self, pins: dict[bytes, str]) -> None:
        super().__init__(next(iter(pins)))
        self.pins = pins
        self.last: str | None = None

    def check(self, transport: asyncio.Transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        got = hashlib.sha256(der).digest() if der else b""
        if got not in self.pins:
            host, port, *_ = transport.get_extra_info("peername") or ("?", 0)
            raise aiohttp.ServerFingerprintMismatch(self.fingerprint, got, host, port)
        self.last = self.pins[got]


@dataclass
class Probe:
    vip: str
    port: int
    password: str = field(repr=False)
    pins: dict[str, str]  # fingerprint -> node name
    prefix: int  # the drill's id: its elements' MACs are 02:pp:pp:nn:nn:nn
    rate: float = RATE
    lifetime: float = 3600.0  # stops by itself after this many seconds, whatever happens
    attempts: list[Attempt] = field(default_factory=list)
    read_back: set[str] | None = None
    read_back_error: str = ""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pin = _EitherNode({tlsid.fingerprint_bytes(f): name for f, name in self.pins.items()})

    # --- control, from the job's steps -------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"drill-probe-{self.prefix}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 + TIMEOUT)

    def collect(self) -> None:
        """Stop writing, then list the elements back through the VIP (who serves it now)."""
        self.stop()
        try:
            self.read_back = asyncio.run(self._list())
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError, TypeError) as exc:
            self.read_back, self.read_back_error = None, f"{type(exc).__name__}: {exc}"[:300]

    # --- the thread ----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"admin:{self.password}".encode()).decode()}

    def _url(self, query: str = "") -> str:
        return f"https://{self.vip}:{self.port}{ELEMENTS}{query}"

    def _run(self) -> None:
        try:
            asyncio.run(self._write_loop())
        except Exception:  # the drill goes on; its scorecard shows the writes that were made
            log.exception("drill probe %s stopped", self.prefix)

    async def _write_loop(self) -> None:
        period, deadline = 1.0 / self.rate, time.monotonic() + self.lifetime
        # a new connection per write: a kept-alive one would stick to the node that held the
        # VIP when it was opened, and hide the move a client would see
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(headers=self._headers(), connector=connector) as session:
            i, next_at = 0, time.monotonic()
            while not self._stop.is_set() and time.monotonic() < deadline:
                await self._write(session, i)
                i += 1
                next_at += period
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    next_at = time.monotonic()

    async def _write(self, session: aiohttp.ClientSession, i: int) -> None:
        mac = f"02:{self.prefix >> 8 & 255:02x}:{self.prefix & 255:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
        t0 = time.time()
        attempt = Attempt(t0=t0, t1=t0, mac=mac, ok=False)
        try:
            async with session.post(
                self._url(),
                json={"mac": mac, "x": i % 1000, "y": i // 1000, "floor": 1},
                ssl=self._pin,
                timeout=aiohttp.ClientTimeout(total=TIMEOUT),
                allow_redirects=False,
            ) as response:
                attempt.ok = response.status == 201
                attempt.served_by = self._pin.last
                if not attempt.ok:
                    attempt.error = f"HTTP {response.status}"
        except aiohttp.ServerFingerprintMismatch:
            attempt.error = "the VIP presented a certificate of neither node: not written to"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            attempt.error = type(exc).__name__
        attempt.t1 = time.time()
        self.attempts.append(attempt)

    async def _list(self) -> set[str]:
        async with aiohttp.ClientSession(headers=self._headers()) as session:
            async with session.get(
                self._url("?limit=100000000"), ssl=self._pin, timeout=aiohttp.ClientTimeout(total=15)
            ) as response:
                if response.status != 200:
                    raise ValueError(f"listing the elements answered HTTP {response.status}")
                body = await response.json(content_type=None)
                return {e["mac"] for e in body["elements"] if isinstance(e, dict)}


# --- the probes of this process's running drills ---------------------------------------------
_probes: dict[int, Probe] = {}
_probes_lock = threading.Lock()


def probe_put(job_id: int, probe: Probe) -> None:
    with _probes_lock:
        old = _probes.pop(job_id, None)
        _probes[job_id] = probe
    if old is not None:
        old.stop()


def probe_of(job_id: int) -> Probe | None:
    with _probes_lock:
        return _probes.get(job_id)


def probe_drop(job_id: int) -> None:
    """The job ended (any way): stop its probe, forget it."""
    with _probes_lock:
        probe = _probes.pop(job_id, None)
    if probe is not None:
        probe.stop()


# --- the scorecard -------------------------------------------------------------------------
# (key, label, unit): the figures, in the order the page, the report and the API show them
SCORECARD = (
    ("detection_s", "Detection: the agents acknowledged the switchover", "s"),
    ("decision_s", "Decision: the secondary started taking over", "s"),
    ("vip_moved_s", "VIP moved to the secondary", "s"),
    ("first_success_s", "First successful client write after it", "s"),
    ("outage_s", "Client-visible outage (switchover)", "s"),
    ("failback_outage_s", "Client-visible outage (failback)", "s"),
    ("writes_attempted", "Writes attempted", ""),
    ("writes_acknowledged", "Writes acknowledged", ""),
    ("writes_lost", "Acknowledged writes lost", ""),
    ("catch_up_s", "Replication caught up after the failback", "s"),
)


def _outage(attempts: list[Attempt], since: float, until: float | None) -> float | None:
    """The longest a client waited between two acknowledged writes from ``since`` (to
    ``until``): the outage it saw. None when nothing was acknowledged after ``since``."""
    ok = [a.t1 for a in attempts if a.ok and a.t1 >= since and (until is None or a.t0 < until)]
    before = [a.t1 for a in attempts if a.ok and a.t1 < since]
    times = before[-1:] + ok if before else [since, *ok]
    if len(times) < 2:
        return None
    return max(current - previous for previous, current in zip(times, times[1:], strict=False))


def scorecard(
    *,
    probe: Probe | None,
    requested_at: float,
    secondary: str,
    events: dict[str, datetime],
    failback_at: float | None,
    caught_up_at: float | None,
) -> dict:
    """The drill's figures, in seconds from the switchover's request (``requested_at``) unless
    said: ``events`` are the first time of each agent event code during the drill."""

    def since_request(code: str) -> float | None:
        at = events.get(code)
        return round(at.timestamp() - requested_at, 2) if at else None

    card: dict = {
        "detection_s": since_request("failover_shutting_down_primary"),
        "decision_s": since_request("failover_starting_instance"),
        "vip_moved_s": since_request("vip_taken"),
        "catch_up_s": round(caught_up_at - failback_at, 2) if caught_up_at and failback_at else None,
        "probe": "ran" if probe is not None else "none: the worker that started the drill did not finish it",
    }
    if probe is None:
        return card | {k: None for k in ("first_success_s", "outage_s", "failback_outage_s", "writes_attempted",
                                         "writes_acknowledged", "writes_lost")}  # fmt: skip
    attempts = probe.attempts
    outage = _outage(attempts, requested_at, failback_at)
    failback_outage = _outage(attempts, failback_at, None) if failback_at else None
    # the first write the secondary acknowledged: the clients are served again, by it
    back_at = next((a.t1 for a in attempts if a.ok and a.served_by == secondary and a.t0 >= requested_at), None)
    acknowledged = {a.mac for a in attempts if a.ok}
    lost = None if probe.read_back is None else len(acknowledged - probe.read_back)
    card |= {
        "first_success_s": round(back_at - requested_at, 2) if back_at else None,
        "outage_s": round(outage, 2) if outage is not None else None,
        "failback_outage_s": round(failback_outage, 2) if failback_outage is not None else None,
        "writes_attempted": len(attempts),
        "writes_acknowledged": len(acknowledged),
        "writes_lost": lost,
        "served_by": sorted({a.served_by for a in attempts if a.ok and a.served_by}),
    }
    if probe.read_back is None:
        card["read_back_error"] = probe.read_back_error
    return card


def scorecard_rows(card: dict | None) -> list[tuple[str, str]]:
    """(label, value) lines of a scorecard, for the page and the report ("—": not measured)."""
    if not card:
        return []
    rows = []
    for key, label, unit in SCORECARD:
        value = card.get(key)
        rows.append((label, "—" if value is None else f"{value:g} {unit}".strip() if unit else str(value)))
    return rows
