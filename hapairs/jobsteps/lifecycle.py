"""Delete the secondary, start services, recover a primary (HA recovery mode)."""

from __future__ import annotations

from django.conf import settings

from hapairs import agent_client, polling
from hapairs.choices import EventCode, HAState, JobKind, ReplicationStatus
from hapairs.jobs import JobContext, Step, StepFailed
from hapairs.jobsteps._common import _configure_body, _pair, _post, _refresh
from hapairs.models import Appliance, HAPair
from hapairs.services._common import event_record
from hapairs.services.operations import ha_pair_delete_record
from nodeagent import protocol

STEPS: dict[str, list[Step]] = {}


# --- delete the secondary --------------------------------------------------------------------
def _delete_peer(ctx: JobContext, node: Appliance, peer: Appliance) -> None:
    path = protocol.PATH_HA_PEER.format(peer_hm_ip=peer.hm_ip)
    try:
        _post(ctx, node, path, {}, method="DELETE")
    except agent_client.AgentRejected as exc:
        if exc.status != 404:  # already gone: fine, the step is done
            raise


def delete_on_primary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    _delete_peer(ctx, pair.primary, pair.secondary)


def delete_on_secondary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    _delete_peer(ctx, pair.secondary, pair.primary)


def delete_pair_row(ctx: JobContext) -> None:
    pair = HAPair.objects.select_related("primary", "secondary").filter(pk=ctx.job.pair_id).first()
    if pair is not None:  # a re-run after the row went: nothing left to do
        ha_pair_delete_record(pair=pair, job=ctx.job)


STEPS[JobKind.DELETE_SECONDARY] = [
    Step(
        "delete_on_secondary",
        delete_on_secondary,
        "Removing the pairing on the secondary",
        unreachable_hint="The pairing cannot be removed on both nodes while the secondary is unreachable. If it is "
        "down or will be rebuilt, remove the pairing from the primary only (the Delete secondary page offers it): "
        "the primary keeps its VIP, and the old secondary stands down when it comes back.",
    ),
    Step("delete_on_primary", delete_on_primary, "Removing the pairing on the primary"),
    Step("delete_record", delete_pair_row, "Removing the pair from the portal"),
]


# --- reset a stuck synchronisation (spec §8) ----------------------------------------------------
def reset_sync_on_secondary(ctx: JobContext) -> None:
    pair = _pair(ctx)
    path = protocol.PATH_HA_PEER_RESET.format(peer_hm_ip=pair.primary.hm_ip)
    _post(ctx, pair.secondary, path, {"empty_data": bool(ctx.params.get("empty_data"))})


def wait_resynced(ctx: JobContext) -> None:
    """The primary copies the instance again: the job's progress follows the copy's."""
    pair = _pair(ctx)

    def synced() -> bool:
        current = _refresh(pair)
        ctx.progress(current.sync_percent)
        return (
            current.replication == ReplicationStatus.UP
            and current.sync_percent >= 100
            and current.secondary_state == HAState.SECONDARY_ACTIVE
        )

    ctx.wait_until(
        synced,
        timeout=settings.HA_SYNC_TIMEOUT_SECONDS,
        what=f"{pair.secondary.name} to be in sync with {pair.primary.name} again",
    )


STEPS[JobKind.RESET_SYNC] = [
    Step("reset_on_secondary", reset_sync_on_secondary, "Dropping the secondary's per-primary state"),
    Step("wait_resynced", wait_resynced, "Copying the primary's database again", weight=6),
]


# the other node cannot be reached (the operator confirmed it is down or will be rebuilt):
# one side only; the one left out stands down when it comes back (the 410 it is answered)
STEPS[JobKind.REMOVE_FROM_PRIMARY] = [
    Step("delete_on_primary", delete_on_primary, "Removing the pairing on the primary"),
    Step("delete_record", delete_pair_row, "Removing the pair from the portal"),
]
STEPS[JobKind.REMOVE_FROM_SECONDARY] = [
    Step("delete_on_secondary", delete_on_secondary, "Removing the pairing on the secondary"),
    Step("delete_record", delete_pair_row, "Removing the pair from the portal"),
]


# --- start an appliance's services (e.g. the primary after a switchover) ---------------------
def start_services(ctx: JobContext) -> None:
    appliance = Appliance.objects.get(pk=ctx.job.appliance_id)
    _post(ctx, appliance, protocol.PATH_SERVICES_START, {})


