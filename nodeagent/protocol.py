"""Wire protocol shared by the node agent and the portal (stdlib only).

Everything here is importable without aiohttp or Django:

* the protocol version, refused clearly when the other side speaks another;
* header names and API paths;
* the vocabulary: HA states (MSE-HA-SPEC §5), roles, modes, link and replication status,
  phases, peer commands, and a stable code for every event (§4's words for display);
* message shapes (TypedDicts) of what crosses the wire, and the ``Cause`` every operator
  command carries and the agents echo on the events it causes;
* request signing (``nodeagent.signing``, re-exported here).

See docs/agent-api.md for the full API.
"""

from __future__ import annotations

import secrets
from enum import Enum
from typing import Any, TypedDict, cast

# message shapes (nodeagent.messages) and signing (nodeagent.signing) are re-exported, so
# both sides import one contract
from .messages import (  # noqa: F401
    PEER_FROM,
    Cause,
    Event,
    EventPush,
    EventsPage,
    HAInfo,
    PeerInfo,
    PeerMessage,
    Scalar,
    ServerInfo,
    ServiceInfo,
    Why,
)
from .signing import (  # noqa: F401
    DEFAULT_FRESHNESS_SECONDS,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SIGNATURE_SCHEME,
    ReplayCache,
    SignatureError,
    body_digest,
    canonical_string,
    compute_signature,
    sign_request,
    verify_request,
)

# how a peer's 410 begins when it removed the pairing the asker still holds (nodeagent.node)
REMOVED_MARK = "pairing removed"

API_VERSION = "v1"  # the HTTP paths (/hm/v1)
# the messages and their transport: bumped by any change to the wire. 3: the HM API over
# TLS only, peers pinned by fingerprint (configure's peer block), server-info's direct_connect.
# 4: heartbeats are signed UDP datagrams (nodeagent.datagram) keyed by a per-boot key each
# node gives its peer in every peer message (the hello command); no HTTP heartbeat endpoint
PROTOCOL_VERSION = 4

# ---------------------------------------------------------------- headers
HEADER_NODE = "X-MSE-Node"  # on event pushes: the sending node's name
IDEMPOTENCY_HEADER = "Idempotency-Key"
HEADER_PROTOCOL = "X-MSE-Protocol"  # on every request and answer: PROTOCOL_VERSION
HEADER_TIME = "X-MSE-Time"  # on every answer: the agent's clock (Unix seconds, to the millisecond)

DEFAULT_PORT = 8001  # the appliance's "Legacy Port"

# ---------------------------------------------------------------- paths (HM API)
PREFIX = "/hm/v1"
PATH_SERVER_INFO = f"{PREFIX}/server-info"
PATH_HA_INFO = f"{PREFIX}/ha-info"
PATH_EVENTS = f"{PREFIX}/events"  # ?since=SEQ&limit=N
PATH_HA_CONFIGURE = f"{PREFIX}/ha/configure"
PATH_HA_PEER = f"{PREFIX}/ha/peers/{{peer_hm_ip}}"  # DELETE
PATH_HA_PEER_RESET = f"{PREFIX}/ha/peers/{{peer_hm_ip}}/reset-sync"  # POST, on a secondary
PATH_FAILOVER = f"{PREFIX}/ha/failover"
PATH_FAILBACK = f"{PREFIX}/ha/failback"
PATH_LICENSES = f"{PREFIX}/licenses"
PATH_LICENSE = f"{PREFIX}/licenses/{{license_id}}"  # DELETE
PATH_SERVICES_STOP = f"{PREFIX}/services/stop"
PATH_SERVICES_START = f"{PREFIX}/services/start"
PATH_TRAP_DESTINATIONS = f"{PREFIX}/trap-destinations"
# the service assignments a manager synchronized to this node (GET: list; DELETE: all of them)
PATH_SERVICE_ASSIGNMENTS = f"{PREFIX}/services/assignments"
# peer to peer (signed with the receiver's password, like everything else)
PATH_PEER_HEARTBEAT = f"{PREFIX}/peer/heartbeat"  # protocol 3 and earlier (heartbeats are datagrams now)
PATH_PEER_COMMAND = f"{PREFIX}/peer/command"
PATH_PEER_REPLICATE = f"{PREFIX}/peer/replicate"
PATH_PEER_SNAPSHOT = f"{PREFIX}/peer/snapshot"
# unsigned load-balancer health checks (Patroni style); no secrets in the answers
PATH_HEALTH_PRIMARY = "/primary"
PATH_HEALTH_SECONDARY = "/secondary"
PATH_HEALTH = "/health"
PATH_METRICS = "/metrics"  # Prometheus, with the node's metrics_token (nodeagent.metrics)
# the portal's ingest endpoint (trap destination), for reference
PORTAL_INGEST_PATH = "/api/v1/ingest/events"


