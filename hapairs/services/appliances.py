"""Appliances: add (discovering the agent), password and contact changes."""

from __future__ import annotations

import dataclasses
import ipaddress
import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from hapairs import agent_client, agent_replies
from hapairs.audit import audited
from hapairs.choices import ACTIVE_JOB_STATUSES, EventCode, Role
from hapairs.models import Appliance, HAPair, Job, License, LicenseFile, device_name_validator
from hapairs.services._common import ServiceError, actor_name, event_record, service_error_from
from nodeagent import protocol


# --- appliances -----------------------------------------------------------------------
@transaction.atomic
@audited("appliance.create")
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
    direct_ip: str | None = None,
    services: list[dict] | None = None,
    tls_fingerprint: str = "",
    by: AbstractBaseUser | None = None,
) -> Appliance:
    """Record an appliance whose facts are known (the add job discovers them from its agent).
    ``tls_fingerprint``: the certificate its agent answered over, pinned from now on."""
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
        direct_ip=direct_ip or None,
        services=services or [],
        tls_fingerprint=tls_fingerprint,
    )
    appliance.set_password(password)
    try:
        appliance.full_clean()
    except ValidationError as exc:
        raise service_error_from(exc) from None
    appliance.save()
    event_record(
        code=EventCode.APPLIANCE_ADDED,
        generated_by=actor_name(by),
        appliance=appliance,
        remarks=f"{appliance.get_device_type_display()} {appliance.version} at {appliance.hm_ip}"
        + (f"; TLS certificate pinned: {tls_fingerprint}" if tls_fingerprint else ""),
    )
    return appliance


@transaction.atomic
@audited("appliance.set_password", target="appliance")
def appliance_set_password(*, appliance: Appliance, password: str, by: AbstractBaseUser | None = None) -> None:
    if not password:
        raise ServiceError("Enter the appliance's password.", field="password")
    appliance.set_password(password)
    appliance.save(update_fields=["password_ciphertext", "updated_at"])
    event_record(code=EventCode.APPLIANCE_PASSWORD_CHANGED, generated_by=actor_name(by), appliance=appliance)


@transaction.atomic
@audited("appliance.update", target="appliance")
def appliance_update(*, appliance: Appliance, contact_name: str, by: AbstractBaseUser | None = None) -> Appliance:
    """Change what may change on a recorded appliance without asking its agent: the contact.

    Its identity and addresses (name, type, UDI, HM IP, VIP) are what its agent, and any pair
    it is in, were configured with: they change by removing the appliance and adding it again
    (the agent is asked then), never by editing the row."""
    locked = Appliance.objects.select_for_update().get(pk=appliance.pk)
    before = locked.contact_name
    if contact_name == before:
        return locked
    locked.contact_name = contact_name
    try:
        locked.clean_fields(exclude=[f.name for f in Appliance._meta.fields if f.name != "contact_name"])
    except ValidationError as exc:
        raise service_error_from(exc) from None
    locked.save(update_fields=["contact_name", "updated_at"])
    event_record(
        code=EventCode.APPLIANCE_CHANGED,
        generated_by=actor_name(by),
        appliance=locked,
        remarks=f"Contact name: “{before}” → “{contact_name}”.",
    )
    return locked


class ApplianceInUse(ServiceError):
    """The appliance cannot be deleted now: what holds it, and what to do first."""


@audited("appliance.delete", target="appliance")
def appliance_delete(*, appliance: Appliance, by: AbstractBaseUser | None = None, reason: str = "") -> None:
    """Delete an appliance the portal no longer manages. Refused while it is in an HA pair
    (delete the secondary first: HA is never torn down any other way), while a job runs on
    it, or while license files are on record for it (they are the license history; the
    database protects them). Its events stay in the log; one more says who deleted it and why."""
    with transaction.atomic():
        locked = Appliance.objects.select_for_update().filter(pk=appliance.pk).first()
        if locked is None:
            raise ApplianceInUse(f"{appliance.name} was deleted meanwhile.")
        refusals = []
        pair = HAPair.objects.filter(Q(primary=locked) | Q(secondary=locked)).select_related("primary").first()
        if pair is not None:
            refusals.append(
                f"{locked.name} is in the HA pair of {pair.primary.name}: delete the secondary from that pair first."
            )
        running = Job.objects.filter(appliance=locked, status__in=ACTIVE_JOB_STATUSES).order_by("pk").first()
        if running is not None:
            refusals.append(f"Job #{running.pk} ({running.get_kind_display()}) is still running on it.")
        files = LicenseFile.objects.filter(appliance=locked).count()
        installed = License.objects.filter(installed_on=locked).count()
        if files or installed:
            refusals.append(f"Its license history ({files} file(s), {installed} license(s) installed) stays on record.")
        if refusals:
            raise ApplianceInUse(f"{locked.name} cannot be deleted: " + " ".join(refusals))
        event_record(
            code=EventCode.APPLIANCE_DELETED,
            description=f"Mobility Services Engine {locked.name} deleted",
            generated_by=actor_name(by),
            remarks=f"{locked.device_type} at {locked.hm_ip}" + (f". Reason: {reason}" if reason else ""),
        )
        locked.delete()


