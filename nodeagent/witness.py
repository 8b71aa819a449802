"""The witness: a small arbiter, so a two-node pair never splits its brain.

A pair alone cannot tell a dead peer from a cut link. With witnesses (``[[pair]]
witnesses = ["IP:PORT", …]``, run by ``python -m nodeagent witness --listen IP[:PORT]``):

* the **primary** renews a lease from each witness every heartbeat interval. It keeps the
  VIP while it hears its secondary or holds a majority lease, and it acknowledges a write
  its secondary did not get only under a lease asked for *while alone* (``solo``). So a
  primary cut off from everything stops acknowledging at once and withdraws its VIP when
  its lease ends — a third of the wait, strictly before the secondary may take over;
* the **secondary** takes over automatically only when a majority of witnesses confirm it:
  each witness confirms only if it has not heard the primary for the whole wait, the
  primary's lease has run out, and — in the default ``safe`` mode — the primary did not
  acknowledge writes alone (a takeover would lose them). Having confirmed generation G, a
  witness never grants a lease below G again, so the old primary cannot come back in charge.

"Witness unreachable and primary gone": in ``safe`` mode the secondary does not take over
(no acknowledged write is ever lost; the operator can still switch over by hand); in
``availability`` mode a witness confirms even after the primary acknowledged writes alone,
which trades those writes for service, and says so in its answer.

:class:`Arbiter` is the witness's pure logic (time passed in), :func:`build_witness_app` its
signed HTTP API, :class:`WitnessGuard` the agent's side (leases, confirmations, fencing).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from . import protocol as P
from .client import AgentClient
from .haconfig import WITNESS_AVAILABILITY, WITNESS_MODES
from .protocol import EventCode, Role, explain
from .store import atomic_write_json

if TYPE_CHECKING:  # types only: node.py imports this module
    from .node import Node
    from .pair import PairRuntime

log = logging.getLogger("nodeagent.witness")

PATH_LEASE = "/witness/v1/lease"
PATH_CONFIRM = "/witness/v1/confirm"
PATH_STATE = "/witness/v1/state"
RETRY_REFUSED = 0.25  # seconds between confirmation requests while a due takeover is refused


# ---------------------------------------------------------------- the arbiter (pure)
@dataclass
class PairRecord:
    primary_seen: float  # witness clock: the primary's last lease request
    lease_until: float = 0.0
    generation: int = 0  # the highest generation the primary asked at
    solo: bool = False  # the primary acknowledges writes its secondary does not have
    solo_since: float | None = None
    promoted: int = 0  # the highest generation a takeover was confirmed for


class Arbiter:
    """One witness's decisions for every pair it watches. Time is passed in (monotonic)."""

    def __init__(self, now: float, state: dict[str, Any] | None = None) -> None:
        # a (re)started witness has not heard anyone yet: it counts the primary as heard now,
        # so it confirms nothing before a whole wait has passed
        self.started = now
        self.pairs: dict[str, PairRecord] = {}
        for key, saved in (state or {}).items():
            self.pairs[key] = PairRecord(primary_seen=now, promoted=int(saved.get("promoted", 0)),
                                         solo=bool(saved.get("solo", False)), solo_since=now if saved.get("solo") else None)  # fmt: skip

    def _record(self, pair: str) -> PairRecord:
        return self.pairs.setdefault(pair, PairRecord(primary_seen=self.started))

    def lease(self, pair: str, *, generation: int, solo: bool, ttl: float, now: float) -> tuple[bool, str]:
        rec = self._record(pair)
        if generation < rec.promoted:
            return False, f"a takeover to generation {rec.promoted} was confirmed: step down"
        rec.primary_seen = now
        rec.lease_until = now + ttl
        rec.generation = max(rec.generation, generation)
        if solo and not rec.solo:
            rec.solo_since = now
        rec.solo = solo
        rec.solo_since = rec.solo_since if solo else None
        return True, f"lease for {ttl:g} s"

    def confirm(self, pair: str, *, generation: int, wait: float, mode: str, now: float) -> tuple[bool, str]:
        rec = self._record(pair)
        if generation <= rec.promoted:
            return True, f"takeover to generation {rec.promoted} already confirmed"
        heard = now - rec.primary_seen
        if heard < wait:
            return False, f"takeover refused: witness sees the primary (heard {heard:.1f} s ago)"
        if rec.lease_until > now:
            return False, f"takeover refused: the primary's lease runs {rec.lease_until - now:.1f} s more"
        if rec.solo and mode != WITNESS_AVAILABILITY:
            return False, (
                "takeover refused: the primary acknowledged writes its secondary does not have "
                f"(alone for {now - (rec.solo_since or now):.0f} s); a takeover would lose them (witness_mode safe)"
            )
        rec.promoted = generation
        note = " (availability mode: writes it acknowledged alone are lost)" if rec.solo else ""
        return True, f"witness confirms: the primary has not been heard for {heard:.1f} s{note}"

    def state(self) -> dict[str, Any]:
        """What survives a restart: confirmed takeovers, and who acknowledged alone."""
        return {key: {"promoted": rec.promoted, "solo": rec.solo} for key, rec in self.pairs.items()}

    def report(self, now: float) -> dict[str, Any]:
        return {
            key: {**asdict(rec), "primary_heard_seconds_ago": round(now - rec.primary_seen, 3),
                  "lease_seconds_left": round(max(0.0, rec.lease_until - now), 3)}
            for key, rec in self.pairs.items()
        }  # fmt: skip


