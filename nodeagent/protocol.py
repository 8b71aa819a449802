"""Wire protocol shared by the node agent and the portal (stdlib only).

Everything here is importable without aiohttp or Django:

* request signing: HMAC-SHA256 keyed by the *receiving* node's admin password over
  ``METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nSHA256(body)``;
* verification with a freshness window and a replay cache;
* header names, API paths, HA state names (MSE-HA-SPEC §5) and event descriptions (§4);
* message shapes (TypedDicts) for server info, HA info, events and event pushes.

See docs/agent-api.md for the full API.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from enum import Enum
from typing import Mapping, TypedDict

API_VERSION = "v1"

# ---------------------------------------------------------------- headers
HEADER_TIMESTAMP = "X-MSE-Timestamp"
HEADER_NONCE = "X-MSE-Nonce"
HEADER_SIGNATURE = "X-MSE-Signature"
HEADER_NODE = "X-MSE-Node"  # on event pushes: the sending node's name
IDEMPOTENCY_HEADER = "Idempotency-Key"

SIGNATURE_SCHEME = "v1"  # X-MSE-Signature: "v1=<hex>"
DEFAULT_FRESHNESS_SECONDS = 300
DEFAULT_PORT = 8001  # the appliance's "Legacy Port"

# ---------------------------------------------------------------- paths (HM API)
PREFIX = "/hm/v1"
PATH_SERVER_INFO = f"{PREFIX}/server-info"
PATH_HA_INFO = f"{PREFIX}/ha-info"
PATH_EVENTS = f"{PREFIX}/events"  # ?since=SEQ&limit=N
PATH_HA_CONFIGURE = f"{PREFIX}/ha/configure"
PATH_HA_PEER = f"{PREFIX}/ha/peers/{{peer_hm_ip}}"  # DELETE
PATH_FAILOVER = f"{PREFIX}/ha/failover"
PATH_FAILBACK = f"{PREFIX}/ha/failback"
PATH_LICENCES = f"{PREFIX}/licences"
PATH_LICENCE = f"{PREFIX}/licences/{{licence_id}}"  # DELETE
PATH_SERVICES_STOP = f"{PREFIX}/services/stop"
PATH_SERVICES_START = f"{PREFIX}/services/start"
PATH_TRAP_DESTINATIONS = f"{PREFIX}/trap-destinations"
# peer to peer (signed with the receiver's password, like everything else)
PATH_PEER_HEARTBEAT = f"{PREFIX}/peer/heartbeat"
PATH_PEER_COMMAND = f"{PREFIX}/peer/command"
PATH_PEER_REPLICATE = f"{PREFIX}/peer/replicate"
PATH_PEER_SNAPSHOT = f"{PREFIX}/peer/snapshot"
# unsigned load-balancer health checks (Patroni style); no secrets in the answers
PATH_HEALTH_PRIMARY = "/primary"
PATH_HEALTH_SECONDARY = "/secondary"
PATH_HEALTH = "/health"
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
    def title(self) -> str:
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
    def parse(cls, value: str) -> "Mode":
        v = str(value).strip().lower()
        for m in cls:
            if m.value.lower() == v:
                return m
        raise ValueError(f"failover/failback type must be Manual or Automatic, not {value!r}")


class EventText:
    """Event descriptions; the seed's exact words where the seed has them (§4)."""

    CONFIG_CREATED = "Configuration successfully created"
    SYNC_IN_PROGRESS = "Primary and secondary server synchronization in progress"
    HEARTBEATS_SETUP = "Heartbeats have been setup successfully"
    ACTIVE = "Active"
    CONFIG_UPDATED = "Configuration updated"
    CONFIG_RESTORED = "High availability configuration restored from the manager"
    FAILOVER_SHUTTING_DOWN_PRIMARY = "Failover invoked; shutting down primary instance"
    FAILOVER_RECONFIGURING_DB = "Failover has been invoked. Reconfiguring instance database"
    FAILOVER_STARTING_INSTANCE = "Failover invoked; starting application instance"
    FAILOVER_ACTIVE = "Instance is in failover active state"
    FAILBACK_IN_PROGRESS = "Failback in progress; starting primary database instance"
    # not worded in the seed: ours, in the same style
    FAILBACK_COMPLETE = "Failback complete; primary instance is in charge"
    NOT_SYNCHRONIZED = "Primary instance is not synchronized with the secondary server. In progress."
    HEARTBEATS_LOST = "Heartbeats lost with peer"
    HEARTBEATS_RESTORED = "Heartbeats restored with peer"
    STEPPED_DOWN = "Newer generation seen; released the virtual IP"
    PEER_GRACEFUL = "Peer was stopped by hand; no failover will be triggered"
    SERVICES_STOPPED = "Services stopped by the administrator"
    SERVICES_STARTED = "Services started"
    PEER_DELETED = "High availability configuration deleted"
    LICENCE_INSTALLED = "Licence installed"
    LICENCE_REMOVED = "Licence removed"
    REPLICATION_DOWN = "Data replication down; primary is running alone"


# ---------------------------------------------------------------- message shapes
class PeerInfo(TypedDict, total=False):
    peer_name: str
    hm_ip: str
    vip: str | None
    version: str
    udi: str
    device_type: str
    failover_type: str
    failback_type: str
    failover_wait: int
    stabilisation_seconds: int
    instance_db_name: str
    instance_db_port: int
    dataguard_name: str
    primary_db_alias: str
    direct_connect: bool
    heartbeat: str  # "Up" | "Down"
    mean_heartbeat_ms: float | None
    state: str  # HAState
    running: bool
    in_charge: bool  # this node is in charge of this pair's VIP
    generation: int
    data_replication: str  # "Setting up" | "Up" | "Down"
    sync_percent: int
    status: str  # the portal's "Status" line
    allowed_switch_at: str | None  # ISO time when the stabilisation guard lifts
    transitions: list[dict]  # [{"at": iso, "state": str}] for this pair, oldest first


