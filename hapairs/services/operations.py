"""HA pairs in service: switch over, fail back, maintenance, delete the secondary, recover
the primary, start an appliance's services (``services.pairs`` records and configures them)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from hapairs import selectors
from hapairs.audit import audit_record, audited, snapshot
from hapairs.choices import EventCode, HAState, JobKind
from hapairs.models import Appliance, HAPair
from hapairs.services._common import ServiceError, actor_name, event_record, pair_lock, rows_lock
from hapairs.services.jobs import job_enqueue


# --- switchover / failback: the pre-flight decides ------------------------------------
def _switch(*, pair: HAPair, action: str, by, reason: str):
    check = selectors.preflight(pair, action)
    if not check.allowed:
        raise ServiceError(check.refusal, field="__all__")
    kind = JobKind.SWITCHOVER if action == "switchover" else JobKind.FAILBACK
    with transaction.atomic():
        return job_enqueue(kind=kind, pair=pair, by=by, reason=reason, params={"generation": pair.generation})


@audited("pair.switchover", target="pair")
def ha_switchover(*, pair: HAPair, by: AbstractBaseUser | None = None, reason: str = ""):
    """Manual failover: stop the primary's services, the secondary takes over the VIP."""
    return _switch(pair=pair, action="switchover", by=by, reason=reason)


@audited("pair.failback", target="pair")
def ha_failback(*, pair: HAPair, by: AbstractBaseUser | None = None, reason: str = ""):
    """Give the VIP back to the primary once it is up again (TERMINATED)."""
    return _switch(pair=pair, action="failback", by=by, reason=reason)


@audited("pair.delete", target="pair")
def ha_delete_secondary(*, pair: HAPair, by: AbstractBaseUser | None = None, reason: str = ""):
    """The only safe teardown (spec §5): both agents drop the pairing, then the row goes."""
    with transaction.atomic():
        return job_enqueue(kind=JobKind.DELETE_SECONDARY, pair=pair, by=by, reason=reason)


@audited("pair.remove_one_side", target="pair")
def ha_remove_one_side(
    *, pair: HAPair, side: str, confirmed: bool, by: AbstractBaseUser | None = None, reason: str = ""
):
    """Remove the pairing from one node only, when the other cannot be reached (spec §8: "the
    secondary cannot be deleted while the manager cannot reach it"). The operator confirms
    the other node is down or will be rebuilt; when it comes back still paired, it is told
    the pairing is gone and stands down. Refused while that would take high availability
    from a node in charge, or while both answer (then the normal delete is the safe one)."""
    if side not in ("primary", "secondary"):
        raise ServiceError(f"{side!r} is neither the primary nor the secondary.", field="side")
    kept, other = (pair.primary, pair.secondary) if side == "primary" else (pair.secondary, pair.primary)
    kept_reachable = pair.primary_reachable if side == "primary" else pair.secondary_reachable
    other_reachable = pair.secondary_reachable if side == "primary" else pair.primary_reachable
    if not reason.strip():
        raise ServiceError("Say why the pairing is removed from one node only; everyone will see it.", field="reason")
    if not confirmed:
        raise ServiceError(
            f"Confirm that {other.name} is down or will be rebuilt: it keeps its pairing until it comes back, "
            "and then stands down.",
            field="confirm",
        )
    if other_reachable:
        raise ServiceError(
            f"{other.name} answers the portal: delete the secondary normally, which removes the pairing on both.",
            conflict=True,
        )
    if not kept_reachable:
        raise ServiceError(f"{kept.name} does not answer the portal either: nothing can be removed now.", conflict=True)
    secondary_in_charge = pair.secondary_state == HAState.FAILOVER_ACTIVE or pair.secondary_in_charge
    if side == "secondary" and secondary_in_charge:
        raise ServiceError(
            f"{pair.secondary.name} is in charge (FAILOVER_ACTIVE): removing the pairing from it alone would leave "
            f"{pair.primary.name} paired with a node that serves its VIP. Bring {pair.primary.name} back and fail "
            "back first, or delete the secondary normally.",
            conflict=True,
        )
    if side == "primary" and secondary_in_charge:
        raise ServiceError(
            f"{pair.secondary.name} was last seen in charge of the VIP (FAILOVER_ACTIVE): the primary may not serve "
            "it. Fail back first.",
            conflict=True,
        )
    kind = JobKind.REMOVE_FROM_PRIMARY if side == "primary" else JobKind.REMOVE_FROM_SECONDARY
    with transaction.atomic():
        return job_enqueue(
            kind=kind,
            pair=pair,
            by=by,
            reason=reason,
            params={"confirmed_down": other.name},
        )