def wait_services_up(ctx: JobContext) -> None:
    appliance = Appliance.objects.get(pk=ctx.job.appliance_id)

    def check():
        polling.poll([appliance.pk])
        pairs = HAPair.objects.filter(pk=ctx.job.pair_id) if ctx.job.pair_id else []
        for pair in pairs:
            return pair.primary_services_up if pair.primary_id == appliance.pk else pair.secondary_services_up
        return Appliance.objects.get(pk=appliance.pk).reachability == "reachable"

    ctx.wait_until(check, timeout=settings.HA_SWITCH_TIMEOUT_SECONDS, what=f"{appliance.name}'s services")


# --- recover a primary that lost its configuration (HA recovery mode, spec §3) -----------
def _primary_ha_info(pair: HAPair) -> dict:
    return agent_client.call(agent_client.target_for(pair.primary), "GET", protocol.PATH_HA_INFO)


def _knows_peer(info: dict, peer: Appliance) -> bool:
    return any(isinstance(p, dict) and p.get("hm_ip") == peer.hm_ip for p in info.get("peers") or [])


def recover_check(ctx: JobContext) -> None:
    """The primary must answer, and must be either in recovery mode or already restored
    (a re-run of this job after a crash)."""
    pair = _pair(ctx)
    info = _primary_ha_info(pair)
    if _knows_peer(info, pair.secondary):
        return
    if not info.get("recovery_mode"):
        raise StepFailed(
            f"{pair.primary.name} has no high availability configuration but was not set up in recovery mode: "
            're-run setup on it answering yes to "Start MSE in recovery mode", then recover it again.'
        )


def recover_secondary_in_charge(ctx: JobContext) -> None:
    """The secondary holds the data: it takes charge (if it has not already) before the
    primary comes back behind it."""
    pair = _refresh(_pair(ctx))
    if pair.secondary_state != HAState.FAILOVER_ACTIVE and not _knows_peer(_primary_ha_info(pair), pair.secondary):
        _post(ctx, pair.secondary, protocol.PATH_FAILOVER, {"peer": pair.primary.hm_ip})
    ctx.wait_until(
        lambda: _refresh(pair).secondary_state == HAState.FAILOVER_ACTIVE,
        timeout=settings.HA_SWITCH_TIMEOUT_SECONDS,
        what=f"{pair.secondary.name} to take charge (FAILOVER_ACTIVE)",
    )


def recover_pin_primary_on_secondary(ctx: JobContext) -> None:
    """A rebuilt primary has a new TLS certificate (an Admin trusted it): the secondary, which
    pins its peer, learns it before the primary comes back (the same configure, nothing else
    changes on it)."""
    pair = _refresh(_pair(ctx))
    if pair.primary.tls_fingerprint:
        _post(ctx, pair.secondary, protocol.PATH_HA_CONFIGURE, _configure_body(pair, "secondary"))


def recover_restore_primary(ctx: JobContext) -> None:
    pair = _refresh(_pair(ctx))
    if _knows_peer(_primary_ha_info(pair), pair.secondary):
        return  # restored by an earlier run of this step
    body = _configure_body(pair, "primary")
    body.update(recovery=True, generation=max(pair.secondary_generation, pair.generation))
    _post(ctx, pair.primary, protocol.PATH_HA_CONFIGURE, body)


def recover_wait_terminated(ctx: JobContext) -> None:
    pair = _pair(ctx)
    ctx.wait_until(
        lambda: _refresh(pair).primary_state == HAState.TERMINATED,
        timeout=settings.HA_SWITCH_TIMEOUT_SECONDS,
        what=f"{pair.primary.name} to come back behind the secondary (TERMINATED)",
    )
    event_record(
        code=EventCode.PRIMARY_RECOVERED,
        description=f"Primary {pair.primary.name} recovered from {pair.secondary.name}",
        generated_by="mseportal",
        pair=pair,
        job=ctx.job,
        remarks="Its configuration is restored; it is TERMINATED while the secondary serves the VIP. "
        "A failback copies the data back and returns the VIP.",
    )


STEPS[JobKind.RECOVER_PRIMARY] = [
    Step("recover_check", recover_check, "Checking the primary is in recovery mode"),
    Step(
        "recover_secondary_in_charge", recover_secondary_in_charge, "Making sure the secondary is in charge", weight=3
    ),
    Step(
        "recover_pin_primary_on_secondary",
        recover_pin_primary_on_secondary,
        "Giving the secondary the primary's certificate",
    ),
    Step("recover_restore_primary", recover_restore_primary, "Restoring the primary's configuration"),
    Step("recover_wait_terminated", recover_wait_terminated, "Waiting for the primary to come back", weight=2),
]


STEPS[JobKind.START_SERVICES] = [
    Step("start_services", start_services, "Starting services"),
    Step("wait_services_up", wait_services_up, "Waiting for the services to be up"),
]