# --- add: contact the agent first, save only what it confirmed ---------------------
def appliance_discover(*, ip: str, password: str, username: str = "admin"):
    """Ask the agent at ``ip`` who it is, and note the certificate it answered over (trust on
    first use: the second request is pinned to it). Raises ServiceError with the reason if it cannot."""
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        raise ServiceError(f"{ip!r} is not an IPv4 address.", field="ip") from None
    if not password:
        raise ServiceError("Enter the appliance's password.", field="password")
    target = agent_client.AgentTarget(name=ip, host=ip, password=password, port=settings.AGENT_PORT)
    try:
        answer = agent_client.call_answer(target, "GET", protocol.PATH_SERVER_INFO)
        server_info, seen = answer.data, answer.seen
        ha_info = agent_client.call(dataclasses.replace(target, fingerprint=seen), "GET", protocol.PATH_HA_INFO)
    except agent_client.AgentClockRefused as exc:  # a clock to set, not a password to fix
        raise ServiceError(exc.message, field="ip") from None
    except agent_client.AgentRejected as exc:
        if exc.status == 401:
            raise ServiceError(f"The appliance at {ip} refused the password.", field="password") from None
        raise ServiceError(f"The appliance at {ip} refused: {exc.message}", field="ip") from None
    except agent_client.AgentError as exc:
        raise ServiceError(f"Cannot reach the appliance at {ip}: {exc.message}", field="ip") from None
    merged = {**server_info, **{k: v for k, v in ha_info.items() if k in ("vip", "netmask", "vip_prefixlen")}}
    try:
        found = agent_replies.parse_server_info(merged, source=f"The appliance at {ip}")
    except agent_client.AgentBadReply as exc:
        raise ServiceError(exc.message, field="ip") from None
    return dataclasses.replace(found, tls_fingerprint=seen or "", clock_offset=answer.clock_offset)


def appliance_add(
    *,
    name: str,
    ip: str,
    password: str,
    username: str = "admin",
    contact_name: str = "",
    http_enabled: bool = False,
    delete_assignments: bool = False,
    by: AbstractBaseUser | None = None,
) -> Appliance:
    """Add Mobility Services Engine: check the input, contact the agent, record what it says.

    ``delete_assignments``: the screen's "Delete synchronized service assignments". The agent
    deletes every service assignment a manager synchronized to it before (its location history
    stays; services are assigned by hand again), before anything is recorded here: if it
    cannot, nothing is added."""
    try:  # an address before any query: PostgreSQL's inet column raises on junk
        ipaddress.IPv4Address(ip)
    except ValueError:
        raise ServiceError(f"{ip!r} is not an IPv4 address.", field="ip") from None
    errors = {}
    try:
        device_name_validator(name)
    except ValidationError as exc:
        errors["name"] = exc.messages
    if Appliance.objects.filter(name=name).exists():
        errors["name"] = [f"An appliance named {name} already exists."]
    if Appliance.objects.filter(hm_ip=ip).exists():
        errors["ip"] = [f"{ip} is already registered (as {Appliance.objects.get(hm_ip=ip).name})."]
    if errors:
        first = next(iter(errors))
        raise ServiceError(" ".join(m for ms in errors.values() for m in ms), field=first, errors=errors)
    found = appliance_discover(ip=ip, password=password, username=username)
    if found.hm_ip != ip:
        raise ServiceError(
            f"The appliance at {ip} says its Health Monitor IP is {found.hm_ip}; add it by that address.", field="ip"
        )
    deleted = None
    if delete_assignments:
        target = agent_client.AgentTarget(
            name=name, host=ip, password=password, port=settings.AGENT_PORT, fingerprint=found.tls_fingerprint or None
        )
        try:
            answer = agent_client.call(
                target, "DELETE", protocol.PATH_SERVICE_ASSIGNMENTS, idempotency_key=f"assignments-{uuid.uuid4()}"
            )
        except agent_client.AgentError as exc:
            raise ServiceError(
                f"The appliance at {ip} could not delete its synchronized service assignments: "
                f"{exc.message.rstrip('.')}. Nothing was added.",
                field="delete_assignments",
            ) from None
        deleted = answer.get("deleted") if isinstance(answer, dict) else None
        if not isinstance(deleted, int) or isinstance(deleted, bool) or deleted < 0:
            raise ServiceError(
                f"The appliance at {ip} answered the deletion of its service assignments with {str(answer)[:200]!r}, "
                "not a count. "
                "Nothing was added.",
                field="delete_assignments",
            )
    appliance = appliance_create(
        name=name,
        device_type=found.device_type,
        hm_ip=ip,
        version=found.version,
        password=password,
        username=username,
        role=found.role,
        vip=found.vip,
        vip_prefixlen=found.vip_prefixlen,
        udi=found.udi,
        contact_name=contact_name,
        http_enabled=http_enabled,
        direct_ip=found.direct_ip,
        services=agent_replies.services_as_rows(found.services),
        tls_fingerprint=found.tls_fingerprint,
        by=by,
    )
    if deleted is not None:
        event_record(
            code=EventCode.APPLIANCE_CHANGED,
            description=f"Synchronized service assignments deleted on {name}",
            generated_by=actor_name(by),
            appliance=appliance,
            remarks=f"{deleted} deleted as it was added: its location history is kept; assign its services by hand.",
        )
    return appliance