@audited("pair.reset_sync", target="pair")
def ha_reset_sync(
    *,
    pair: HAPair,
    by: AbstractBaseUser | None = None,
    reason: str = "",
    empty_data: bool = False,
    confirm_empty: bool = False,
):
    """Reset a synchronisation that made no progress (spec §8: "synchronisation stuck at
    X %"): the secondary drops its per-primary state for this primary only (made again from it),
    and the primary copies it again, serving throughout. ``empty_data`` escalates to
    deleting that instance's data first, and needs ``confirm_empty``: nothing the primary
    holds is lost, but the secondary has no copy until the new one completes."""
    from hapairs.selectors.troubles import sync_stalled  # selectors import services' modules

    if not reason.strip():
        raise ServiceError("Say why the synchronisation is reset; everyone will see it.", field="reason")
    stalled = sync_stalled(pair)
    if stalled is None:
        raise ServiceError(
            f"The synchronisation of {pair} is not stuck: reset it only when it has made no progress for "
            f"{settings.SYNC_STALL_SECONDS} s (now {pair.get_replication_display()}, {pair.sync_percent} %).",
            conflict=True,
        )
    if pair.secondary_in_charge or pair.secondary_state == HAState.FAILOVER_ACTIVE:
        raise ServiceError(
            f"{pair.secondary.name} is in charge: its data is the pair's. Fail back first.", conflict=True
        )
    if empty_data and not confirm_empty:
        raise ServiceError(
            f"Emptying deletes {pair.secondary.name}'s copy of {pair.instance_db_name} ({stalled[0]} % copied): "
            f"nothing {pair.primary.name} holds is lost, but until the new copy completes there is no standby "
            "copy. Confirm it to go on.",
            field="confirm_empty",
        )
    with transaction.atomic():
        return job_enqueue(
            kind=JobKind.RESET_SYNC,
            pair=pair,
            by=by,
            reason=reason,
            params={"empty_data": bool(empty_data), "stuck_at": stalled[0]},
        )


@transaction.atomic
@audited("pair.maintenance", target="pair")
def ha_maintenance_set(*, pair: HAPair, on: bool, by: AbstractBaseUser | None = None, reason: str = "") -> HAPair:
    """Maintenance mode: automatic failover and failback paused while someone works. The
    portal shows it at once; a job tells both agents, which stop deciding by themselves."""
    if on and not reason.strip():
        raise ServiceError("Say why the pair goes into maintenance; everyone will see it.", field="reason")
    pair = pair_lock(pair)
    if pair.maintenance == on:
        raise ServiceError(f"{pair} is already {'in' if on else 'out of'} maintenance.", conflict=True)
    pair.maintenance = on
    pair.maintenance_by = by if on else None
    pair.maintenance_reason = reason.strip()[:500] if on else ""
    pair.maintenance_since = timezone.now() if on else None
    pair.save(update_fields=["maintenance", "maintenance_by", "maintenance_reason", "maintenance_since", "updated_at"])
    remarks = (
        "Maintenance mode on: automatic failover and failback paused."
        if on
        else "Maintenance mode off: automatic failover and failback resumed."
    )
    job_enqueue(
        kind=JobKind.SET_MAINTENANCE,
        pair=pair,
        params={"maintenance": on, "remarks": remarks},
        by=by,
        reason=reason or remarks,
    )
    event_record(
        code=EventCode.MAINTENANCE_ON if on else EventCode.MAINTENANCE_OFF,
        generated_by=actor_name(by),
        pair=pair,
        remarks=reason[:500],
    )
    return pair


@transaction.atomic
def ha_pair_delete_record(*, pair: HAPair, job=None) -> None:
    """Forget a pair whose agents have dropped it (the last step of delete-secondary and of
    the one-side removals).

    Its rows are locked first, in the poller's order (rows_lock): a poll round that holds
    the pair and writes a heartbeat sample or an event for it commits before the rows that
    refer to the pair are collected. Deleting without the lock, the round's sample committed
    between the collection and the delete, and the foreign-key check refused the commit (CI
    saw the job fail in its last step)."""
    rows_lock(pair=pair)
    if not HAPair.objects.filter(pk=pair.pk).exists():  # forgotten meanwhile: nothing left to do
        return
    description = f"Secondary {pair.secondary.name} deleted; {pair.primary.name} runs without high availability"
    primary = pair.primary
    event_record(
        code=EventCode.SECONDARY_DELETED,
        description=description,
        generated_by="mseportal",
        appliance=primary,
        job=job,
        remarks=f"Instance {pair.instance_db_name} released on {pair.secondary.name}.",
    )
    audit_record("pair.deleted", target=pair, before=snapshot(pair), after={"job": job.pk} if job else None,
                 reason=job.reason if job else "", by=job.requested_by if job else None)  # fmt: skip
    pair.delete()
    if job is not None:  # its row's pair is NULL now (SET_NULL): the job's end event must not name the pair
        job.pair = None


@audited("pair.recover_primary", target="pair")
def ha_recover_primary(*, pair: HAPair, by: AbstractBaseUser | None = None, reason: str = ""):
    """HA recovery mode (spec §3): the primary answers but lost its configuration. The job
    makes sure the secondary (which holds the data) is in charge, restores the primary's
    pairing behind it (TERMINATED), and leaves the failback to the operator."""
    if not pair.primary_reachable:
        raise ServiceError(
            f"{pair.primary.name} is not answering the portal; recovery needs it running in recovery mode."
        )
    if pair.primary_state != HAState.UNKNOWN:
        raise ServiceError(
            f"{pair.primary.name} still has its high availability configuration ({pair.primary_state}); "
            "there is nothing to recover."
        )
    with transaction.atomic():
        return job_enqueue(kind=JobKind.RECOVER_PRIMARY, pair=pair, by=by, reason=reason)


@audited("appliance.start_services", target="appliance")
def appliance_start_services(*, appliance: Appliance, by: AbstractBaseUser | None = None, reason: str = ""):
    """Start an appliance's services (the seed's "primary brought back up" after a switchover)."""
    pair = selectors.pair_for(appliance)
    with transaction.atomic():
        return job_enqueue(kind=JobKind.START_SERVICES, pair=pair, appliance=appliance, by=by, reason=reason)
