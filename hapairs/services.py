"""Every write to the domain model goes through here.

Functions are ``<entity>_<verb>(*, ...)``: keyword-only, validated before saving,
atomic, and each records an HA event. Views, forms, admin actions, API handlers and
tasks call these and nothing else that writes.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from hapairs import rules, selectors
from hapairs.choices import MAX_PRIMARIES_PER_SECONDARY, Role, Severity, SwitchType
from hapairs.models import Appliance, HAEvent, HAPair

PORTAL = "mseportal"


class ServiceError(Exception):
    """A write was refused; ``message`` is for the operator, ``field`` for the form."""

    def __init__(self, message: str, *, field: str = "__all__", errors: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.errors = errors or {field: [message]}


def _actor(by: AbstractBaseUser | None) -> str:
    return by.get_username() if by is not None else PORTAL


def _validation_error_to_service_error(exc: ValidationError) -> ServiceError:
    errors = {name: [str(m) for m in messages] for name, messages in exc.message_dict.items()}
    first_field, first_messages = next(iter(errors.items()))
    return ServiceError(" ".join(m for ms in errors.values() for m in ms), field=first_field, errors=errors)


# --- events ---------------------------------------------------------------------------
def event_record(
    *,
    description: str,
    generated_by: str,
    pair: HAPair | None = None,
    appliance: Appliance | None = None,
    remarks: str = "",
    severity: str = Severity.INFO,
    timestamp: datetime | None = None,
    job=None,
    generation: int | None = None,
) -> HAEvent:
    """A portal-side event (agent events with sequence numbers are ingested elsewhere)."""
    return HAEvent.objects.create(
        description=description[:300],
        generated_by=generated_by[:128],
        pair=pair,
        appliance=appliance,
        remarks=remarks[:500],
        severity=severity,
        timestamp=timestamp or timezone.now(),
        job=job,
        generation=generation,
    )


# --- appliances -----------------------------------------------------------------------
@transaction.atomic
def appliance_create(
    *,
    name: str,
    device_type: str,
    hm_ip: str,
    version: str,
    password: str,
    username: str = "admin",
    role: str = Role.UNCONFIGURED,
    vip: str | None = None,
    vip_prefixlen: int | None = None,
    udi: str = "",
    contact_name: str = "",
    http_enabled: bool = False,
    direct_connect: str = "",
    services: list[dict] | None = None,
    by: AbstractBaseUser | None = None,
) -> Appliance:
    """Record an appliance whose facts are known (the add job discovers them from its agent)."""
    if not password:
        raise ServiceError("Enter the appliance's password.", field="password")
    appliance = Appliance(
        name=name,
        device_type=device_type,
        hm_ip=hm_ip,
        version=version,
        username=username,
        role=role,
        vip=vip or None,
        vip_prefixlen=vip_prefixlen if vip else None,
        udi=udi,
        contact_name=contact_name,
        http_enabled=http_enabled,
        direct_connect=direct_connect,
        services=services or [],
    )
    appliance.set_password(password)
    try:
        appliance.full_clean()
    except ValidationError as exc:
        raise _validation_error_to_service_error(exc) from None
    appliance.save()
    event_record(
        description="Mobility Services Engine added",
        generated_by=_actor(by),
        appliance=appliance,
        remarks=f"{appliance.get_device_type_display()} {appliance.version} at {appliance.hm_ip}",
    )
    return appliance


@transaction.atomic
def appliance_set_password(*, appliance: Appliance, password: str, by: AbstractBaseUser | None = None) -> None:
    if not password:
        raise ServiceError("Enter the appliance's password.", field="password")
    appliance.set_password(password)
    appliance.save(update_fields=["password_ciphertext", "updated_at"])
    event_record(description="Appliance password changed", generated_by=_actor(by), appliance=appliance)


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
        raise _validation_error_to_service_error(exc) from None
    pair.save()
    event_record(
        description="High availability pair recorded",
        generated_by=_actor(by),
        pair=pair,
        remarks=(
            f"{primary.name} backed by {secondary.name} ({pair.instance_db_name}); "
            f"failover {pair.get_failover_type_display()}, failback {pair.get_failback_type_display()}, "
            f"wait {pair.failover_wait} s"
        ),
    )
    return pair