class HAInfo(TypedDict, total=False):
    node: str
    running: bool  # Health Monitor (HA services) running
    role: str
    hm_ip: str
    vip: str | None
    version: str
    udi: str
    device_type: str
    peers: list[PeerInfo]
    generation: int  # max over pairs


class ServiceInfo(TypedDict):
    name: str
    version: str
    admin_status: str
    operation_status: str


class ServerInfo(TypedDict, total=False):
    node: str
    product_name: str
    version: str
    hm_ip: str
    role: str
    ha_role: int
    hw_version: str
    product_identifier: str
    serial_number: str
    udi: str
    device_type: str
    legacy_port: int
    log_level: str
    days_to_keep_events: int
    session_timeout_mins: int
    db_backup_days: int
    services_running: bool
    dormant: bool
    services: list[ServiceInfo]
    start_time: str
    current_time: str
    timezone: str
    restarts: int
    used_memory_mb: int
    db_disk_size_mb: float
    active_sessions: list[dict]
    trap_destinations: list[dict]
    active_elements: int
    element_limit: int
    elements_not_tracked: int
    licences: list[dict]


class Event(TypedDict):
    seq: int  # per node, strictly increasing from 1
    description: str
    generated_by: str  # "Primary" | "Secondary"
    timestamp: str  # ISO 8601 UTC
    remarks: str
    generation: int
    peer: str | None  # the peer's HM IP this event is about, if any


class EventsPage(TypedDict):
    node: str
    last_seq: int
    events: list[Event]


class EventPush(TypedDict):
    """Body POSTed (signed with the sending node's password) to each trap destination."""

    node: str
    hm_ip: str
    events: list[Event]


# ---------------------------------------------------------------- signing
class SignatureError(Exception):
    """Request refused: unsigned, stale, replayed or bad signature (→ HTTP 401)."""


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body or b"").hexdigest()


def canonical_string(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return "\n".join([method.upper(), path, timestamp, nonce, body_digest(body)]).encode()


def compute_signature(password: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    mac = hmac.new(password.encode(), canonical_string(method, path, timestamp, nonce, body), hashlib.sha256)
    return f"{SIGNATURE_SCHEME}={mac.hexdigest()}"


def sign_request(
    password: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers to add to a request. ``path`` includes the query string (``/x?a=1``)."""
    ts = str(int(time.time()) if timestamp is None else int(timestamp))
    n = nonce or secrets.token_hex(16)
    return {
        HEADER_TIMESTAMP: ts,
        HEADER_NONCE: n,
        HEADER_SIGNATURE: compute_signature(password, method, path, ts, n, body),
    }


class ReplayCache:
    """Remembers nonces until they can no longer pass the freshness check. Thread-safe."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def check_and_add(self, nonce: str, expires_at: float, now: float) -> bool:
        """True if the nonce is new (and records it); False if it is a replay."""
        with self._lock:
            while self._seen:
                oldest, exp = next(iter(self._seen.items()))
                if exp < now or len(self._seen) >= self._max:
                    self._seen.popitem(last=False)
                else:
                    break
            if nonce in self._seen:
                return False
            self._seen[nonce] = expires_at
            return True

    def __len__(self) -> int:
        return len(self._seen)


def _get(headers: Mapping[str, str], name: str) -> str | None:
    v = headers.get(name)
    if v is None:
        lower = name.lower()
        for k, val in headers.items():
            if k.lower() == lower:
                return val
    return v


def verify_request(
    password: str,
    method: str,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    replay_cache: ReplayCache | None,
    now: float | None = None,
    window: int = DEFAULT_FRESHNESS_SECONDS,
) -> None:
    """Raise SignatureError unless the request is signed with ``password``, fresh
    (|now - timestamp| <= window) and not seen before. The nonce is recorded only
    once everything else checks out, so a forged request cannot burn a nonce."""
    now = time.time() if now is None else now
    ts = _get(headers, HEADER_TIMESTAMP)
    nonce = _get(headers, HEADER_NONCE)
    sig = _get(headers, HEADER_SIGNATURE)
    if not ts or not nonce or not sig:
        raise SignatureError("unsigned request")
    if len(nonce) < 8 or len(nonce) > 128:
        raise SignatureError("bad nonce")
    try:
        ts_i = int(ts)
    except ValueError:
        raise SignatureError("bad timestamp") from None
    if abs(now - ts_i) > window:
        raise SignatureError("stale request")
    expected = compute_signature(password, method, path, ts, nonce, body)
    if not hmac.compare_digest(expected.encode(), sig.strip().encode()):
        raise SignatureError("bad signature")
    if replay_cache is not None and not replay_cache.check_and_add(nonce, ts_i + window, now):
        raise SignatureError("replayed request")


def new_idempotency_key() -> str:
    return secrets.token_hex(16)


def instance_names(slot: int) -> dict[str, object]:
    """Names of the per-primary instance on a secondary (spec §6): slot 3 → mseos3/1524."""
    return {
        "secondary_db_name": f"mseos{slot}",
        "secondary_db_port": 1521 + slot,
        "standby_db_name": f"mseos{slot}s",  # as the primary names it
        "standby_db_port": 1621 + slot,
        "dataguard_name": f"dg_mse{slot}",
        "primary_db_alias": f"mseop{slot}s",
    }
