"""HA pairs: record, configure, update (``services.operations``: switch over, fail back, …)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from hapairs import agent_client, agent_replies, licenses, rules, selectors
from hapairs.audit import audit_made, audit_record, changed_only, snapshot
from hapairs.choices import MAX_PRIMARIES_PER_SECONDARY, EventCode, JobKind, SwitchType, WitnessMode
from hapairs.models import FAILOVER_WAIT_DEFAULT, Appliance, HAPair
from hapairs.services._common import ServiceError, actor_name, event_record, pair_lock, rows_lock, service_error_from
from hapairs.services.appliances import appliance_create, appliance_discover
from hapairs.services.jobs import job_enqueue
from hapairs.services.licenses import license_upload, license_verify
from hapairs.services.witnesses import (
    WITNESS_FIELDS,
    refusal,
    witness_change,
    witness_check,
    witness_remarks,
    witness_set,
)
from nodeagent import protocol


# --- HA pairs -------------------------------------------------------------------------
def ha_pair_create(
    *,
    primary: Appliance,
    secondary: Appliance,
    failover_type: str = SwitchType.MANUAL,
    failback_type: str = SwitchType.MANUAL,
    failover_wait: int = 10,
    direct_connect: bool = False,
    witnesses: Sequence[str] = (),
    witness_password: str = "",
    witness_mode: str = WitnessMode.SAFE,
    by: AbstractBaseUser | None = None,
) -> HAPair:
    """Record a new pair after every rule of spec §2 passes, and its witnesses' (if any).

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
                witness=(witnesses, witness_password, witness_mode),
                by=by,
            )
    except IntegrityError:
        raise ServiceError(
            f"{secondary.name} changed while this pairing was being saved (another pairing took its "
            f"place); it can back at most {MAX_PRIMARIES_PER_SECONDARY} primaries. Reload and try again.",
            field=rules.F_SECONDARY,
            conflict=True,
        ) from None


def _ha_pair_create_locked(
    *, primary_id, secondary_id, failover_type, failback_type, failover_wait, direct_connect, witness, by
) -> HAPair:
    locked = {
        a.pk: a for a in Appliance.objects.select_for_update().filter(pk__in=[primary_id, secondary_id]).order_by("pk")
    }
    primary, secondary = locked[primary_id], locked[secondary_id]
    taken = _role_taken(primary, secondary)
    if taken is not None:
        raise taken
    backed = _backed_by(secondary)
    violations = _violations(primary, selectors.node_facts(secondary), backed, failover_wait)
    if violations:
        error = rules.PairingError(violations)
        conflict = all(v.rule in rules.STATE_RULES for v in violations)
        raise ServiceError(str(error), field=violations[0].field, errors=error.by_field(), conflict=conflict)
    witnesses, witness_password, witness_mode = witness
    addresses, witness_errors = witness_check(
        primary=primary,
        secondary_name=secondary.name,
        secondary_ip=secondary.hm_ip,
        witnesses=witnesses,
        password=witness_password,
        mode=witness_mode,
    )
    if witness_errors:
        raise refusal(witness_errors)
    used = {pair.slot for pair in backed}
    slot = min(s for s in range(1, MAX_PRIMARIES_PER_SECONDARY + 1) if s not in used)
    pair = HAPair(
        primary=primary,
        secondary=secondary,
        failover_type=failover_type,
        failback_type=failback_type,
        failover_wait=failover_wait,
        direct_connect=direct_connect,
        created_by=by,
    )
    witness_set(pair, addresses=addresses, password=witness_password, mode=witness_mode)
    pair.assign_slot(slot)
    try:
        pair.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise service_error_from(exc) from None
    pair.save()
    event_record(
        code=EventCode.PAIR_RECORDED,
        generated_by=actor_name(by),
        pair=pair,
        remarks=(
            f"{primary.name} backed by {secondary.name} ({pair.instance_db_name}); "
            f"failover {pair.get_failover_type_display()}, failback {pair.get_failback_type_display()}, "
            f"wait {pair.failover_wait} s; {witness_remarks(addresses, witness_mode)}"
        ),
    )
    return pair


def _role_taken(primary: Appliance, secondary: Appliance | None) -> ServiceError | None:
    """A role this pairing would give is held in another pair already."""
    if HAPair.objects.filter(primary=primary).exists():
        return ServiceError(f"{primary.name} is already paired with a secondary.", field="__all__", conflict=True)
    if HAPair.objects.filter(secondary=primary).exists():
        return ServiceError(f"{primary.name} is a secondary in another pair; it cannot be a primary.", conflict=True)
    if secondary is not None and HAPair.objects.filter(primary=secondary).exists():
        return ServiceError(
            f"{secondary.name} is the primary of another pair; it cannot be a secondary.",
            field=rules.F_SECONDARY,
            conflict=True,
        )
    return None


