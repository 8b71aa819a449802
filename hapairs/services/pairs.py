"""HA pairs: record, configure, update, switch over, fail back, delete, maintenance."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from hapairs import agent_replies, rules, selectors
from hapairs.choices import MAX_PRIMARIES_PER_SECONDARY, SwitchType
from hapairs.models import Appliance, HAPair
from hapairs.services._common import ServiceError, actor_name, service_error_from, event_record

# --- HA pairs -------------------------------------------------------------------------
def ha_pair_create(
    *,
    primary: Appliance,
    secondary: Appliance,
    failover_type: str = SwitchType.MANUAL,
    failback_type: str = SwitchType.MANUAL,
    failover_wait: int = 10,
    direct_connect: bool = False,
    by: AbstractBaseUser | None = None,
) -> HAPair:
    """Record a new pair after every rule of spec §2 passes.

    Both appliances are locked for the check, so concurrent requests are decided one
    after the other; the database's slot constraint is the backstop if anything slips.
    """
    try:
        with transaction.atomic():
            return _ha_pair_create_locked(
                primary_id=primary.pk,
                secondary_id=secondary.pk,
                failover_type=failover_type,
                failback_type=failback_type,
                failover_wait=failover_wait,
                direct_connect=direct_connect,
                by=by,
            )
    except IntegrityError:
        raise ServiceError(
            f"{secondary.name} changed while this pairing was being saved (another pairing took its "
            f"place); it can back at most {MAX_PRIMARIES_PER_SECONDARY} primaries. Reload and try again.",
            field=rules.F_SECONDARY,
        ) from None


def _ha_pair_create_locked(
    *, primary_id, secondary_id, failover_type, failback_type, failover_wait, direct_connect, by
) -> HAPair:
    locked = {a.pk: a for a in Appliance.objects.select_for_update().filter(pk__in=[primary_id, secondary_id])}
    primary, secondary = locked[primary_id], locked[secondary_id]
    if HAPair.objects.filter(primary=primary).exists():
        raise ServiceError(f"{primary.name} is already paired with a secondary.", field="__all__")
    if HAPair.objects.filter(secondary=primary).exists():
        raise ServiceError(f"{primary.name} is a secondary in another pair; it cannot be a primary.")
    if HAPair.objects.filter(primary=secondary).exists():
        raise ServiceError(
            f"{secondary.name} is the primary of another pair; it cannot be a secondary.", field=rules.F_SECONDARY
        )
    backed = list(HAPair.objects.filter(secondary=secondary).select_related("primary").order_by("slot"))
    violations = rules.validate_pairing(
        selectors.node_facts(primary),
        selectors.node_facts(secondary),
        already_backed=[selectors.node_facts(pair.primary) for pair in backed],
        failover_wait=failover_wait,
    )
    if violations:
        error = rules.PairingError(violations)
        raise ServiceError(str(error), field=violations[0].field, errors=error.by_field())
    taken = {pair.slot for pair in backed}
    slot = min(s for s in range(1, MAX_PRIMARIES_PER_SECONDARY + 1) if s not in taken)
    pair = HAPair(
        primary=primary,
        secondary=secondary,
        failover_type=failover_type,
        failback_type=failback_type,
        failover_wait=failover_wait,
        direct_connect=direct_connect,
        created_by=by,
    )
    pair.assign_slot(slot)
    try:
        pair.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise service_error_from(exc) from None
    pair.save()
    event_record(
        description="High availability pair recorded",
        generated_by=actor_name(by),
        pair=pair,
        remarks=(
            f"{primary.name} backed by {secondary.name} ({pair.instance_db_name}); "
            f"failover {pair.get_failover_type_display()}, failback {pair.get_failback_type_display()}, "
            f"wait {pair.failover_wait} s"
        ),
    )
    return pair


# --- configure (the "Configure High Availability Parameters" save) -----------------
def ha_configure(
    *,
    primary: Appliance,
    secondary_name: str,
    secondary_ip: str,
    secondary_password: str,
    failover_type: str = SwitchType.MANUAL,
    failback_type: str = SwitchType.MANUAL,
    failover_wait: int = 10,
    activation_licence: tuple[str, bytes] | None = None,
    by: AbstractBaseUser | None = None,
    reason: str = "",
):
    """Pair ``primary`` with the named secondary and queue the job that configures both agents.

    A secondary the portal does not know yet is contacted first (as Add Mobility Services
    Engine would) and recorded in the same transaction as the pair and the job, so a
    refusal leaves nothing behind. ``activation_licence`` (file name, bytes) is "Activate
    Secondary with License": verified and stored in that same transaction, so a VA
    secondary counts as activated for the rules; the job installs it first.
    """
    from hapairs.choices import JobKind
    from hapairs.services.appliances import appliance_create, appliance_discover
    from hapairs.services.jobs import job_enqueue

    secondary = Appliance.objects.filter(name=secondary_name).first()
    discovered = None
    if secondary is None:
        if Appliance.objects.filter(hm_ip=secondary_ip).exists():
            other = Appliance.objects.get(hm_ip=secondary_ip)
            raise ServiceError(
                f"{secondary_ip} is registered as {other.name}, not {secondary_name}.", field="secondary_ip"
            )
        discovered = appliance_discover(ip=secondary_ip, password=secondary_password)
    elif secondary.hm_ip != secondary_ip:
        raise ServiceError(
            f"{secondary_name}'s Health Monitor IP is {secondary.hm_ip}, not {secondary_ip}.", field="secondary_ip"
        )
    with transaction.atomic():
        if discovered is not None:
            secondary = appliance_create(
                name=secondary_name,
                device_type=discovered.device_type,
                hm_ip=secondary_ip,
                version=discovered.version,
                password=secondary_password,
                role=discovered.role,
                udi=discovered.udi,
                services=agent_replies.services_as_rows(discovered.services),
                by=by,
            )
        elif secondary_password and secondary_password != secondary.get_password():
            secondary.set_password(secondary_password)
            secondary.save(update_fields=["password_ciphertext", "updated_at"])
        if activation_licence is not None:
            from hapairs.services.licences import licence_upload

            filename, data = activation_licence
            try:
                licence_upload(appliance=secondary, filename=filename, data=data, by=by, reason=reason)
            except ServiceError as exc:
                raise ServiceError(exc.message, field="activation_license") from None
        pair = ha_pair_create(
            primary=primary,
            secondary=secondary,
            failover_type=failover_type,
            failback_type=failback_type,
            failover_wait=failover_wait,
            by=by,
        )
        job = job_enqueue(kind=JobKind.CONFIGURE_HA, pair=pair, by=by, reason=reason)
    return pair, job


CHANGE_REMARKS = {
    "failover_type": "Failover mode set to {}.",
    "failback_type": "Failback mode set to {}.",
    "failover_wait": "Long failover wait set to {} seconds.",
}


def ha_update(
    *,
    pair: HAPair,
    failover_type: str,
    failback_type: str,
    failover_wait: int,
    by: AbstractBaseUser | None = None,
    reason: str = "",
):
    """Change the pair's parameters; the job pushes them to both agents ("Configuration updated")."""
    from hapairs.choices import JobKind
    from hapairs.services.jobs import job_enqueue

    low, high = rules.FAILOVER_WAIT_RANGE
    if not low <= failover_wait <= high:
        raise ServiceError(
            f"Long Failover Wait must be between {low} and {high} seconds, not {failover_wait}.", field="failover_wait"
        )
    for name, value in (("failover_type", failover_type), ("failback_type", failback_type)):
        if value not in SwitchType.values:
            raise ServiceError(f"{value!r} is neither Manual nor Automatic.", field=name)
    wanted = {"failover_type": failover_type, "failback_type": failback_type, "failover_wait": failover_wait}
    changes = {name: value for name, value in wanted.items() if getattr(pair, name) != value}
    if not changes:
        raise ServiceError("Nothing to change: these are the pair's current parameters.")
    remarks = " ".join(
        CHANGE_REMARKS[name].format(value.upper() if isinstance(value, str) else value) for name, value in changes.items()
    )
    with transaction.atomic():
        job = job_enqueue(
            kind=JobKind.UPDATE_HA, pair=pair, params={"changes": changes, "remarks": remarks}, by=by, reason=reason
        )
    return job


