"""What the steps of every job kind share: the pair, the request bodies, the one way to post."""

from __future__ import annotations

from django.conf import settings

from hapairs import agent_client, polling
from hapairs.jobs import JobContext, StepFailed
from hapairs.models import Appliance, HAPair

TRAP_DESTINATIONS_MAX = 8  # what an agent keeps (nodeagent.operator_api)


def _pair(ctx: JobContext) -> HAPair:
    if ctx.job.pair_id is None:
        raise StepFailed("The HA pair of this job no longer exists.")
    return HAPair.objects.select_related("primary", "secondary").get(pk=ctx.job.pair_id)


def _mode(value: str) -> str:
    return "Automatic" if value == "automatic" else "Manual"


def _peer_block(node: Appliance, pair: HAPair) -> dict:
    """What one node must know about the other to pair with it."""
    block = {
        "name": node.name,
        "hm_ip": node.hm_ip,
        "password": node.get_password(),
        "version": node.version,
        "udi": node.udi,
        "device_type": node.device_type,
        "port": settings.AGENT_PORT,
    }
    if node.tls_fingerprint:  # the other node pins this one's certificate (as the portal does)
        block["fingerprint"] = node.tls_fingerprint
    if node.direct_ip:  # the other node heartbeats over the direct cable too
        block["direct_connect"] = node.direct_ip
    if node.pk == pair.primary_id:
        block["vip"] = node.vip
        block["netmask"] = node.netmask
    return block


def _witness_block(pair: HAPair, *, send_witnesses: bool) -> dict:
    """The portal's witnesses, the password decrypted for this request only. A pair without
    any sends none (the agent keeps what its fleet file lists), unless they were just removed
    (``send_witnesses``: an update that changed them)."""
    if not pair.witness_addresses and not send_witnesses:
        return {}
    return {
        "witnesses": list(pair.witness_addresses),
        "witness_password": pair.get_witness_password(),
        "witness_mode": pair.witness_mode,
    }


def _configure_body(pair: HAPair, role: str, *, send_witnesses: bool = False, **overrides) -> dict:
    other = pair.primary if role == "secondary" else pair.secondary
    values = {
        "failover_type": pair.failover_type,
        "failback_type": pair.failback_type,
        "failover_wait": pair.failover_wait,
        "maintenance": pair.maintenance,
    }
    values.update(overrides)
    return {
        "role": role,
        "peer": _peer_block(other, pair),
        "failover_type": _mode(values["failover_type"]),
        "failback_type": _mode(values["failback_type"]),
        "failover_wait": values["failover_wait"],
        "maintenance": bool(values["maintenance"]),
        "stabilisation_seconds": settings.HA_STABILISATION_SECONDS,
        **_witness_block(pair, send_witnesses=send_witnesses),
    }


def _post(ctx: JobContext, node: Appliance, path: str, body: dict, *, method: str = "POST") -> dict:
    """One command of a job step: its key, and the cause the agent echoes on its events."""
    return agent_client.call(
        agent_client.target_for(node),
        method,
        path,
        body={**body, "cause": ctx.cause},
        idempotency_key=ctx.idempotency_key,
    )


def _refresh(pair: HAPair) -> HAPair:
    polling.poll([pair.primary_id, pair.secondary_id])
    return HAPair.objects.select_related("primary", "secondary").get(pk=pair.pk)