def _backed_by(secondary: Appliance | None) -> list[HAPair]:
    """The pairs a secondary already backs (none for one not recorded yet)."""
    if secondary is None:
        return []
    return list(HAPair.objects.filter(secondary=secondary).select_related("primary").order_by("slot"))


def _violations(primary: Appliance, secondary: rules.NodeFacts, backed: list[HAPair], failover_wait: int):
    return rules.validate_pairing(
        selectors.node_facts(primary),
        secondary,
        already_backed=[selectors.node_facts(pair.primary) for pair in backed],
        failover_wait=failover_wait,
    )


# --- configure (the "Configure High Availability Parameters" save) -----------------
RULE_FIELDS = {rules.F_LICENSE: "activation_license", rules.F_PRIMARY: "__all__"}  # a rule's field → the form's


@dataclass
class PairingCheck:
    """Everything a Configure would be refused for, found before anything is written or sent
    to the agents, with each refusal under the configure form's field it belongs next to."""

    errors: dict[str, list[str]] = field(default_factory=dict)
    rule_refusals: int = 0  # refusals of the request itself (not ``conflict`` ones): ServiceError.conflict
    facts: dict[str, str] = field(  # what is known of the secondary, for the screen
        default_factory=lambda: {"udi": "", "activation": "", "device_type": "", "version": ""}
    )
    secondary: Appliance | None = None  # the secondary, when the portal has recorded it
    discovered: agent_replies.DiscoveredNode | None = None  # else what it said about itself
    witnesses: list[str] = field(default_factory=list)  # as "IP:PORT", the port filled in

    def refuse(self, where: str, message: str, *, conflict: bool = False) -> None:
        self.errors.setdefault(where, []).append(message)
        self.rule_refusals += not conflict

    def error(self) -> ServiceError:
        first = next(iter(self.errors))
        message = " ".join(m for ms in self.errors.values() for m in ms)
        return ServiceError(message, field=first, errors=self.errors, conflict=not self.rule_refusals)


def ha_configure_check(
    *,
    primary: Appliance,
    secondary_name: str,
    secondary_ip: str,
    secondary_password: str = "",
    failover_wait: int = FAILOVER_WAIT_DEFAULT,
    activation_license: tuple[str, bytes] | None = None,
    delete_activation_license: bool = False,
    witnesses: Sequence[str] = (),
    witness_password: str = "",
    witness_mode: str = WitnessMode.SAFE,
) -> PairingCheck:
    """The preconditions of pairing ``primary`` with the named secondary: the configure
    screen's live check and ``ha_configure`` both ask this. Writes nothing; a secondary the
    portal does not know yet is asked who it is (a read-only call to its agent). The
    witnesses' refusals come beside the pairing's, never instead of them."""
    check = _secondary_check(
        primary,
        secondary_name,
        secondary_ip,
        secondary_password,
        failover_wait,
        activation_license,
        delete_activation_license,
    )
    check.witnesses, witness_errors = witness_check(
        primary=primary,
        secondary_name=secondary_name,
        secondary_ip=secondary_ip,
        witnesses=witnesses,
        password=witness_password,
        mode=witness_mode,
    )
    for where, problems in witness_errors.items():
        for problem in problems:
            check.refuse(where, problem)
    return check