# ---------------------------------------------------------------- HA vocabulary
class HAState(str, Enum):
    """MSE-HA-SPEC §5, exact names."""

    PRIMARY_ACTIVE = "PRIMARY_ACTIVE"
    SECONDARY_ACTIVE = "SECONDARY_ACTIVE"
    FAILOVER_INVOKED = "FAILOVER_INVOKED"
    FAILOVER_ACTIVE = "FAILOVER_ACTIVE"
    TERMINATED = "TERMINATED"
    FAILBACK_ACTIVE = "FAILBACK_ACTIVE"
    FAILBACK_COMPLETE = "FAILBACK_COMPLETE"
    SECONDARY_ALONE = "SECONDARY_ALONE"
    GRACEFUL_SHUTDOWN = "GRACEFUL_SHUTDOWN"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class Role(str, Enum):
    PRIMARY = "primary"
    SECONDARY = "secondary"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value

    @property
    def title(self) -> str:  # type: ignore[override]  # str.title is shadowed on purpose
        return self.value.capitalize()

    @property
    def number(self) -> int:
        """getserverinfo's "High Availability Role": 1 primary, 2 secondary."""
        return 1 if self is Role.PRIMARY else 2


class Mode(str, Enum):
    """Failover / failback type."""

    MANUAL = "Manual"
    AUTOMATIC = "Automatic"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value

    @classmethod
    def parse(cls, value: object) -> Mode:
        v = str(value).strip().lower()
        for m in cls:
            if m.value.lower() == v:
                return m
        raise ValueError(f"failover/failback type must be Manual or Automatic, not {value!r}")


class LinkStatus(str, Enum):
    """Heartbeats, as ha-info reports them."""

    UP = "Up"
    DOWN = "Down"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class ReplicationStatus(str, Enum):
    """Data Replication, as ha-info reports it."""

    SETTING_UP = "Setting up"
    UP = "Up"
    DOWN = "Down"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class Phase(str, Enum):
    """A pair's transitional procedure (None when settled)."""

    FAILOVER = "failover"
    FAILBACK = "failback"
    RESYNC = "resync"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class StopReason(str, Enum):
    """Why a pair's services are not running."""

    GRACEFUL = "graceful"  # stopped by hand: the peer must not take over
    FAILOVER = "failover"  # stopped by a failover (a simulated primary failure)

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class PeerCommand(str, Enum):
    """``cmd`` of a peer command (PATH_PEER_COMMAND)."""

    HEARTBEAT_NOW = "heartbeat_now"  # "I am stopping": answer with a heartbeat now
    HELLO = "hello"  # the sender's heartbeat key (boot, key); the answer carries the receiver's
    FAILOVER_BEGIN = "failover_begin"  # secondary → primary: release the VIP, shut down
    FAILBACK_BEGIN = "failback_begin"  # secondary → primary: a copy back is coming
    TAKE_CHARGE = "take_charge"  # secondary → primary: the pair is yours again
    RESYNC_DONE = "resync_done"  # primary → secondary: both hold the same data
    INVOKE_FAILOVER = "invoke_failover"  # primary → secondary: the manager asked a switchover
    INVOKE_FAILBACK = "invoke_failback"  # primary → secondary: the manager asked a failback

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class HeartbeatPath(str, Enum):
    """The networks a pair's heartbeats travel (spec §3): the Health Monitor network, and the
    direct-connect cable when both nodes have one. Losing one is an event, not a failover."""

    HM = "hm"
    DIRECT = "direct"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class SnapshotOp(str, Enum):
    BEGIN = "begin"
    CHUNK = "chunk"
    END = "end"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


# Long Failover Wait (spec §2): the one range, used by the agent, the rules and the model.
MIN_FAILOVER_WAIT = 2
MAX_FAILOVER_WAIT = 120
DEFAULT_FAILOVER_WAIT = 10


