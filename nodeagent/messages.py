"""The shapes of what crosses the wire (TypedDicts, stdlib only): what the agent's
``info.py`` returns and ``hapairs.agent_replies`` parses. ``nodeagent.protocol``
re-exports every one; the enums their string fields hold are there."""

from __future__ import annotations

from typing import Any, TypedDict


class Cause(TypedDict, total=False):
    """Who asked for what an event records: the job's idempotency key, echoed by the agent
    on every event the command causes (on both nodes of the pair), with the requester and
    reason the command carried. None on events the agents decided by themselves."""

    key: str
    by: str
    reason: str


Scalar = str | int | float | bool | None


class Why(TypedDict):
    """Why an agent decided something by itself (no operator asked): the rule that fired, in
    words for the operator, and what it saw. ``rule`` is stable (dotted, lower case: decide
    by it); ``inputs`` are scalars (seconds as ``*_s``), at most 20."""

    rule: str
    text: str
    inputs: dict[str, Scalar]


class PeerInfo(TypedDict, total=False):
    peer_name: str
    hm_ip: str
    vip: str | None
    version: str
    udi: str
    device_type: str
    failover_type: str  # Mode
    failback_type: str  # Mode
    failover_wait: float
    stabilisation_seconds: float
    maintenance: bool
    instance_db_name: str
    instance_db_port: int
    dataguard_name: str
    primary_db_alias: str
    direct_connect: bool
    heartbeat: str  # LinkStatus
    mean_heartbeat_ms: float | None
    state: str  # HAState
    running: bool
    in_charge: bool  # this node is in charge of this pair's VIP
    owner: str  # Role owning the VIP at this generation
    generation: int
    data_replication: str  # ReplicationStatus
    paths: dict[str, str]  # HeartbeatPath -> LinkStatus, each path the pair's heartbeats travel
    witnesses: list[dict[str, Any]]  # [{"address", "ok", "answer"}]: each witness's last answer
    fenced: bool  # a primary that fenced itself (no secondary, no witness lease)
    sync_percent: int
    status: str  # the portal's "Status" line
    allowed_switch_at: str | None  # ISO time when the stabilisation guard lifts
    transitions: list[dict[str, str]]  # [{"at": iso, "state": HAState}] for this pair, oldest first
    instance: dict[str, Any]  # {"db_name", "count", "lsn", ...}


class ServiceInfo(TypedDict):
    name: str
    version: str
    admin_status: str
    operation_status: str


class Event(TypedDict):
    seq: int  # per node, strictly increasing from 1
    code: str  # EventCode
    description: str  # EVENT_TEXT[code]: display only
    generated_by: str  # "Primary" | "Secondary"
    timestamp: str  # ISO 8601 UTC
    remarks: str
    generation: int
    peer: str | None  # the peer's HM IP this event is about, if any
    cause: Cause | None
    why: Why | None  # the agents' own decisions: the rule that fired and its inputs


class HAInfo(TypedDict, total=False):
    protocol: int
    node: str
    running: bool  # Health Monitor (HA services) running
    role: str  # Role
    hm_ip: str
    vip: str | None
    netmask: str | None
    version: str
    udi: str
    device_type: str
    direct_connect: str | None
    peers: list[PeerInfo]
    generation: int  # max over pairs
    vips_in_charge: list[str]
    last_seq: int
    recovery_mode: bool
    services: list[ServiceInfo]
    events: list[Event]  # with ?events_since=


class ServerInfo(TypedDict, total=False):
    protocol: int
    node: str
    product_name: str
    version: str
    hm_ip: str
    direct_connect: str | None  # its direct-connect address: a peer heartbeats over it too
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
    active_sessions: list[dict[str, Any]]
    trap_destinations: list[dict[str, Any]]
    active_elements: int
    element_limit: int
    elements_not_tracked: int
    licenses: list[dict[str, Any]]
    service_assignments: int  # how many a manager synchronized (PATH_SERVICE_ASSIGNMENTS)


class EventsPage(TypedDict):
    node: str
    last_seq: int
    events: list[Event]


class EventPush(TypedDict):
    """Body POSTed (signed with the sending node's password) to each trap destination."""

    protocol: int
    node: str
    hm_ip: str
    events: list[Event]


class PeerMessage(TypedDict, total=False):
    """Body of every peer request (heartbeat, command, snapshot, replicate) and of the
    heartbeat's answer: the sender's view of the pair."""

    protocol: int
    from_: str  # sent as "from" (see PEER_FROM)
    name: str
    view: dict[str, Any]  # hastate.PeerView.to_dict()
    digest: dict[str, Any]
    slot: int
    mean_ms: float | None
    cmd: str  # PeerCommand
    op: str  # SnapshotOp
    generation: int
    cause: Cause | None


PEER_FROM = "from"
