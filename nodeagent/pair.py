"""One HA pair as a node sees it: the peer's addresses, the pair's state machine
(:class:`~nodeagent.hastate.PairHA`), the instance it replicates, and the run-time figures
(heartbeat response times, copy progress, the running procedure and heartbeat tasks)."""

from __future__ import annotations

import array
import asyncio
import time
from typing import TYPE_CHECKING, Any

from .client import AgentClient
from .datagram import PeerKey
from .hastate import PairHA, PeerView
from .protocol import Cause, HeartbeatPath, ReplicationStatus, Role, instance_names
from .replication import InstanceStore
from .scheduler import Job

# a command's cause is echoed at most this long (a procedure that never settles)
CAUSE_MAX_SECONDS = 600.0
RTTS_KEPT = 50  # the mean heartbeat response time is of this many last heartbeats

if TYPE_CHECKING:  # a type only: node.py imports this module
    from .node import Node


class PairRuntime:
    # slots, not a dict per pair: an agent farm holds thousands
    __slots__ = (
        "_mean_ms",
        "_rtt_next",
        "_witness_wake",
        "beat_awake",
        "beat_job",
        "cause",
        "cause_since",
        "fenced_shown",
        "ha",
        "hb_peer",
        "hb_sent",
        "hb_heads",
        "hb_heard",
        "hello_at",
        "hello_due",
        "hello_task",
        "instance",
        "lag_since",
        "lease_until",
        "node",
        "path_heard",
        "path_shown_up",
        "peer",
        "peer_digest",
        "peer_mean_ms",
        "peer_view",
        "proc",
        "refusal_shown",
        "replication",
        "rtts",
        "saved_sig",
        "slot",
        "solo_lease_until",
        "staging",
        "status_note",
        "sync_done_once",
        "sync_percent",
        "witness_task",
        "witness_view",
    )

    def __init__(self, node: Node, peer: dict, slot: int, ha: PairHA) -> None:
        self.node = node
        self.peer = peer  # name, hm_ip, vip, netmask, password, version, udi, device_type, direct_connect, port
        self.slot = slot
        self.ha = ha
        # the response times of the last RTTS_KEPT heartbeats, a ring (a secondary's; made at its first)
        self.rtts: array.array[float] | None = None
        self._rtt_next = 0
        self._mean_ms: float | None = None
        self.peer_mean_ms: float | None = None
        self.peer_view: PeerView | None = None
        self.peer_digest: dict = {}
        self.sync_percent = 0
        self.sync_done_once = False
        self.replication = ReplicationStatus.SETTING_UP
        # the operator command driving this pair's procedure (switchover, failback, a new
        # pairing): echoed on every event until the pair settles; see settle_cause
        self.cause: Cause | None = None
        self.cause_since = 0.0
        # per path: when a heartbeat last crossed it, and whether it was last seen up (events)
        self.path_heard: dict[HeartbeatPath, float] = {}
        self.path_shown_up: dict[HeartbeatPath, bool] = {}
        # heartbeats (nodeagent.heartbeat): the peer's key and sequence, the secondary's beat
        # job and the send times of its unanswered beats, the hello (keys over TLS) in flight
        self.hb_peer = PeerKey()
        self.beat_job: Job | None = None
        self.hb_sent: dict[int, tuple[float, float, HeartbeatPath]] = {}  # seq -> (monotonic, wall, path)
        self.lag_since: float | None = None  # monotonic: since when the replica is behind (note_lag)
        # the encoded fixed members of its datagrams, per (kind, path): Heartbeats.datagram_for
        self.hb_heads: dict[tuple[str, HeartbeatPath], tuple[tuple, bytes]] | None = None
        # per path, what the head of the peer's last accepted datagram said: Heartbeats._known
        self.hb_heard: dict[HeartbeatPath, Any] | None = None
        self.hello_task: asyncio.Task | None = None
        self.hello_at = float("-inf")
        self.hello_due = float("inf")  # Heartbeats.start sets it
        # silence is counted on the node's awake clock (Node.awake_now) from the last beat
        self.beat_awake = node.awake_now()
        ha.quiet = 0.0
        # witnesses (see nodeagent.witness): the primary's leases (monotonic), the last answers
        self.witness_task: asyncio.Task | None = None
        self._witness_wake: asyncio.Event | None = None  # see witness_wake
        self.lease_until = 0.0  # a majority lease: may hold the VIP without hearing the secondary
        self.solo_lease_until = 0.0  # one asked while alone: may acknowledge writes the secondary lacks
        self.witness_view: list[tuple[bool, str]] = []
        self.refusal_shown = ""
        self.fenced_shown = False
        self.proc: asyncio.Task | None = None
        self.saved_sig: Any = None
        self.status_note = ""
        self.staging: list[dict] | None = None  # a failback copy's records, applied at its end
        if node.cfg.role is Role.SECONDARY:
            names = instance_names(slot)
            self.instance = InstanceStore(
                names["secondary_db_name"], names["secondary_db_port"], node.sd.instance_log(names["secondary_db_name"])
            )
        else:
            assert node.own_instance is not None, "a primary has its own instance"
            self.instance = node.own_instance

    # addresses and secrets of the pair
    @property
    def peer_hm_ip(self) -> str:
        return self.peer["hm_ip"]

    @property
    def vip(self) -> str | None:
        return self.node.cfg.vip if self.node.cfg.role is Role.PRIMARY else self.peer["vip"]

    @property
    def netmask(self) -> str | None:
        return self.node.cfg.netmask if self.node.cfg.role is Role.PRIMARY else self.peer.get("netmask")

    @property
    def service_password(self) -> str:
        return self.node.cfg.password if self.node.cfg.role is Role.PRIMARY else self.peer["password"]

    @property
    def direct(self) -> bool:
        return bool(self.node.cfg.direct_connect and self.peer.get("direct_connect"))

    @property
    def paths(self) -> list[HeartbeatPath]:
        """The paths this pair's heartbeats travel: the HM network, and the direct link."""
        return [HeartbeatPath.HM, HeartbeatPath.DIRECT] if self.direct else [HeartbeatPath.HM]

    def path_names(self) -> list[str]:
        return [path.value for path in self.paths]

    def replication_lag(self) -> int:
        """Records the replica lacks: the copy in charge's log sequence number less the other's
        (this node's instance and the peer's, as its last heartbeat said)."""
        peer_lsn = self.peer_digest.get("lsn") if isinstance(self.peer_digest, dict) else None
        if not isinstance(peer_lsn, int):
            return 0
        mine = self.instance.lsn
        return max(0, mine - peer_lsn) if self.ha.in_charge else max(0, peer_lsn - mine)

    def note_lag(self) -> None:
        """Since when the replica has been behind (None: it is not), for the lag in seconds."""
        if self.replication_lag() == 0:
            self.lag_since = None
        elif self.lag_since is None:
            self.lag_since = time.monotonic()

    def path_up(self, path: HeartbeatPath, now: float) -> bool:
        heard = self.path_heard.get(path)
        return heard is not None and now - heard <= self.ha.config.heartbeat_down_after

    def client(self, timeout: float = 2.0, *, path: HeartbeatPath | None = None) -> AgentClient:
        """A client to the peer over ``path``; by default the direct link while it carries
        heartbeats (or before any were heard), else the HM network."""
        if path is None:
            direct_ok = self.direct and (not self.path_heard or self.path_up(HeartbeatPath.DIRECT, time.time()))
            path = HeartbeatPath.DIRECT if direct_ok else HeartbeatPath.HM
        host = self.peer["direct_connect"] if path is HeartbeatPath.DIRECT else self.peer["hm_ip"]
        assert self.node.session is not None, "the node is started"
        return AgentClient(
            self.node.session,
            host,
            self.peer["password"],
            port=self.peer.get("port", self.node.cfg.port),
            timeout=timeout,
            fingerprint=self.peer.get("fingerprint"),  # pinned at configure (the portal gives it)
        )

    @property
    def witness_wake(self) -> asyncio.Event:
        """Set: ask the witnesses now (the secondary just went away). Made when first used."""
        if self._witness_wake is None:
            self._witness_wake = asyncio.Event()
        return self._witness_wake

    def add_rtt(self, seconds: float) -> None:
        """One heartbeat's response time (its ack came): the mean is kept, not summed per read."""
        if self.rtts is None:
            self.rtts = array.array("d")
        if len(self.rtts) < RTTS_KEPT:
            self.rtts.append(seconds)
        else:
            self.rtts[self._rtt_next] = seconds
            self._rtt_next = (self._rtt_next + 1) % RTTS_KEPT
        self._mean_ms = round(sum(self.rtts) / len(self.rtts) * 1000, 3)

    @property
    def mean_ms(self) -> float | None:
        """The mean response time of the last heartbeats (ms); a primary's is its secondary's."""
        return self._mean_ms if self._mean_ms is not None else self.peer_mean_ms

    def in_step(self) -> bool:
        """The secondary has every write this primary acknowledges (heartbeats and replication up)."""
        return self.ha.heartbeat_up and self.replication is ReplicationStatus.UP

    def fenced(self) -> bool:
        """A primary with witnesses that hears neither its secondary (by the clock, not the
        last tick: a frozen process wakes up fenced) nor holds a majority lease: it must not
        serve the VIP. Without witnesses a pair is never fenced (as before)."""
        ha = self.ha
        if not ha.config.witnesses or self.node.cfg.role is not Role.PRIMARY or not ha.in_charge:
            return False
        heard = ha.last_heard is not None and time.time() - ha.last_heard <= ha.config.heartbeat_down_after
        return not heard and time.monotonic() >= self.lease_until

    def may_ack_alone(self) -> bool:
        """A write the secondary did not get may be acknowledged: no witnesses (as before), or
        a majority lease asked for while alone (the witnesses then refuse a takeover)."""
        return not self.ha.config.witnesses or time.monotonic() < self.solo_lease_until

    def take_cause(self, cause: Cause | None, now: float) -> None:
        """A command starts a procedure on this pair: its events carry ``cause`` from now on."""
        if cause:
            self.cause, self.cause_since = cause, now

    def settle_cause(self, now: float) -> None:
        """The pair is settled (no phase, no procedure running, synchronised once): the
        command's consequences are over, later events are the agents' own."""
        if self.cause is None:
            return
        running = self.proc is not None and not self.proc.done()
        settled = self.ha.phase is None and not running and self.sync_done_once
        if settled or now - self.cause_since > CAUSE_MAX_SECONDS:
            self.cause = None

    def to_dict(self) -> dict:
        return {"peer": self.peer, "slot": self.slot, "ha": self.ha.to_dict(), "sync_done_once": self.sync_done_once}

    def sig(self) -> Any:
        """What must be persisted when it changes (not the heartbeat timestamps)."""
        h = self.ha
        c = h.config
        return (
            h.generation,
            h.owner,
            h.in_charge,
            h.running,
            h.stop_reason,
            h.phase,
            h.synced,
            h.alone,
            h.reclaim_pending,
            h.resume_in_charge,
            h.last_switch_at,
            h.pending_generation,
            h.peer_graceful,
            h.heartbeats_seen,
            h.state,
            c.failover_type,
            c.failback_type,
            c.failover_wait,
            c.stabilisation_seconds,
            c.maintenance,
            self.sync_done_once,
            self.slot,
        )