# ---------------------------------------------------------------- events
class EventCode(str, Enum):
    """A stable code for every event an agent records. The portal decides by these
    (alerts, severity, reports, last failover); ``EVENT_TEXT`` is for display only."""

    CONFIG_CREATED = "config_created"
    SYNC_IN_PROGRESS = "sync_in_progress"
    HEARTBEATS_SETUP = "heartbeats_setup"
    ACTIVE = "active"
    CONFIG_UPDATED = "config_updated"
    CONFIG_RESTORED = "config_restored"
    FAILOVER_SHUTTING_DOWN_PRIMARY = "failover_shutting_down_primary"
    FAILOVER_RECONFIGURING_DB = "failover_reconfiguring_db"
    FAILOVER_STARTING_INSTANCE = "failover_starting_instance"
    FAILOVER_ACTIVE = "failover_active"
    FAILBACK_IN_PROGRESS = "failback_in_progress"
    FAILBACK_COMPLETE = "failback_complete"
    FAILBACK_ABORTED = "failback_aborted"
    FAILBACK_HELD = "failback_held"
    NOT_SYNCHRONIZED = "not_synchronized"
    HEARTBEATS_LOST = "heartbeats_lost"
    HEARTBEATS_RESTORED = "heartbeats_restored"
    STEPPED_DOWN = "stepped_down"
    PEER_GRACEFUL = "peer_graceful"
    SERVICES_STOPPED = "services_stopped"
    SERVICES_STARTED = "services_started"
    PEER_DELETED = "peer_deleted"
    PAIRING_REMOVED_BY_PEER = "pairing_removed_by_peer"
    SYNC_RESET = "sync_reset"
    LICENSE_INSTALLED = "license_installed"
    LICENSE_REMOVED = "license_removed"
    REPLICATION_DOWN = "replication_down"
    VIP_TAKEN = "vip_taken"
    VIP_RELEASED = "vip_released"
    HEARTBEAT_PATH_DOWN = "heartbeat_path_down"
    HEARTBEAT_PATH_UP = "heartbeat_path_up"
    TAKEOVER_CONFIRMED = "takeover_confirmed"
    TAKEOVER_REFUSED = "takeover_refused"
    FENCED = "fenced"
    UNFENCED = "unfenced"
    HOOK_RAN = "hook_ran"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value

    @property
    def text(self) -> str:
        return EVENT_TEXT[self]


# The seed's exact words where the seed has them (§4); ours, in the same style, elsewhere.
EVENT_TEXT: dict[EventCode, str] = {
    EventCode.CONFIG_CREATED: "Configuration successfully created",
    EventCode.SYNC_IN_PROGRESS: "Primary and secondary server synchronization in progress",
    EventCode.HEARTBEATS_SETUP: "Heartbeats have been setup successfully",
    EventCode.ACTIVE: "Active",
    EventCode.CONFIG_UPDATED: "Configuration updated",
    EventCode.CONFIG_RESTORED: "High availability configuration restored from the manager",
    EventCode.FAILOVER_SHUTTING_DOWN_PRIMARY: "Failover invoked; shutting down primary instance",
    EventCode.FAILOVER_RECONFIGURING_DB: "Failover has been invoked. Reconfiguring instance database",
    EventCode.FAILOVER_STARTING_INSTANCE: "Failover invoked; starting application instance",
    EventCode.FAILOVER_ACTIVE: "Instance is in failover active state",
    EventCode.FAILBACK_IN_PROGRESS: "Failback in progress; starting primary database instance",
    EventCode.FAILBACK_COMPLETE: "Failback complete; primary instance is in charge",
    EventCode.FAILBACK_ABORTED: "Failback aborted",
    EventCode.FAILBACK_HELD: "Automatic failback held back",
    EventCode.NOT_SYNCHRONIZED: "Primary instance is not synchronized with the secondary server. In progress.",
    EventCode.HEARTBEATS_LOST: "Heartbeats lost with peer",
    EventCode.HEARTBEATS_RESTORED: "Heartbeats restored with peer",
    EventCode.STEPPED_DOWN: "Newer generation seen; released the virtual IP",
    EventCode.PEER_GRACEFUL: "Peer was stopped by hand; no failover will be triggered",
    EventCode.SERVICES_STOPPED: "Services stopped by the administrator",
    EventCode.SERVICES_STARTED: "Services started",
    EventCode.PEER_DELETED: "High availability configuration deleted",
    EventCode.PAIRING_REMOVED_BY_PEER: "The peer removed the pairing: this node stood down",
    EventCode.SYNC_RESET: "Synchronisation reset: the instance starts again from the primary",
    EventCode.LICENSE_INSTALLED: "License installed",
    EventCode.LICENSE_REMOVED: "License removed",
    EventCode.REPLICATION_DOWN: "Data replication down; primary is running alone",
    EventCode.VIP_TAKEN: "Virtual IP taken",
    EventCode.VIP_RELEASED: "Virtual IP released",
    EventCode.HEARTBEAT_PATH_DOWN: "Heartbeats lost on one path; the other still carries them",
    EventCode.HEARTBEAT_PATH_UP: "Heartbeats restored on a path",
    EventCode.TAKEOVER_CONFIRMED: "Witnesses confirm the primary is gone",
    EventCode.TAKEOVER_REFUSED: "Takeover refused by the witnesses",
    EventCode.FENCED: "Fenced: no secondary and no witness lease; virtual IP withdrawn, writes refused",
    EventCode.UNFENCED: "Witness lease or secondary back; serving the virtual IP again",
    EventCode.HOOK_RAN: "Takeover hook ran",
}