def pair_key(primary_hm_ip: str, secondary_hm_ip: str) -> str:
    return f"{primary_hm_ip}/{secondary_hm_ip}"


# ---------------------------------------------------------------- the witness's API
ARBITER_KEY = web.AppKey("arbiter", Arbiter)


def build_witness_app(password: str, state_file: Path | None = None) -> web.Application:
    """Signed (with the witness password) like the agents' API, and in the same protocol."""
    replay = P.ReplayCache()
    arbiter = Arbiter(time.monotonic(), _load(state_file))

    @web.middleware
    async def guard(request: web.Request, handler):
        body = await request.read()
        try:
            P.verify_request(password, request.method, request.path_qs, body, request.headers, replay_cache=replay)
            P.check_version(request.headers.get(P.HEADER_PROTOCOL), who="the caller")
        except (P.SignatureError, P.ProtocolMismatch) as e:
            resp = web.json_response({"error": str(e)}, status=401 if isinstance(e, P.SignatureError) else 400)
        else:
            try:
                resp = await handler(request)
            except (ValueError, KeyError, TypeError) as e:
                resp = web.json_response({"error": f"bad request: {e}"}, status=400)
        resp.headers[P.HEADER_PROTOCOL] = str(P.PROTOCOL_VERSION)
        return resp

    def persist() -> None:
        if state_file is not None:
            atomic_write_json(state_file, arbiter.state())

    async def lease(request: web.Request) -> web.Response:
        b = json.loads(await request.read())
        ok, why = arbiter.lease(str(b["pair"]), generation=int(b["generation"]), solo=bool(b["solo"]),
                                ttl=min(60.0, max(0.1, float(b["ttl"]))), now=time.monotonic())  # fmt: skip
        persist()
        return web.json_response({"granted": ok, "reason": why}, status=200 if ok else 409)

    async def confirm(request: web.Request) -> web.Response:
        b = json.loads(await request.read())
        mode = str(b.get("mode", "safe"))
        if mode not in WITNESS_MODES:
            raise ValueError(f"mode must be one of {WITNESS_MODES}")
        ok, why = arbiter.confirm(str(b["pair"]), generation=int(b["generation"]), wait=float(b["wait"]),
                                  mode=mode, now=time.monotonic())  # fmt: skip
        persist()
        return web.json_response({"confirmed": ok, "reason": why}, status=200 if ok else 409)

    async def state(request: web.Request) -> web.Response:
        return web.json_response({"pairs": arbiter.report(time.monotonic())})

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[ARBITER_KEY] = arbiter
    app.router.add_post(PATH_LEASE, lease)
    app.router.add_post(PATH_CONFIRM, confirm)
    app.router.add_get(PATH_STATE, state)
    return app


def _load(state_file: Path | None) -> dict[str, Any] | None:
    if state_file is None or not state_file.exists():
        return None
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError):
        log.error("witness state %s unreadable: starting with nothing confirmed", state_file)
        return None
    return data if isinstance(data, dict) else None


