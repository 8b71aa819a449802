"""The API's request and response shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Schema
from pydantic import Field

from hapairs.models import Appliance, Job
from hapairs.selectors import certificate_problem

# --- schemas ----------------------------------------------------------------------------
Name = Field(..., min_length=1, max_length=63)


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
    }


class CertificateTrustIn(Schema):
    fingerprint: str = Field(..., min_length=1, max_length=200)  # the one the appliance presents, as confirmed


class ApplianceIn(Schema):
    name: str = Name
    ip: str = Field(..., max_length=15)
    username: str = Field("admin", max_length=64)
    password: str = Field(..., min_length=1, max_length=256)
    contact_name: str = Field("", max_length=128)
    http_enabled: bool = False


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


class HAConfigureIn(Schema):
    secondary_name: str = Name
    secondary_ip: str = Field(..., max_length=15)
    secondary_password: str = Field(..., min_length=1, max_length=256)
    failover_type: SwitchTypeIn = "manual"
    failback_type: SwitchTypeIn = "manual"
    long_failover_wait: int = Field(10, ge=-(2**31), le=2**31)
    witnesses: list[str] = Witnesses
    witness_password: str = WitnessPassword
    witness_mode: WitnessModeIn = "safe"
    reason: str = Field("", max_length=500)


class HAUpdateIn(Schema):
    """Every field left out keeps the pair's value (an empty ``witness_password`` too;
    ``witnesses: []`` removes them)."""

    failover_type: SwitchTypeIn | None = None
    failback_type: SwitchTypeIn | None = None
    long_failover_wait: int | None = Field(None, ge=-(2**31), le=2**31)
    witnesses: list[str] | None = Field(None, max_length=64)
    witness_password: str = WitnessPassword
    witness_mode: WitnessModeIn | None = None
    reason: str = Field("", max_length=500)


class ReasonIn(Schema):
    reason: str = Field("", max_length=500)


class MaintenanceIn(Schema):
    on: bool
    reason: str = Field("", max_length=500)
