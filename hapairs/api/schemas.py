"""The API's request and response shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import BeforeValidator, ConfigDict, Field

from hapairs.models import Appliance, Job
from hapairs.selectors import certificate_problem


# --- schemas ----------------------------------------------------------------------------
class Input(Schema):
    """A request body: closed (a member the schema does not name is refused, not ignored) and
    strict (a string is not taken for a number, nor a number for a string or a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _whole(value: Any) -> Any:
    """JSON Schema's integer takes 10.0 as 10; a strict int would refuse it. Nothing else
    changes: a string or a boolean is still refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_whole)]


def bounded(ge: int, le: int) -> Any:
    """An Integer within bounds, the bounds inside the type: an optional one (``bounded(1, 9) |
    None``) then says them in its JSON schema as minimum / maximum."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_whole)]  # in this order: see the schema


FailoverWait = bounded(-(2**31), 2**31)
# hapairs.models.fleet.device_name_validator's rule, so that the schema says it
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
Name = Field(..., min_length=1, max_length=63, pattern=NAME_PATTERN)
# a dotted-quad IPv4 address, as the forms take it (no leading zeros, no CIDR, no IPv6)
IPV4_PATTERN = (
    r"^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"
)


def ipv4_field(description: str):
    return Field(..., min_length=7, max_length=15, pattern=IPV4_PATTERN, description=description,
                 json_schema_extra={"format": "ipv4"})  # fmt: skip


# why a disruptive action is taken: recorded with its job and events (something besides spaces)
Reason = Field(
    ..., min_length=1, max_length=500, pattern=r"\S", description="Why: recorded with the job and its events."
)


class ServiceOut(Schema):
    name: str
    version: str = ""
    admin_status: str = ""
    service_status: str = ""


class ApplianceOut(Schema):
    name: str
    device_type: str
    ip: str
    hm_ip: str
    vip: str | None
    version: str
    udi: str
    role: str
    reachability: str
    ha_state: str
    secondary_server: str | None
    services: list[ServiceOut]
    tls_fingerprint: str  # the pinned certificate ("" for one recorded before pinning, until its next poll)
    tls_presented: str  # a different certificate it presented, refused until an Admin trusts it
    certificate_problem: str  # why the portal refuses it now ("" when it does not)
    clock_offset_seconds: float | None  # its clock minus the portal's, as last polled (None: not measured)


def appliance_out(appliance: Appliance, secondary_name: str | None = None) -> dict:
    return {
        "name": appliance.name,
        "device_type": appliance.device_type,
        "ip": appliance.display_ip,
        "hm_ip": appliance.hm_ip,
        "vip": appliance.vip,
        "version": appliance.version,
        "udi": appliance.udi,
        "role": appliance.role,
        "reachability": appliance.reachability,
        "ha_state": appliance.ha_state,
        "secondary_server": secondary_name,
        "services": appliance.services or [],
        "tls_fingerprint": appliance.tls_fingerprint,
        "tls_presented": appliance.tls_presented,
        "certificate_problem": certificate_problem(appliance),
        "clock_offset_seconds": None if appliance.clock_offset_ms is None else appliance.clock_offset_ms / 1000,
    }


class CertificateTrustIn(Input):
    fingerprint: str = Field(..., min_length=1, max_length=200)  # the one the appliance presents, as confirmed


class ApplianceIn(Input):
    name: str = Name
    ip: str = ipv4_field("The appliance's Health Monitor IP address.")
    username: str = Field("admin", max_length=64)
    password: str = Field(..., min_length=1, max_length=256)
    contact_name: str = Field("", max_length=128)
    http_enabled: bool = False
    delete_service_assignments: bool = Field(
        False,
        description="Delete every service assignment a manager synchronized to it before (the Add screen's "
        "checkbox; the location history stays). If the appliance cannot, nothing is added.",
    )


class JobOut(Schema):
    id: int
    kind: str
    status: str
    progress: int
    step: str
    steps_done: list[str]
    error: str
    pair: str | None
    appliance: str | None
    requested_by: str | None
    reason: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def job_out(job: Job) -> dict:
    return {
        "id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "progress": job.progress,
        "step": job.step,
        "steps_done": job.steps_done,
        "error": job.error,
        "pair": str(job.pair) if job.pair_id else None,
        "appliance": job.appliance.name if job.appliance_id else None,
        "requested_by": job.requested_by.get_username() if job.requested_by_id else None,
        "reason": job.reason,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


SwitchTypeIn = Literal["manual", "automatic", "Manual", "Automatic", "MANUAL", "AUTOMATIC"]
WitnessModeIn = Literal["safe", "availability"]  # hapairs.choices.WitnessMode (the agents' modes)
# "IP:PORT" each (port 8002 if left out), checked by the rules; the bound only keeps bodies small
Witnesses = Field(default_factory=list, max_length=64)
WitnessPassword = Field("", max_length=256, description="Write-only: never returned.")


class HAConfigureIn(Input):
    secondary_name: str = Name
    secondary_ip: str = ipv4_field("The secondary's Health Monitor IP address.")
    secondary_password: str = Field(..., min_length=1, max_length=256)
    failover_type: SwitchTypeIn = "manual"
    failback_type: SwitchTypeIn = "manual"
    long_failover_wait: Integer = Field(10, ge=-(2**31), le=2**31)
    witnesses: list[str] = Witnesses
    witness_password: str = WitnessPassword
    witness_mode: WitnessModeIn = "safe"
    reason: str = Field("", max_length=500)


class HAUpdateIn(Input):
    """Every field left out keeps the pair's value (an empty ``witness_password`` too;
    ``witnesses: []`` removes them)."""

    failover_type: SwitchTypeIn | None = None
    failback_type: SwitchTypeIn | None = None
    long_failover_wait: FailoverWait | None = None
    witnesses: list[str] | None = Field(None, max_length=64)
    witness_password: str = WitnessPassword
    witness_mode: WitnessModeIn | None = None
    reason: str = Field("", max_length=500)


class ReasonIn(Input):
    reason: str = Reason


class ResetSyncIn(Input):
    reason: str = Reason
    empty_data: bool = Field(False, description="Delete the secondary's copy of the instance first.")
    confirm_empty: bool = Field(False, description="Confirms emptying (nothing the primary holds is lost).")


class RemoveOneSideIn(Input):
    reason: str = Reason
    confirm: bool = Field(..., description="The other node is down or will be rebuilt.")


class MaintenanceIn(Input):
    on: bool
    reason: str = Reason


class MaintenanceOut(Schema):
    maintenance: bool
    reason: str