# --- switchover / failback: the pre-flight decides ------------------------------------
def _switch(*, pair: HAPair, action: str, by, reason: str):
    from hapairs.choices import JobKind
    from hapairs.services.jobs import job_enqueue

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
    from hapairs.choices import JobKind
    from hapairs.services.jobs import job_enqueue

    with transaction.atomic():
        return job_enqueue(kind=JobKind.DELETE_SECONDARY, pair=pair, by=by, reason=reason)


@transaction.atomic
def ha_maintenance_set(*, pair: HAPair, on: bool, by: AbstractBaseUser | None = None, reason: str = "") -> HAPair:
    """Maintenance mode: automatic failover and failback paused while someone works. The
    portal shows it at once; a job tells both agents, which stop deciding by themselves."""
    from django.utils import timezone

    from hapairs.choices import JobKind
    from hapairs.services.jobs import job_enqueue

    if on and not reason.strip():
        raise ServiceError("Say why the pair goes into maintenance; everyone will see it.", field="reason")
    pair = HAPair.objects.select_for_update().get(pk=pair.pk)
    if pair.maintenance == on:
        raise ServiceError(f"{pair} is already {'in' if on else 'out of'} maintenance.")
    pair.maintenance = on
    pair.maintenance_by = by if on else None
    pair.maintenance_reason = reason.strip()[:500] if on else ""
    pair.maintenance_since = timezone.now() if on else None
    pair.save(update_fields=["maintenance", "maintenance_by", "maintenance_reason", "maintenance_since", "updated_at"])
    remarks = ("Maintenance mode on: automatic failover and failback paused." if on
               else "Maintenance mode off: automatic failover and failback resumed.")
    job_enqueue(kind=JobKind.SET_MAINTENANCE, pair=pair, params={"maintenance": on, "remarks": remarks},
                by=by, reason=reason or remarks)
    event_record(
        description="Maintenance mode on: automatic failover paused" if on else "Maintenance mode off",
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
    event_record(description=description, generated_by="mseportal", appliance=primary, job=job,
                 remarks=f"Instance {pair.instance_db_name} released on {pair.secondary.name}.")
    pair.delete()


def ha_recover_primary(*, pair: HAPair, by: AbstractBaseUser | None = None, reason: str = ""):
    """HA recovery mode (spec §3): the primary answers but lost its configuration. The job
    makes sure the secondary (which holds the data) is in charge, restores the primary's
    pairing behind it (TERMINATED), and leaves the failback to the operator."""
    from hapairs.choices import HAState, JobKind
    from hapairs.services.jobs import job_enqueue

    if not pair.primary_reachable:
        raise ServiceError(f"{pair.primary.name} is not answering the portal; recovery needs it running in recovery mode.")
    if pair.primary_state != HAState.UNKNOWN:
        raise ServiceError(
            f"{pair.primary.name} still has its high availability configuration ({pair.primary_state}); "
            "there is nothing to recover."
        )
    with transaction.atomic():
        return job_enqueue(kind=JobKind.RECOVER_PRIMARY, pair=pair, by=by, reason=reason)


def appliance_start_services(*, appliance: Appliance, by: AbstractBaseUser | None = None, reason: str = ""):
    """Start an appliance's services (the seed's "primary brought back up" after a switchover)."""
    from hapairs.choices import JobKind
    from hapairs.services.jobs import job_enqueue

    pair = HAPair.objects.filter(primary=appliance).first() or HAPair.objects.filter(secondary=appliance).first()
    with transaction.atomic():
        return job_enqueue(kind=JobKind.START_SERVICES, pair=pair, appliance=appliance, by=by, reason=reason)
