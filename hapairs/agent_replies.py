"""Check what agents answer before anything is written.

An agent's reply is input like any other: a field of the wrong type, an unknown state
or a missing key raises ``AgentBadReply`` naming the field, and nothing is stored.
Pure (no ORM), so every malformed shape is unit-tested.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hapairs.agent_client import AgentBadReply
from hapairs.choices import DeviceType, HAState, LinkStatus, ReplicationStatus
from nodeagent import protocol

VERSION_RE = re.compile(r"^\d+(\.\d+){1,3}$")
STATES = set(HAState.values)
DEVICE_TYPES = set(DeviceType.values)
EVENT_CODES = {code.value for code in protocol.EventCode}


def _bad(source: str, what: str) -> AgentBadReply:
    return AgentBadReply(f"{source} sent an unexpected reply: {what}.")


def _str(data: dict, key: str, source: str, *, required: bool = True, max_len: int = 300) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise _bad(source, f"“{key}” should be text")
    return value[:max_len]


def _int(data: dict, key: str, source: str, *, default: int | None = None, low: int = 0, high: int = 2**62) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(source, f"“{key}” should be a whole number from {low} to {high}")
    return value


def _ip(data: dict, key: str, source: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value in (None, "") and not required:
        return None
    return _ip_required(data, key, source)


def _ip_required(data: dict, key: str, source: str) -> str:
    try:
        return str(ipaddress.IPv4Address(data.get(key)))
    except (ValueError, TypeError):
        raise _bad(source, f"“{key}” should be an IPv4 address") from None


def _time(data: dict, key: str, source: str) -> datetime | None:
    value = data.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise _bad(source, f"“{key}” should be an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(source, f"“{key}” should be an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _prefixlen(data: dict, source: str) -> int | None:
    if data.get("vip_prefixlen") is not None:
        return _int(data, "vip_prefixlen", source, low=1, high=32)
    netmask = data.get("netmask")
    if netmask in (None, ""):
        return None
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
    except (ValueError, TypeError):
        raise _bad(source, "“netmask” should be a netmask such as 255.255.255.0") from None


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    version: str
    admin_status: str
    service_status: str


@dataclass(frozen=True)
class DiscoveredNode:
    """What ``server-info`` (plus ``ha-info``) says about an appliance."""

    name: str
    device_type: str
    version: str
    udi: str
    role: str
    hm_ip: str
    vip: str | None
    vip_prefixlen: int | None
    services: list[ServiceStatus]
    licenses: list[dict] = field(default_factory=list)
    direct_ip: str | None = None  # its direct-connect address, when it has one
    tls_fingerprint: str = ""  # the certificate it answered over (pinned when it is recorded)
    clock_offset: float | None = None  # its clock minus the portal's, as its answer said (s)


def _services(raw_services: Any, source: str) -> list[ServiceStatus]:
    if not isinstance(raw_services, list):
        raise _bad(source, "“services” should be a list")
    services = []
    for item in raw_services[:50]:
        if not isinstance(item, dict):
            raise _bad(source, "a service entry is not an object")
        services.append(
            ServiceStatus(
                name=_str(item, "name", source, max_len=100),
                version=_str(item, "version", source, required=False, max_len=40),
                admin_status=_str(item, "admin_status", source, required=False, max_len=40),
                service_status=_str(item, "operation_status", source, required=False, max_len=80),
            )
        )
    return services


def services_as_rows(services: list[ServiceStatus]) -> list[dict]:
    """What Appliance.services stores."""
    return [
        {"name": s.name, "version": s.version, "admin_status": s.admin_status, "service_status": s.service_status}
        for s in services
    ]


def parse_server_info(data: Any, *, source: str) -> DiscoveredNode:
    if not isinstance(data, dict):
        raise _bad(source, "not a JSON object")
    device_type = _str(data, "device_type", source)
    if device_type not in DEVICE_TYPES:
        raise _bad(source, f"device type {device_type!r} is not one the portal knows")
    version = _str(data, "version", source)
    if not VERSION_RE.match(version):
        raise _bad(source, f"version {version!r} is not dotted numbers")
    role = _str(data, "role", source, required=False).lower() or "none"
    if role not in {"primary", "secondary", "none"}:
        raise _bad(source, f"role {role!r} is neither primary nor secondary")
    services = _services(data.get("services", []), source)
    licenses = data.get("licenses", [])
    return DiscoveredNode(
        name=_str(data, "node", source, required=False, max_len=63),
        device_type=device_type,
        version=version,
        udi=_str(data, "udi", source, required=False, max_len=128),
        role=role,
        hm_ip=_ip_required(data, "hm_ip", source),
        vip=_ip(data, "vip", source, required=False),
        vip_prefixlen=_prefixlen(data, source),
        services=services,
        licenses=licenses if isinstance(licenses, list) else [],
        direct_ip=_ip(data, "direct_connect", source, required=False),
    )


@dataclass(frozen=True)
class PeerStatus:
    """One peer block of ``ha-info``: this node's view of one HA pairing."""

    peer_hm_ip: str
    state: str
    running: bool  # this pair's services are up on the reporting node
    heartbeat: str  # up / down / unknown
    replication: str  # setting_up / up / down / unknown
    sync_percent: int
    mean_heartbeat_ms: float | None
    generation: int
    in_charge: bool
    status: str
    allowed_switch_at: datetime | None
    instance_db_name: str
    paths: dict[str, str] = field(default_factory=dict)  # hm / direct -> up / down
    witnesses: list[dict] = field(default_factory=list)  # [{"address", "ok", "answer"}]
    fenced: bool = False


