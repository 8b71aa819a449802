"""What a node reports: HA info (each pair's status), server info, services, events.

These are the answers of the Health Monitor API's read endpoints (``ha-info``,
``server-info``, ``events``); :mod:`nodeagent.output` renders them as the CLI's text.
"""

from __future__ import annotations

import resource
import time
from typing import TYPE_CHECKING

from .clock import now_iso
from .config import ELEMENT_LIMITS
from .hastate import iso
from .protocol import (
    PROTOCOL_VERSION,
    EventCode,
    EventsPage,
    HAInfo,
    HAState,
    LinkStatus,
    PeerInfo,
    Phase,
    ReplicationStatus,
    Role,
    ServerInfo,
    ServiceInfo,
    event_upgraded,
    instance_names,
)
from .store import read_jsonl

if TYPE_CHECKING:  # types only: node.py imports this module
    from .node import Node
    from .pair import PairRuntime


class NodeInfo:
    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    def peer_info(self, pr: PairRuntime, *, brief: bool = False) -> PeerInfo:
        ha = pr.ha
        names = instance_names(pr.slot)
        primary = self.node.cfg.role is Role.PRIMARY
        at = ha.allowed_switch_at()
        now = time.time()
        if ha.state is HAState.FAILOVER_ACTIVE and ha.role is Role.SECONDARY:
            status = EventCode.FAILOVER_ACTIVE.text
        elif ha.phase is Phase.RESYNC:
            status = EventCode.NOT_SYNCHRONIZED.text
        elif ha.phase is Phase.FAILBACK:
            status = f"Failback in progress ({pr.sync_percent}% copied)"
        elif ha.phase is Phase.FAILOVER:
            status = "Failover in progress"
        elif (primary and pr.replication is ReplicationStatus.SETTING_UP) or (not primary and not ha.synced):
            status = f"{EventCode.SYNC_IN_PROGRESS.text} ({pr.sync_percent}% complete)"
        elif ha.state in (HAState.PRIMARY_ACTIVE, HAState.SECONDARY_ACTIVE) and ha.heartbeat_up:
            status = EventCode.ACTIVE.text
        else:
            status = ha.state.value
        synced = (pr.replication is ReplicationStatus.UP) if primary else ha.synced
        if synced and ha.heartbeat_up:
            replication = ReplicationStatus.UP
        else:
            replication = (
                ReplicationStatus.SETTING_UP
                if pr.replication is ReplicationStatus.SETTING_UP
                else ReplicationStatus.DOWN
            )
        return {
            "peer_name": pr.peer["name"],
            "hm_ip": pr.peer_hm_ip,
            "vip": pr.vip,
            "version": pr.peer["version"],
            "udi": pr.peer.get("udi", ""),
            "device_type": pr.peer.get("device_type", ""),
            "failover_type": ha.config.failover_type.value,
            "failback_type": ha.config.failback_type.value,
            "failover_wait": ha.config.failover_wait,
            "stabilisation_seconds": ha.config.stabilisation_seconds,
            "maintenance": ha.config.maintenance,
            "instance_db_name": names["standby_db_name"] if primary else names["secondary_db_name"],
            "instance_db_port": names["standby_db_port"] if primary else names["secondary_db_port"],
            "dataguard_name": names["dataguard_name"],
            "primary_db_alias": names["primary_db_alias"],
            "direct_connect": pr.direct,
            "heartbeat": (LinkStatus.UP if ha.heartbeat_up else LinkStatus.DOWN).value,
            "mean_heartbeat_ms": pr.mean_ms,
            "state": ha.state.value,
            "running": ha.running,
            "in_charge": ha.in_charge,
            "owner": ha.owner.value,
            "generation": ha.generation,
            "data_replication": replication.value,
            "witnesses": [
                {"address": address, "ok": ok, "answer": answer[:200]}
                for address, (ok, answer) in zip(ha.config.witnesses, pr.witness_view, strict=False)
            ],
            "fenced": pr.fenced_shown,
            "paths": {
                path.value: (LinkStatus.UP if pr.path_up(path, now) else LinkStatus.DOWN).value for path in pr.paths
            },
            "sync_percent": 100 if synced else pr.sync_percent,
            "status": status,
            "allowed_switch_at": iso(at) if at else None,
            "transitions": [] if brief else [{"at": now_iso(t), "state": s.value} for t, s in ha.transitions],
            "instance": {"db_name": pr.instance.db_name, **pr.instance.digest()},
        }

    def ha_info(self, *, brief: bool = False) -> HAInfo:
        """``brief``: without each pair's state history (the poller's request, 2,000 at a time)."""
        node = self.node
        cfg = node.cfg
        return {
            "protocol": PROTOCOL_VERSION,
            "node": cfg.name,
            "running": node.services_running,
            "role": cfg.role.value,
            "hm_ip": cfg.hm_ip,
            "vip": cfg.vip,
            "netmask": cfg.netmask,
            "version": cfg.version,
            "udi": cfg.udi,
            "device_type": cfg.device_type,
            "direct_connect": cfg.direct_connect,
            "peers": [self.peer_info(p, brief=brief) for p in node.pairs.values()],
            "generation": max((p.ha.generation for p in node.pairs.values()), default=0),
            "vips_in_charge": sorted(node.desired_vips()),
            "last_seq": node.seq,
            "recovery_mode": cfg.recovery,
            "services": self.services_status(),
        }

    def services_status(self) -> list[ServiceInfo]:
        """The services and their admin / operation status (a secondary's are DORMANT until
        it takes charge): in server-info, and in ha-info for the portal's poller."""
        node = self.node
        running = node.services_running
        dormant = node.cfg.role is Role.SECONDARY and not any(p.ha.in_charge for p in node.pairs.values())
        svc = [("Context Aware Service", "8.0.1.79", running and not dormant)] + [
            (n, v, False)
            for n, v in (
                ("WIPS", "3.0.8155.0"),
                ("Mobile Concierge Service", "5.0.1.23"),
                ("CMX Analytics", "3.0.1.68"),
                ("CMX Connect & Engage", "1.0.0.29"),
                ("HTTP Proxy Service", "1.0.0.1"),
            )
        ]
        return [
            {
                "name": n,
                "version": v,
                "admin_status": "Enabled" if n == "Context Aware Service" else "Disabled",
                "operation_status": "Up" if up else "Down",
            }
            for n, v, up in svc
        ]

    def server_info(self) -> ServerInfo:
        node = self.node
        cfg = node.cfg
        running = node.services_running
        dormant = cfg.role is Role.SECONDARY and not any(p.ha.in_charge for p in node.pairs.values())
        elements = (
            sum(p.instance.count for p in node.pairs.values())
            if cfg.role is Role.SECONDARY
            else (node.own_instance.count if node.own_instance else 0)
        )
        limit = ELEMENT_LIMITS.get(cfg.device_type, 2000)
        for lic in node.licenses:
            try:
                limit = max(limit, int(lic["features"].get("CAS Elements", 0)))
            except (TypeError, ValueError):
                pass
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        db_bytes = sum(f.stat().st_size for f in (node.sd.root / "instances").glob("*.jsonl"))
        return {
            "protocol": PROTOCOL_VERSION,
            "node": cfg.name,
            "product_name": "Cisco Mobility Service Engine",
            "version": cfg.version,
            "hm_ip": cfg.hm_ip,
            "direct_connect": cfg.direct_connect,
            "role": cfg.role.value,
            "ha_role": cfg.role.number,
            "hw_version": "V01",
            "product_identifier": cfg.product_identifier,
            "serial_number": cfg.serial,
            "udi": cfg.udi,
            "device_type": cfg.device_type,
            "legacy_port": cfg.port,
            "log_level": "INFO",
            "days_to_keep_events": 2,
            "session_timeout_mins": 30,
            "db_backup_days": 2,
            "services_running": running,
            "dormant": dormant,
            "services": self.services_status(),
            "start_time": now_iso(node.started_at),
            "current_time": now_iso(),
            "timezone": cfg.timezone,
            "restarts": node.restarts,
            "used_memory_mb": int(rss_mb),
            "db_disk_size_mb": round(db_bytes / 1e6, 3),
            "active_sessions": [],
            "trap_destinations": [
                {"url": v["url"], "last_updated": v.get("last_updated")} for v in node.traps.destinations.values()
            ],
            "active_elements": elements,
            "element_limit": limit,
            "elements_not_tracked": max(0, elements - limit),
            "licenses": [{k: v for k, v in lic.items() if k != "text"} for lic in node.licenses],
            "service_assignments": len(node.assignments),
        }

    def events_since(self, since: int, limit: int) -> EventsPage:
        node = self.node
        evs = node.events.since(since, limit)
        if not evs and since < node.seq and (not node.events or node.events[0]["seq"] > since + 1):
            upgraded = (event_upgraded(raw) for raw in read_jsonl(node.sd.path("events.jsonl")))
            evs = [e for e in upgraded if e is not None and e["seq"] > since][:limit]
        return {"node": node.cfg.name, "last_seq": node.seq, "events": evs}