def _secondary_check(
    primary: Appliance,
    name: str,
    ip: str,
    secondary_password: str,
    failover_wait: int,
    activation_license: tuple[str, bytes] | None,
    delete_activation_license: bool,
) -> PairingCheck:
    check = PairingCheck()
    try:  # an address before any query: PostgreSQL's inet column raises on junk
        ipaddress.IPv4Address(ip)
    except ValueError:
        check.refuse("secondary_ip", f"{ip!r} is not an IPv4 address.")
        return check
    if delete_activation_license:
        check.refuse(
            "delete_activation_license",
            "A virtual secondary must be activated to take part in high "
            "availability: its activation license cannot be deleted while pairing it.",
        )
    same = rules.distinct_violation(primary.name, primary.hm_ip, name, ip)
    if same is not None:
        check.refuse(same.field, same.message)
        return check
    secondary = Appliance.objects.filter(name=name).first()
    if secondary is not None:
        if secondary.hm_ip != ip:
            check.refuse("secondary_ip", f"{name}'s Health Monitor IP is {secondary.hm_ip}, not {ip}.")
        node = selectors.node_facts(secondary)
        check.secondary = secondary
        check.facts.update(
            udi=secondary.udi, device_type=secondary.get_device_type_display(), version=secondary.version
        )
    else:
        other = Appliance.objects.filter(hm_ip=ip).first()
        if other is not None:
            check.refuse("secondary_ip", f"{ip} is registered as {other.name}, not {name}.")
            return check
        if not secondary_password:
            check.refuse("secondary_password", f"Enter {name}'s password: the portal must contact it to pair it.")
            return check
        try:
            found = appliance_discover(ip=ip, password=secondary_password)
        except ServiceError as exc:
            check.refuse("secondary_password" if exc.field == "password" else "secondary_ip", exc.message)
            return check
        node = rules.NodeFacts(
            name=name,
            device_type=found.device_type,
            version=found.version,
            hm_ip=ip,
            vip=None,
            vip_prefixlen=None,
            activated=False,
            role=found.role,
        )
        secondary = Appliance(name=name, device_type=found.device_type, hm_ip=ip, udi=found.udi)  # not saved
        check.discovered = found
        check.facts.update(
            udi=found.udi,
            device_type=rules.DEVICE_LABELS.get(found.device_type, found.device_type),
            version=found.version,
        )
    if activation_license is not None and not check.errors:
        try:
            verified = license_verify(appliance=secondary, data=activation_license[1])
        except ServiceError as exc:
            check.refuse("activation_license", exc.message)
        else:
            if any(line.feature == licenses.ACTIVATION_FEATURE for line in verified.lines):
                node = rules.NodeFacts(**{**node.__dict__, "activated": True})
            else:
                check.refuse(
                    "activation_license",
                    f"This file holds no {licenses.ACTIVATION_FEATURE} license "
                    f"({licenses.ACTIVATION_SKU}); it cannot activate {name}.",
                )
    if node.is_virtual:
        check.facts["activation"] = "Activated" if node.activated else "Not Activated"
    if check.errors:
        return check
    clocks = _clocks_refusal(primary, name, check)
    if clocks:
        check.refuse("__all__", clocks, conflict=True)
        return check
    taken = _role_taken(primary, check.secondary)
    if taken is not None:
        check.refuse(taken.field, taken.message, conflict=True)
        return check
    for violation in _violations(primary, node, _backed_by(check.secondary), failover_wait):
        where = RULE_FIELDS.get(violation.field, violation.field)
        check.refuse(where, violation.message, conflict=violation.rule in rules.STATE_RULES)
    return check


# two nodes further apart than this refuse each other's signed requests soon (the window is
# 300 s; a minute is left for the clocks to drift while the pair synchronises)
PAIRING_CLOCKS_APART_MAX = protocol.DEFAULT_FRESHNESS_SECONDS - 60


def _clocks_refusal(primary: Appliance, name: str, check: PairingCheck) -> str:
    """The two nodes' clocks, as the portal last measured them, too far apart to pair ("" fine,
    or not measured): they would refuse each other's replication and commands, and the
    configure job would wait out its synchronisation and fail without saying why."""
    if check.secondary is not None and check.secondary.clock_offset_ms is not None:
        secondary = check.secondary.clock_offset_ms / 1000
    elif check.discovered is not None and check.discovered.clock_offset is not None:
        secondary = check.discovered.clock_offset
    else:
        return ""
    if primary.clock_offset_ms is None:
        return ""
    apart = abs(primary.clock_offset_ms / 1000 - secondary)
    if apart <= PAIRING_CLOCKS_APART_MAX:
        return ""
    return (
        f"{primary.name}'s and {name}'s clocks are {apart:.0f} s apart ({primary.name}: "
        f"{agent_client.describe_offset(primary.clock_offset_ms / 1000)} the portal's; {name}: "
        f"{agent_client.describe_offset(secondary)} it). Appliances refuse each other's signed requests beyond "
        f"{protocol.DEFAULT_FRESHNESS_SECONDS} s, so the pair would never synchronise. Set both to the same NTP "
        "servers, then pair them."
    )