@dataclass(frozen=True)
class HAInfo:
    node: str
    running: bool
    role: str
    generation: int
    peers: list[PeerStatus]
    services: list[ServiceStatus] | None = None  # None: the agent did not say (older agents)

    def peer(self, hm_ip: str) -> PeerStatus | None:
        return next((peer for peer in self.peers if peer.peer_hm_ip == hm_ip), None)


# the wire's words (protocol.LinkStatus / ReplicationStatus) → what the database stores
_LINK = {status.value: getattr(LinkStatus, status.name).value for status in protocol.LinkStatus}
_REPLICATION = {status.value: getattr(ReplicationStatus, status.name).value for status in protocol.ReplicationStatus}


def parse_ha_info(data: Any, *, source: str) -> HAInfo:
    if not isinstance(data, dict):
        raise _bad(source, "not a JSON object")
    running = data.get("running", True)
    if not isinstance(running, bool):
        raise _bad(source, "“running” should be true or false")
    raw_peers = data.get("peers", [])
    if not isinstance(raw_peers, list) or len(raw_peers) > 2:
        raise _bad(source, "“peers” should be a list of at most two")
    peers = []
    for item in raw_peers:
        if not isinstance(item, dict):
            raise _bad(source, "a peer entry is not an object")
        state = _str(item, "state", source, required=False) or HAState.UNKNOWN.value
        if state not in STATES:
            raise _bad(source, f"state {state!r} is not an HA state")
        mean = item.get("mean_heartbeat_ms")
        if mean is not None and (isinstance(mean, bool) or not isinstance(mean, (int, float)) or not 0 <= mean < 1e6):
            raise _bad(source, "“mean_heartbeat_ms” should be a number of milliseconds")
        in_charge = item.get("in_charge", False)
        if not isinstance(in_charge, bool):
            raise _bad(source, "“in_charge” should be true or false")
        peer_running = item.get("running", running)
        if not isinstance(peer_running, bool):
            raise _bad(source, "a peer's “running” should be true or false")
        peers.append(
            PeerStatus(
                peer_hm_ip=_ip_required(item, "hm_ip", source),
                state=state,
                running=peer_running,
                heartbeat=_LINK.get(_str(item, "heartbeat", source, required=False), LinkStatus.UNKNOWN.value),
                replication=_REPLICATION.get(
                    _str(item, "data_replication", source, required=False), ReplicationStatus.UNKNOWN.value
                ),
                sync_percent=_int(item, "sync_percent", source, default=0, high=100),
                mean_heartbeat_ms=float(mean) if mean is not None else None,
                generation=_int(item, "generation", source, default=0),
                in_charge=in_charge,
                status=_str(item, "status", source, required=False, max_len=200),
                allowed_switch_at=_time(item, "allowed_switch_at", source),
                instance_db_name=_str(item, "instance_db_name", source, required=False, max_len=16),
                paths=_paths(item.get("paths", {}), source),
                witnesses=_witnesses(item.get("witnesses", []), source),
                fenced=_bool(item, "fenced", source),
            )
        )
    return HAInfo(
        node=_str(data, "node", source, required=False, max_len=63),
        running=running,
        role=_str(data, "role", source, required=False).lower(),
        generation=_int(data, "generation", source, default=0),
        peers=peers,
        services=_services(data["services"], source) if "services" in data else None,
    )