async def serve_witness(host: str, port: int, password: str, state_file: Path | None) -> None:
    runner = web.AppRunner(build_witness_app(password, state_file), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    log.info("witness listening on %s:%s", host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- the agent's side
class WitnessGuard:
    """Leases (primary), confirmations (secondary) and fencing, for pairs with witnesses."""

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    def start(self, pr: PairRuntime) -> None:
        if pr.ha.config.witnesses and pr.witness_task is None:
            pr.witness_task = asyncio.create_task(self.loop(pr), name=f"{self.node.cfg.name}-witness-{pr.peer_hm_ip}")

    def key(self, pr: PairRuntime) -> str:
        cfg = self.node.cfg
        return pair_key(cfg.hm_ip, pr.peer_hm_ip) if cfg.role is Role.PRIMARY else pair_key(pr.peer_hm_ip, cfg.hm_ip)

    async def _ask(self, pr: PairRuntime, path: str, body: dict[str, Any], timeout: float) -> list[tuple[bool, str]]:
        session = self.node.session
        assert session is not None, "started"

        async def one(address: str) -> tuple[bool, str]:
            host, _, port = address.partition(":")
            client = AgentClient(
                session, host, pr.ha.config.witness_password, port=int(port), timeout=timeout, tls=False
            )
            try:
                status, out = await client.request("POST", path, body, auto_key=False)
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                return False, f"{address} unreachable ({type(e).__name__})"
            reason = out.get("reason") or out.get("error") if isinstance(out, dict) else None
            return status == 200, f"{address}: {reason or f'HTTP {status}'}"

        return list(await asyncio.gather(*(one(w) for w in pr.ha.config.witnesses)))

    async def loop(self, pr: PairRuntime) -> None:
        node = self.node
        while not node.stopping:
            interval = pr.ha.config.heartbeat_interval
            started = time.monotonic()
            try:
                if node.cfg.role is Role.PRIMARY:
                    await self.renew(pr)
                elif await self.maybe_confirm(pr) is False:
                    # a due takeover refused: the witness heard the primary up to one interval after
                    # this node last did (its lease renewals are on their own clock), so ask again
                    # soon rather than a whole interval later
                    interval = min(interval, RETRY_REFUSED)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep guarding; the error is logged
                log.exception("%s: witness round failed", node.cfg.name)
            # the next round after an interval, or at once when the primary has just lost its
            # secondary (a write is waiting for a lease asked for alone)
            try:
                async with asyncio.timeout(max(0.0, interval - (time.monotonic() - started))):
                    await pr.witness_wake.wait()
            except TimeoutError:
                pass
            pr.witness_wake.clear()

    async def renew(self, pr: PairRuntime) -> None:
        """Primary: a lease from a majority, asked as "alone" when the secondary is not in step."""
        if not pr.ha.in_charge:  # stepped down (or not yet in charge): no lease to hold
            pr.lease_until = pr.solo_lease_until = 0.0
            return
        cfg = pr.ha.config
        solo = not pr.in_step()
        t0 = time.monotonic()  # the lease counts from before the request: never longer than the witness's
        answers = await self._ask(pr, PATH_LEASE, {"pair": self.key(pr), "generation": pr.ha.generation, "solo": solo,
                                                   "ttl": cfg.lease_seconds}, timeout=cfg.heartbeat_interval)  # fmt: skip
        granted = sum(ok for ok, _ in answers)
        pr.witness_view = answers
        if granted >= cfg.majority:
            pr.lease_until = t0 + cfg.lease_seconds
            pr.solo_lease_until = pr.lease_until if solo else 0.0
        self.node.changed_fencing(pr)

    async def confirm_now(self, pr: PairRuntime) -> tuple[bool, str]:
        """Secondary: ask the witnesses to confirm a takeover now; (confirmed, their refusals)."""
        cfg = pr.ha.config
        answers = await self._ask(pr, PATH_CONFIRM, {"pair": self.key(pr), "generation": pr.ha.generation + 1,
                                                     "wait": cfg.failover_wait, "mode": cfg.witness_mode},
                                  timeout=cfg.heartbeat_interval)  # fmt: skip
        pr.witness_view = answers
        confirmed = [why for ok, why in answers if ok]
        if len(confirmed) >= cfg.majority:
            pr.ha.takeover_confirmed_until = time.time() + 2 * cfg.heartbeat_interval + 1
            pr.ha.takeover_confirmed_by = f"{len(confirmed)} of {len(cfg.witnesses)} witnesses confirmed"
            reason = explain(
                "witness.majority",
                f"Takeover confirmed: {len(confirmed)} of {len(cfg.witnesses)} witnesses say the primary is gone "
                f"(a majority is {cfg.majority}).",
                witnesses=len(cfg.witnesses), confirmed=len(confirmed), majority=cfg.majority,
            )  # fmt: skip
            self.node.emit(EventCode.TAKEOVER_CONFIRMED, "; ".join(confirmed), pr, why=reason)
            return True, ""
        refused = "; ".join(why for ok, why in answers if not ok)
        return False, f"{len(confirmed)} of {len(answers)} witnesses confirm (a majority is {cfg.majority}): {refused}"

    async def maybe_confirm(self, pr: PairRuntime) -> bool | None:
        """Secondary: when an automatic takeover is due, ask the witnesses for it. None: none
        due; else whether they confirmed it."""
        now = time.time()
        if not pr.ha.automatic_takeover_due(now):
            pr.refusal_shown = ""
            return None
        confirmed, refusal = await self.confirm_now(pr)
        if confirmed:
            self.node.wake()
            return True
        first = refusal.split(": ", 1)[-1].split(" (")[0]
        if first != pr.refusal_shown:  # one event per reason, not one a second
            pr.refusal_shown = first
            cfg = pr.ha.config
            granted = sum(ok for ok, _ in pr.witness_view)
            reason = explain(
                "witness.no_majority",
                f"Takeover refused: the primary is silent for {cfg.failover_wait:g} s, but only {granted} of "
                f"{len(cfg.witnesses)} witnesses confirm it is gone (a majority is {cfg.majority}).",
                failover_wait_s=cfg.failover_wait, witnesses=len(cfg.witnesses), confirmed=granted,
                majority=cfg.majority, mode=cfg.witness_mode,
            )  # fmt: skip
            self.node.emit(EventCode.TAKEOVER_REFUSED, refusal, pr, why=reason)
        return False