# What a protocol-1 agent wrote instead of a code (its events in a portal being upgraded).
V1_TEXT_CODES: dict[str, EventCode] = {
    **{text: code for code, text in EVENT_TEXT.items()},
    "Licence installed": EventCode.LICENSE_INSTALLED,
    "Licence removed": EventCode.LICENSE_REMOVED,
}


# ---------------------------------------------------------------- causes
CAUSE_LIMITS = {"key": 200, "by": 150, "reason": 500}


def cause_from(value: object, *, key: str | None = None) -> Cause | None:
    """A ``Cause`` from untrusted input: a body's ``"cause"`` object and/or a request's
    Idempotency-Key (``key``, used when the body names none). Text only, bounded; None when
    there is nothing to echo. Anything else is ignored rather than refused: a cause is
    for the record, never a reason to refuse a command."""
    out: Cause = {}
    if isinstance(value, dict):
        for name, limit in CAUSE_LIMITS.items():
            item = value.get(name)
            if isinstance(item, str) and item.strip():
                out[name] = item.strip()[:limit]  # type: ignore[literal-required]
    if "key" not in out and key and key.strip():
        out["key"] = key.strip()[: CAUSE_LIMITS["key"]]
    return out or None


# ---------------------------------------------------------------- versions
def explain(rule: str, text: str, **inputs: Scalar) -> Why:
    """An explained decision (``protocol.Why``): the rule, its sentence, what it saw (floats
    to a tenth: the inputs are for reading, not for replaying)."""
    return {"rule": rule, "text": text,
            "inputs": {k: round(v, 1) if isinstance(v, float) else v for k, v in inputs.items()}}  # fmt: skip


def event_upgraded(raw: dict[str, Any]) -> Event | None:
    """An event as stored on disk, in this protocol's shape: a protocol-1 agent's events
    (text, no code, no cause) get the code their text stands for; one whose text stands for
    none is None (never sent with a made-up code)."""
    if isinstance(raw.get("code"), str) and raw["code"] in _CODES:
        return cast(Event, {**raw, "cause": raw.get("cause"), "why": raw.get("why")})
    code = V1_TEXT_CODES.get(str(raw.get("description", "")))
    if code is None:
        return None
    return cast(Event, {**raw, "code": code.value, "description": code.text, "cause": None, "why": None})


_CODES = {code.value for code in EventCode}


class ProtocolMismatch(Exception):
    """The other side speaks another protocol version (→ HTTP 400 with this message)."""


def version_refusal(theirs: object, *, who: str) -> str:
    """The sentence for a peer, portal or agent that speaks another protocol."""
    said = "no protocol version" if theirs in (None, "") else f"protocol {theirs}"
    return (
        f"protocol mismatch: {who} speaks {said}, this side speaks protocol {PROTOCOL_VERSION}; "
        "upgrade the older side (portal and every node agent of a pair run the same protocol)"
    )


def check_version(theirs: object, *, who: str) -> None:
    """Raise ProtocolMismatch unless ``theirs`` (a header or body value) is our version."""
    if str(theirs).strip() != str(PROTOCOL_VERSION):
        raise ProtocolMismatch(version_refusal(theirs, who=who))


def new_idempotency_key() -> str:
    return secrets.token_hex(16)


class InstanceNames(TypedDict):
    secondary_db_name: str
    secondary_db_port: int
    standby_db_name: str
    standby_db_port: int
    dataguard_name: str
    primary_db_alias: str


def instance_names(slot: int) -> InstanceNames:
    """Names of the per-primary instance on a secondary (spec §6): slot 3 → mseos3/1524."""
    return {
        "secondary_db_name": f"mseos{slot}",
        "secondary_db_port": 1521 + slot,
        "standby_db_name": f"mseos{slot}s",  # as the primary names it
        "standby_db_port": 1621 + slot,
        "dataguard_name": f"dg_mse{slot}",
        "primary_db_alias": f"mseop{slot}s",
    }