def _paths(value: Any, source: str) -> dict[str, str]:
    known = {path.value for path in protocol.HeartbeatPath}
    if not isinstance(value, dict) or not set(value) <= known:
        raise _bad(source, "“paths” should map hm / direct to Up or Down")
    out = {}
    for path, status in value.items():
        if status not in _LINK:
            raise _bad(source, f"path {path} should be Up or Down")
        out[path] = _LINK[status]
    return out


def _witnesses(value: Any, source: str) -> list[dict]:
    if not isinstance(value, list) or len(value) > 7:
        raise _bad(source, "“witnesses” should be a list of at most seven")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("ok"), bool):
            raise _bad(source, "a witness entry should say address, ok and answer")
        out.append({"address": _str(item, "address", source, max_len=60), "ok": item["ok"],
                    "answer": _str(item, "answer", source, required=False, max_len=200)})  # fmt: skip
    return out


def _bool(data: dict, key: str, source: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise _bad(source, f"“{key}” should be true or false")
    return value


@dataclass(frozen=True)
class AgentEvent:
    seq: int
    code: str  # protocol.EventCode
    description: str
    generated_by: str
    timestamp: datetime
    remarks: str
    generation: int | None
    peer_hm_ip: str | None
    cause_key: str = ""  # the idempotency key of the command that caused it ("" when the agents decided)
    why: dict | None = None  # protocol.Why: the rule an agent's own decision followed, and its inputs


def parse_events(raw_events: Any, *, source: str, limit: int = 1000) -> list[AgentEvent]:
    if not isinstance(raw_events, list):
        raise _bad(source, "“events” should be a list")
    events = []
    for item in raw_events[:limit]:
        if not isinstance(item, dict):
            raise _bad(source, "an event is not an object")
        timestamp = _time(item, "timestamp", source)
        if timestamp is None:
            raise _bad(source, "an event has no timestamp")
        generation = item.get("generation")
        code = _str(item, "code", source, max_len=40)
        if code not in EVENT_CODES:
            raise _bad(source, f"event code {code!r} is not one the portal knows")
        events.append(
            AgentEvent(
                seq=_int(item, "seq", source, low=1),
                code=code,
                description=_str(item, "description", source),
                generated_by=_str(item, "generated_by", source, required=False, max_len=128),
                timestamp=timestamp,
                remarks=_str(item, "remarks", source, required=False, max_len=500),
                generation=generation if isinstance(generation, int) and not isinstance(generation, bool) else None,
                peer_hm_ip=_ip(item, "peer", source, required=False),
                cause_key=_cause_key(item.get("cause"), source),
                why=parse_why(item.get("why"), source),
            )
        )
    return events


WHY_RULE = re.compile(r"[a-z][a-z_]*(\.[a-z_]+)+")
WHY_INPUT = re.compile(r"[a-z][a-z0-9_]{0,39}")
WHY_MAX_INPUTS = 20


def parse_why(why: Any, source: str) -> dict | None:
    """``protocol.Why`` from an agent: a dotted rule, its sentence, at most 20 scalar inputs.
    Anything else refuses the whole reply (nothing of it is stored)."""
    if why is None:
        return None
    if not isinstance(why, dict):
        raise _bad(source, "an event's “why” should be an object or null")
    rule = why.get("rule")
    if not isinstance(rule, str) or len(rule) > 64 or not WHY_RULE.fullmatch(rule):
        raise _bad(source, "an event's “why” should name its rule (dotted lower-case words, at most 64)")
    inputs = why.get("inputs", {})
    if not isinstance(inputs, dict) or len(inputs) > WHY_MAX_INPUTS:
        raise _bad(source, f"an event's “why” inputs should be an object of at most {WHY_MAX_INPUTS}")
    clean: dict[str, Any] = {}
    for name, value in inputs.items():
        if not isinstance(name, str) or not WHY_INPUT.fullmatch(name):
            raise _bad(source, f"an event's “why” input {str(name)[:40]!r} is not a lower-case name")
        if isinstance(value, float) and not math.isfinite(value) or isinstance(value, int) and abs(value) > 2**62:
            raise _bad(source, f"an event's “why” input {name!r} is out of range")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise _bad(source, f"an event's “why” input {name!r} should be text, a number, true/false or null")
        clean[name] = value[:200] if isinstance(value, str) else value
    return {"rule": rule, "text": _str(why, "text", source, max_len=300), "inputs": clean}


def _cause_key(cause: Any, source: str) -> str:
    """The key of ``protocol.Cause`` (requester and reason come from the job the key names)."""
    if cause is None:
        return ""
    if not isinstance(cause, dict):
        raise _bad(source, "an event's “cause” should be an object or null")
    return _str(cause, "key", source, required=False, max_len=200)
