"""HA pairs in service: switch over, fail back, maintenance, delete the secondary, recover
the primary, start an appliance's services (``services.pairs`` records and configures them)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from hapairs import selectors
from hapairs.choices import EventCode, HAState, JobKind
from hapairs.models import Appliance, HAPair
from hapairs.services._common import ServiceError, actor_name, event_record
from hapairs.services.jobs import job_enqueue


# --- switchover / failback: the pre-flight decides ------------------------------------
def _switch(*, pair: HAPair, action: str, by, reason: str):
    check = selectors.preflight(pair, action)
    if not check.allowed:
        raise ServiceError(check.refusal, field="__all__")
    kind = JobKind.SWITCHOVER if action == "switchover" else JobKind.FAILBACK
    with transaction.atomic():
        return job_enqueue(kind=kind, pair=pair, by=by, reason=reason, params={"generation": pair.generation})


def ha_switchover(*, pair: HAPair, by: AbstractBaseUser | None = None, reason: str = ""):
    """Manual failover: stop the primary's services, the secondary takes over the VIP."""
    return _switch(pair=pair, action="switchover", by=by, reason=reason)


def ha_failback(*, pair: HAPair, by: AbstractBaseUser | None = None, reason: str = ""):
    """Give the VIP back to the primary once it is up again (TERMINATED)."""
    return _switch(pair=pair, action="failback", by=by, reason=reason)


def ha_delete_secondary(*, pair: HAPair, by: AbstractBaseUser | None = None, reason: str = ""):
    """The only safe teardown (spec §5): both agents drop the pairing, then the row goes."""
    with transaction.atomic():
        return job_enqueue(kind=JobKind.DELETE_SECONDARY, pair=pair, by=by, reason=reason)


@transaction.atomic
def ha_maintenance_set(*, pair: HAPair, on: bool, by: AbstractBaseUser | None = None, reason: str = "") -> HAPair:
    """Maintenance mode: automatic failover and failback paused while someone works. The
    portal shows it at once; a job tells both agents, which stop deciding by themselves."""
    if on and not reason.strip():
        raise ServiceError("Say why the pair goes into maintenance; everyone will see it.", field="reason")
    pair = HAPair.objects.select_for_update().get(pk=pair.pk)
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
    """Forget a pair whose agents have both dropped it (the last step of delete-secondary)."""
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
    pair.delete()


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


def appliance_start_services(*, appliance: Appliance, by: AbstractBaseUser | None = None, reason: str = ""):
    """Start an appliance's services (the seed's "primary brought back up" after a switchover)."""
    pair = selectors.pair_for(appliance)
    with transaction.atomic():
        return job_enqueue(kind=JobKind.START_SERVICES, pair=pair, appliance=appliance, by=by, reason=reason)
