"""The operator's commands on the Health Monitor API (from the portal or by hand).

Pairing (:meth:`OperatorApi.configure`, :meth:`OperatorApi.delete_peer`), switchover and
failback (:meth:`OperatorApi.invoke`, carried out on the secondary by
:meth:`OperatorApi.invoke_here`), stopping and starting the services, licenses, and the
trap destinations. Each checks the request body and answers with :class:`ApiError` when it
refuses; the state changes go through the pair's state machine and the node's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from . import tlsid
from .client import AgentError
from .clock import now_iso
from .config import ConfigError, check_ip, check_trap_url
from .errors import ApiError
from .hastate import Note, PairConfig, PairHA, Refused
from .pair import PairRuntime
from .protocol import PATH_PEER_COMMAND, Cause, EventCode, Mode, PeerCommand, Role, StopReason
from .store import ASSIGNMENTS_FILE, LICENSES_FILE

log = logging.getLogger("nodeagent.operator")
if TYPE_CHECKING:  # a type only: node.py imports this module
    from .node import Node


class OperatorApi:
    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    # ================================================================= pairing
    def configure(self, body: dict, cause: Cause | None = None) -> dict:
        node = self.node
        cfg = node.cfg
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        role = str(body.get("role", "")).lower()
        if role not in ("primary", "secondary"):
            raise ApiError(400, "role must be primary or secondary")
        if Role(role) is not cfg.role:
            raise ApiError(
                409,
                "*** User has switched roles for this MSE. MSE must be stopped before switching roles. "
                "Re-run setup to change the role.",
            )
        peer_in = body.get("peer")
        if not isinstance(peer_in, dict):
            raise ApiError(400, "peer must be an object with name, hm_ip, password, version")
        try:
            peer: dict[str, Any] = {
                "name": str(peer_in["name"]),
                "hm_ip": check_ip(peer_in["hm_ip"], "peer hm_ip", allow_non_loopback=node.allow_non_loopback),
                "password": str(peer_in["password"]),
                "version": str(peer_in["version"]),
                "udi": str(peer_in.get("udi", "")),
                "device_type": str(peer_in.get("device_type", "")),
                "vip": peer_in.get("vip"),
                "netmask": peer_in.get("netmask"),
                "direct_connect": peer_in.get("direct_connect"),
                "port": int(peer_in.get("port", cfg.port)),
                # the peer's TLS certificate, pinned by the portal when it added it: every
                # heartbeat and peer command then goes to exactly that certificate
                "fingerprint": tlsid.normalise(str(peer_in["fingerprint"])) if peer_in.get("fingerprint") else None,
            }
            if peer["vip"]:
                peer["vip"] = check_ip(peer["vip"], "peer vip", allow_non_loopback=node.allow_non_loopback)
            if peer["direct_connect"]:
                peer["direct_connect"] = check_ip(
                    peer["direct_connect"], "peer direct_connect", allow_non_loopback=node.allow_non_loopback
                )
            existing_cfg = node.pairs[peer["hm_ip"]].ha.config if peer["hm_ip"] in node.pairs else None
            witness_keys = ("witnesses", "witness_password", "witness_mode")
            # the witnesses the fleet (or an earlier configure) gave stay unless the body names others
            witness = {k: body[k] for k in witness_keys if k in body} or (
                {"witnesses": existing_cfg.witnesses, "witness_password": existing_cfg.witness_password,
                 "witness_mode": existing_cfg.witness_mode} if existing_cfg else {}
            )  # fmt: skip
            if isinstance(witness.get("witnesses"), list):
                witness["witnesses"] = tuple(witness["witnesses"])
            pc = PairConfig(
                Mode.parse(body.get("failover_type", "Manual")),
                Mode.parse(body.get("failback_type", "Manual")),
                body.get("failover_wait", 10),
                body.get("stabilisation_seconds", 1800),
                allow_short_wait=node.allow_short_wait,
                maintenance=body.get("maintenance", False),
                **witness,
            )
        except KeyError as e:
            raise ApiError(400, f"peer is missing {e}") from None
        except (ValueError, ConfigError) as e:
            raise ApiError(400, str(e)) from None
        if peer["hm_ip"] == cfg.hm_ip:
            raise ApiError(400, "a node cannot be paired with itself")
        if peer["version"] != cfg.version:
            raise ApiError(
                409,
                f"Primary and secondary must run the same software version ({cfg.version} here, {peer['version']} there)",
            )
        if cfg.role is Role.SECONDARY and not peer["vip"]:
            raise ApiError(400, "the primary's vip is required on a secondary")
        existing = node.pairs.get(peer["hm_ip"])
        now = time.time()
        if existing is not None:
            existing.peer.update(peer)
            notes = existing.ha.update_config(now, pc)
            node.record(notes, existing, cause=cause)
            node.changed()
            node.witnesses.start(existing)  # witnesses given to a pair that had none: guard it now
            return {"created": False, "peer": node.info.peer_info(existing)}
        if cfg.role is Role.PRIMARY and node.pairs:
            raise ApiError(409, "this primary already has a secondary; delete it first")
        if cfg.role is Role.SECONDARY and len(node.pairs) >= 2:
            raise ApiError(409, "a secondary can back at most two primaries")
        if any(p.vip == peer["vip"] for p in node.pairs.values() if peer["vip"]):
            raise ApiError(409, f"VIP {peer['vip']} is already backed by this secondary")
        recovery = body.get("recovery") is True
        if recovery and (cfg.role is not Role.PRIMARY or not cfg.recovery):
            raise ApiError(
                409,
                "Recovery restores the configuration of a primary that was set up in recovery mode "
                '(setup: "Start MSE in recovery mode" yes); this server was not.',
            )
        ha, notes = PairHA.create(cfg.role, pc, now)
        if recovery:
            # the secondary holds the data and the VIP: come back behind it (TERMINATED); a
            # failback copies the data back and returns the VIP
            ha.restore_behind_secondary(now, self._recovery_generation(body))
            notes = [
                Note(
                    EventCode.CONFIG_RESTORED,
                    f"Recovery mode: generation {ha.generation}, the secondary stays in charge until a failback.",
                )
            ]
        elif cfg.role is Role.PRIMARY and not node.unpaired_running:
            ha.running, ha.stop_reason, ha.in_charge = False, StopReason.GRACEFUL, False
            ha.resume_in_charge = True
        pr = PairRuntime(node, peer, node.free_slot(), ha)
        pr.take_cause(cause, now)  # a new pairing: its events name the job until it is Active
        node.pairs[peer["hm_ip"]] = pr
        if node.removed_peers:
            node.removed_peers.pop(peer["hm_ip"], None)  # paired again: no longer a removed peer
        node.record(notes, pr)
        if recovery:
            pr.sync_done_once = True  # the data comes back with the failback, not an initial sync
            cfg.recovery = False  # restored: a later unpaired start claims the VIP again
            node.sd.save("config.json", cfg.to_dict())
        else:
            node.procedures.announce_initial_sync(pr)
        node.save_ha()
        node.heartbeats.start(pr)
        node.witnesses.start(pr)
        node.wake()
        return {"created": True, "peer": node.info.peer_info(pr)}

    @staticmethod
    def _recovery_generation(body: dict) -> int:
        try:
            generation = int(body.get("generation", 0))
        except (TypeError, ValueError):
            raise ApiError(400, "generation must be an integer") from None
        if generation < 1:
            raise ApiError(400, "recovery needs the pair's generation (the secondary's, 1 or more)")
        return generation

    async def delete_peer(self, hm_ip: str, cause: Cause | None = None) -> dict:
        node = self.node
        pr = node.pairs.get(hm_ip)
        if pr is None:
            raise ApiError(404, f"no peer {hm_ip}")
        if node.cfg.role is Role.SECONDARY and pr.ha.in_charge:
            raise ApiError(409, "This secondary is in charge of the primary's VIP; fail back before deleting the pair.")
        if node.cfg.role is Role.PRIMARY and pr.ha.owner is Role.SECONDARY:
            raise ApiError(409, "The secondary is in charge; fail back before deleting the pair.")
        node.drop_pair(pr)
        # a peer still paired with us (the manager could not reach it) is told when it asks
        node.removed_peers = {**(node.removed_peers or {}), hm_ip: now_iso()}
        node.emit(EventCode.PEER_DELETED, f"Peer {pr.peer['name']} ({hm_ip}) removed.", cause=cause)
        node.save_ha()
        await node.vips.reconcile()
        return {"deleted": hm_ip}

    def reset_sync(self, hm_ip: str, body: dict, cause: Cause | None = None) -> dict:
        """Secondary, for one primary (only that pairing, when it backs two): the guide's
        remedy for a synchronisation stuck at X %, without stopping anything. The pairing's
        per-primary state here is dropped (its heartbeats, procedure, replication cursor and
        state history) and made again from the primary's configuration, as a re-add would,
        keeping the pair's generation (fencing orders by it) and its stabilisation window.
        The instance's data is kept and copied again from the start, or emptied
        (``empty_data``: its files deleted; nothing the primary holds is lost). The primary
        keeps serving and copies the instance again."""
        node = self.node
        pr = node.pairs.get(hm_ip)
        if pr is None:
            raise ApiError(404, f"no peer {hm_ip}")
        if node.cfg.role is not Role.SECONDARY:
            raise ApiError(409, "Only a secondary's synchronisation is reset (the primary holds the data).")
        if pr.ha.in_charge or pr.ha.owner is not Role.PRIMARY:
            raise ApiError(
                409, "This secondary is in charge of the primary's VIP: its data is the pair's; fail back first."
            )
        empty = body.get("empty_data", False)
        if not isinstance(empty, bool):
            raise ApiError(400, "empty_data must be true or false")
        now = time.time()
        ha, _ = PairHA.create(Role.SECONDARY, pr.ha.config, now)
        ha.generation, ha.last_switch_at = pr.ha.generation, pr.ha.last_switch_at
        if empty:
            node.drop_pair(pr)  # its heartbeats and tasks stopped, its instance closed
            for path in (pr.instance.log_path, pr.instance.meta_path):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            fresh = PairRuntime(node, pr.peer, pr.slot, ha)  # the same slot: the same (now no) files
        else:
            try:  # the instance's files read again before anything is dropped
                fresh = PairRuntime(node, pr.peer, pr.slot, ha)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ApiError(
                    507,
                    f"Instance {pr.instance.db_name}'s files cannot be read again ({e}); nothing was changed: "
                    "reset it emptying its data (the primary holds everything).",
                ) from None
            node.drop_pair(pr)
        fresh.sync_done_once = pr.sync_done_once
        if not empty:
            fresh.instance.set_sync_lsn(0)  # copied again from the start; records already held are kept
        fresh.take_cause(cause, now)
        node.pairs[hm_ip] = fresh
        kept = f"{fresh.instance.count} records kept" if not empty else "its data emptied"
        node.emit(
            EventCode.SYNC_RESET,
            f"Instance {fresh.instance.db_name} for {pr.peer['name']} ({hm_ip}): {kept}; this pairing's state "
            "here made again from the primary's configuration; the primary copies the instance again.",
            fresh,
            cause=cause,
        )
        node.procedures.announce_initial_sync(fresh)
        node.save_ha()
        node.heartbeats.start(fresh)
        node.witnesses.start(fresh)
        node.wake()
        return {"reset": hm_ip, "empty_data": empty, "records": fresh.instance.count}

    # ================================================================= switchover and failback
    def _pick_pair(self, body: dict) -> PairRuntime:
        pairs = self.node.pairs
        if not pairs:
            raise ApiError(409, "High availability is not configured on this server.")
        peer = body.get("peer") if isinstance(body, dict) else None
        if peer:
            pr = pairs.get(str(peer))
            if pr is None:
                raise ApiError(404, f"no peer {peer}")
            return pr
        if len(pairs) > 1:
            raise ApiError(400, 'this secondary backs two primaries: say which with "peer": <primary HM IP>')
        return next(iter(pairs.values()))

    async def invoke(self, body: dict, what: str, cause: Cause | None = None) -> dict:
        """Switchover / failback requested by the manager on either node."""
        node = self.node
        pr = self._pick_pair(body)
        cmd = PeerCommand.INVOKE_FAILOVER if what == "failover" else PeerCommand.INVOKE_FAILBACK
        if isinstance(body, dict) and body.get("generation") is not None:
            try:
                gen = int(body["generation"])
            except (TypeError, ValueError):
                raise ApiError(400, "generation must be an integer") from None
            if gen < pr.ha.generation:
                raise ApiError(409, f"stale request: the pair is at generation {pr.ha.generation}, not {gen}")
        if node.cfg.role is Role.SECONDARY:
            return await self.invoke_here(pr, cmd, cause)
        try:  # the secondary carries it out
            msg = node.heartbeats.peer_msg(pr, cmd=cmd.value, cause=cause)
            return await pr.client(timeout=5.0).call("POST", PATH_PEER_COMMAND, msg)
        except AgentError as e:
            raise ApiError(e.status, e.data.get("error", str(e)) if isinstance(e.data, dict) else str(e)) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise ApiError(502, f"the secondary {pr.peer_hm_ip} cannot be reached: {e}") from None

    async def invoke_here(self, pr: PairRuntime, cmd: PeerCommand, cause: Cause | None = None) -> dict:
        """On the secondary: start the switchover (``INVOKE_FAILOVER``) or the failback; the
        command's cause is echoed on every event of the procedure, on both nodes."""
        node = self.node
        now = time.time()
        try:
            if cmd is PeerCommand.INVOKE_FAILOVER:
                notes = pr.ha.invoke_failover(now)
            else:
                notes = pr.ha.invoke_failback(now)
        except Refused as e:
            raise ApiError(409, str(e)) from None
        pr.take_cause(cause, now)
        node.record(notes, pr)
        node.changed()
        node.schedule(pr)
        return {"accepted": True, "state": pr.ha.state.value, "peer": pr.peer_hm_ip, "generation": pr.ha.generation}

    # ================================================================= services
    async def stop_services(self, cause: Cause | None = None) -> dict:
        node = self.node
        now = time.time()
        node.admin_stopped = True
        node.unpaired_running = False
        for pr in node.pairs.values():
            node.record(pr.ha.stop_services(now), pr, cause=cause)
        if not node.pairs:
            node.emit(EventCode.SERVICES_STOPPED, cause=cause)
        node.save_ha()
        await node.vips.reconcile()
        await asyncio.gather(
            *(node.heartbeats.tell_stopping(pr, cause) for pr in node.pairs.values()), return_exceptions=True
        )
        return {"running": False, "states": {p.peer_hm_ip: p.ha.state.value for p in node.pairs.values()}}

    async def start_services(self, cause: Cause | None = None) -> dict:
        node = self.node
        now = time.time()
        node.admin_stopped = False
        node.unpaired_running = True
        for pr in node.pairs.values():
            node.record(pr.ha.start_services(now), pr, cause=cause)
        if not node.pairs:
            node.emit(EventCode.SERVICES_STARTED, cause=cause)
        node.save_ha()
        await node.vips.reconcile()
        return {"running": True, "states": {p.peer_hm_ip: p.ha.state.value for p in node.pairs.values()}}

    # ================================================================= licenses and traps
    def install_license(self, body: dict, cause: Cause | None = None) -> dict:
        node = self.node
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "text (the license file) is required")
        features = body.get("features", {})
        if not isinstance(features, dict):
            raise ApiError(400, "features must be an object")
        lid = hashlib.sha256(text.encode()).hexdigest()[:16]
        for lic in node.licenses:
            if lic["id"] == lid:
                return lic
        lic = {"id": lid, "text": text, "features": features, "installed_at": now_iso()}
        node.licenses.append(lic)
        node.sd.save(LICENSES_FILE, node.licenses)
        node.emit(EventCode.LICENSE_INSTALLED, ", ".join(f"{k}: {v}" for k, v in features.items()), cause=cause)
        return lic

    def remove_license(self, lid: str, cause: Cause | None = None) -> dict:
        node = self.node
        before = len(node.licenses)
        node.licenses = [x for x in node.licenses if x["id"] != lid]
        if len(node.licenses) == before:
            raise ApiError(404, f"no license {lid}")
        node.sd.save(LICENSES_FILE, node.licenses)
        node.emit(EventCode.LICENSE_REMOVED, lid, cause=cause)
        return {"deleted": lid}

    def delete_assignments(self) -> dict:
        """Delete every synchronized service assignment ("Delete synchronized service
        assignments" on the manager's Add screen): the location history stays; services are
        assigned again by hand."""
        node = self.node
        deleted = len(node.assignments)
        node.assignments = []
        node.sd.save(ASSIGNMENTS_FILE, node.assignments)
        log.info("%s: %d synchronized service assignment(s) deleted", node.cfg.name, deleted)
        return {"deleted": deleted}

    def set_trap_destinations(self, body: dict) -> dict:
        node = self.node
        urls = body.get("urls") if isinstance(body, dict) else None
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls) or len(urls) > 8:
            raise ApiError(400, "urls must be a list of up to 8 URLs")
        try:
            for u in urls:
                check_trap_url(u, "trap destinations", allow_non_loopback=node.allow_non_loopback)
        except ConfigError as e:
            raise ApiError(400, str(e)) from None
        return node.traps.replace(urls)