def ha_configure(
    *,
    primary: Appliance,
    secondary_name: str,
    secondary_ip: str,
    secondary_password: str,
    failover_type: str = SwitchType.MANUAL,
    failback_type: str = SwitchType.MANUAL,
    failover_wait: int = 10,
    activation_license: tuple[str, bytes] | None = None,
    witnesses: Sequence[str] = (),
    witness_password: str = "",
    witness_mode: str = WitnessMode.SAFE,
    by: AbstractBaseUser | None = None,
    reason: str = "",
):
    """Pair ``primary`` with the named secondary and queue the job that configures both agents
    (with the witnesses given here, if any: "IP:PORT", the password they run with, the mode).

    A secondary the portal does not know yet is contacted first (as Add Mobility Services
    Engine would) and recorded in the same transaction as the pair and the job, so a
    refusal leaves nothing behind. ``activation_license`` (file name, bytes) is "Activate
    Secondary with License": verified and stored in that same transaction, so a VA
    secondary counts as activated for the rules; the job installs it first.

    Refused, before anything is written, for whatever ``ha_configure_check`` finds.
    """
    check = ha_configure_check(
        primary=primary,
        secondary_name=secondary_name,
        secondary_ip=secondary_ip,
        secondary_password=secondary_password,
        failover_wait=failover_wait,
        activation_license=activation_license,
        witnesses=witnesses,
        witness_password=witness_password,
        witness_mode=witness_mode,
    )
    if check.errors:
        raise check.error()
    secondary, discovered = check.secondary, check.discovered
    with transaction.atomic():
        rows_lock(primary, secondary)  # in pk order, before the writes below lock either
        if discovered is not None:
            secondary = appliance_create(
                name=secondary_name,
                device_type=discovered.device_type,
                hm_ip=secondary_ip,
                version=discovered.version,
                password=secondary_password,
                role=discovered.role,
                udi=discovered.udi,
                # its direct-connect address: without it the primary is never told of the
                # link, and the secondary, told the primary's, reports the path down forever
                direct_ip=discovered.direct_ip,
                services=agent_replies.services_as_rows(discovered.services),
                tls_fingerprint=discovered.tls_fingerprint,
                by=by,
            )
        elif secondary_password and secondary_password != secondary.get_password():
            secondary.set_password(secondary_password)
            secondary.save(update_fields=["password_ciphertext", "updated_at"])
        if activation_license is not None:
            filename, data = activation_license
            try:
                license_upload(appliance=secondary, filename=filename, data=data, by=by, reason=reason)
            except ServiceError as exc:
                raise ServiceError(exc.message, field="activation_license") from None
        pair = ha_pair_create(
            primary=primary,
            secondary=secondary,
            failover_type=failover_type,
            failback_type=failback_type,
            failover_wait=failover_wait,
            witnesses=witnesses,
            witness_password=witness_password,
            witness_mode=witness_mode,
            by=by,
        )
        job = job_enqueue(kind=JobKind.CONFIGURE_HA, pair=pair, by=by, reason=reason)
        # in this transaction (not by @audited: the checks above talk to agents, outside it)
        audit_record(
            "pair.configure", target=pair, before=None, after=audit_made(snapshot(pair), job), reason=reason, by=by
        )
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
    witnesses: Sequence[str] | None = None,
    witness_password: str = "",
    witness_mode: str | None = None,
    by: AbstractBaseUser | None = None,
    reason: str = "",
):
    """Change the pair's parameters; the job pushes them to both agents ("Configuration updated").

    Witnesses (``None``: keep them; an empty password keeps the stored one) are the portal's
    configuration: written at once, in the job's transaction (the job's parameters never hold
    a secret), and sent by the job; the status screen shows what the agents report of them."""
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
    witness = witness_change(pair=pair, witnesses=witnesses, password=witness_password, mode=witness_mode)
    if not changes and not witness.changed:
        raise ServiceError("Nothing to change: these are the pair's current parameters.")
    remarks = " ".join(
        [
            *(
                CHANGE_REMARKS[name].format(value.upper() if isinstance(value, str) else value)
                for name, value in changes.items()
            ),
            *witness.remarks,
        ]
    )
    params = {"changes": changes, "remarks": remarks, "witnesses": witness.changed}
    with transaction.atomic():
        locked = pair_lock(pair)
        old = snapshot(locked)
        if witness.changed:
            witness_set(locked, addresses=witness.addresses, password=witness.password, mode=witness.mode)
            locked.save(update_fields=[*WITNESS_FIELDS, "updated_at"])
        job = job_enqueue(kind=JobKind.UPDATE_HA, pair=pair, params=params, by=by, reason=reason)
        # in this transaction (the witness checks above talk to the network, outside it); the
        # parameter changes themselves are the job's, to the agents: they are its params
        before, after = changed_only(old, snapshot(locked))
        after = audit_made({**(after or {}), "requested": changes}, job)
        audit_record("pair.update", target=locked, before=before, after=after, reason=reason, by=by)
    return job
