"""Appliances and their HA pairs: status, configure, switchover, failback, maintenance."""

from __future__ import annotations

from typing import Literal

from django.http import HttpResponse
from ninja import Router, Status
from ninja.errors import HttpError

from hapairs import (
    roles,
    selectors,
    services,
)
from hapairs.api.core import appliance_or_404, pair_of_or_404, require
from hapairs.api.schemas import (
    ApplianceIn,
    ApplianceOut,
    CertificateTrustIn,
    HAConfigureIn,
    HAUpdateIn,
    JobOut,
    MaintenanceIn,
    ReasonIn,
    appliance_out,
    job_out,
)

router = Router()


# --- appliances -------------------------------------------------------------------------
@router.get("/appliances", response=list[ApplianceOut], summary="Mobility Services Engines")
def list_appliances(request, limit: int = 500, offset: int = 0):
    limit = max(1, min(limit, 2000))
    rows = selectors.appliance_rows(offset=max(0, offset), limit=limit)
    return [appliance_out(row.appliance, row.secondary_name) for row in rows]


@router.post("/appliances", response={201: ApplianceOut}, summary="Add Mobility Services Engine")
def add_appliance(request, payload: ApplianceIn):
    require(request, roles.ADMINISTER, "add appliances")
    appliance = services.appliance_add(
        name=payload.name,
        ip=payload.ip,
        username=payload.username,
        password=payload.password,
        contact_name=payload.contact_name,
        http_enabled=payload.http_enabled,
        by=request.auth,
    )
    return Status(201, appliance_out(appliance))


@router.get("/appliances/{name}", response=ApplianceOut)
def get_appliance(request, name: str):
    appliance = appliance_or_404(name)
    pair = selectors.pair_for(appliance)
    return appliance_out(
        appliance, pair.secondary.name if pair is not None and pair.primary_id == appliance.pk else None
    )


@router.post(
    "/appliances/{name}/certificate/trust",
    response=ApplianceOut,
    summary="Trust the new TLS certificate the appliance presents",
)
def trust_certificate(request, name: str, payload: CertificateTrustIn):
    """The agent is asked now and must present exactly ``fingerprint`` (else 400, nothing changed)."""
    require(request, roles.ADMINISTER, "trust an appliance's new TLS certificate")
    appliance = appliance_or_404(name)
    appliance = services.appliance_certificate_trust(
        appliance=appliance, fingerprint=payload.fingerprint, by=request.auth
    )
    return appliance_out(appliance)


# --- HA ----------------------------------------------------------------------------------
@router.get("/appliances/{name}/ha", summary="Current High Availability Status")
def get_ha(request, name: str, events: int = 50):
    pair = pair_of_or_404(appliance_or_404(name))
    return selectors.pair_status(pair, events_limit=max(0, min(events, 500)))


@router.post("/appliances/{name}/ha", response={202: JobOut}, summary="Configure High Availability Parameters")
def configure_ha(request, name: str, payload: HAConfigureIn):
    require(request, roles.OPERATE, "configure high availability")
    primary = appliance_or_404(name)
    _pair, job = services.ha_configure(
        primary=primary,
        secondary_name=payload.secondary_name,
        secondary_ip=payload.secondary_ip,
        secondary_password=payload.secondary_password,
        failover_type=payload.failover_type.lower(),
        failback_type=payload.failback_type.lower(),
        failover_wait=payload.long_failover_wait,
        witnesses=payload.witnesses,
        witness_password=payload.witness_password,
        witness_mode=payload.witness_mode,
        by=request.auth,
        reason=payload.reason,
    )
    return Status(202, job_out(job))


@router.patch("/appliances/{name}/ha", response={202: JobOut}, summary="Update High Availability Parameters")
def update_ha(request, name: str, payload: HAUpdateIn):
    require(request, roles.OPERATE, "change high availability parameters")
    pair = pair_of_or_404(appliance_or_404(name))
    job = services.ha_update(
        pair=pair,
        failover_type=(payload.failover_type or pair.failover_type).lower(),
        failback_type=(payload.failback_type or pair.failback_type).lower(),
        failover_wait=payload.long_failover_wait if payload.long_failover_wait is not None else pair.failover_wait,
        witnesses=payload.witnesses,
        witness_password=payload.witness_password,
        witness_mode=payload.witness_mode,
        by=request.auth,
        reason=payload.reason,
    )
    return Status(202, job_out(job))


@router.delete("/appliances/{name}/ha", response={202: JobOut}, summary="Delete the secondary")
def delete_ha(request, name: str, reason: str = ""):
    require(request, roles.OPERATE, "delete a secondary")
    pair = pair_of_or_404(appliance_or_404(name))
    return Status(202, job_out(services.ha_delete_secondary(pair=pair, by=request.auth, reason=reason[:500])))


@router.get("/appliances/{name}/ha/preflight", summary="What a switchover or failback would do now")
def preflight(request, name: str, action: Literal["switchover", "failback"] = "switchover"):
    pair = pair_of_or_404(appliance_or_404(name))
    check = selectors.preflight(pair, action)
    return {
        "action": check.action,
        "allowed": check.allowed,
        "refusal": check.refusal,
        "checks": [{"label": c.label, "ok": c.ok, "detail": c.detail} for c in check.checks],
        "consequences": check.consequences,
    }


def _switch(request, name: str, payload: ReasonIn, action: str):
    require(request, roles.OPERATE, f"run a {action}")
    pair = pair_of_or_404(appliance_or_404(name))
    service = services.ha_switchover if action == "switchover" else services.ha_failback
    try:
        job = service(pair=pair, by=request.auth, reason=payload.reason)
    except services.ServiceError as exc:  # a refused pre-flight or a running job: "not now"
        raise HttpError(409, exc.message) from None
    return Status(202, job_out(job))


@router.post("/appliances/{name}/ha/switchover", response={202: JobOut}, summary="Switchover (manual failover)")
def switchover(request, name: str, payload: ReasonIn | None = None):
    return _switch(request, name, payload or ReasonIn(), "switchover")


@router.post("/appliances/{name}/ha/failback", response={202: JobOut}, summary="Failback")
def failback(request, name: str, payload: ReasonIn | None = None):
    return _switch(request, name, payload or ReasonIn(), "failback")


@router.post(
    "/appliances/{name}/ha/recover", response={202: JobOut}, summary="Recover a primary that lost its configuration"
)
def recover(request, name: str, payload: ReasonIn | None = None):
    require(request, roles.OPERATE, "recover a primary")
    pair = pair_of_or_404(appliance_or_404(name))
    try:
        job = services.ha_recover_primary(pair=pair, by=request.auth, reason=(payload or ReasonIn()).reason)
    except services.ServiceError as exc:  # nothing to recover now
        raise HttpError(409, exc.message) from None
    return Status(202, job_out(job))


@router.post("/appliances/{name}/ha/maintenance", summary="Maintenance mode on or off")
def maintenance(request, name: str, payload: MaintenanceIn):
    require(request, roles.OPERATE, "change maintenance mode")
    pair = pair_of_or_404(appliance_or_404(name))
    pair = services.ha_maintenance_set(pair=pair, on=payload.on, by=request.auth, reason=payload.reason)
    return {"maintenance": pair.maintenance, "reason": pair.maintenance_reason}


@router.post("/appliances/{name}/services/start", response={202: JobOut}, summary="Start the appliance's services")
def start_services(request, name: str, payload: ReasonIn | None = None):
    require(request, roles.OPERATE, "start services")
    appliance = appliance_or_404(name)
    job = services.appliance_start_services(appliance=appliance, by=request.auth, reason=(payload or ReasonIn()).reason)
    return Status(202, job_out(job))


def _agent_text(name: str, what: str) -> HttpResponse:
    appliance = appliance_or_404(name)
    text, status = selectors.appliance_output(appliance, what)
    if status != 200:
        raise HttpError(status, text)
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


@router.get("/appliances/{name}/hainfo", summary="The appliance's gethainfo output (text)")
def hainfo(request, name: str):
    return _agent_text(name, "hainfo")


@router.get("/appliances/{name}/serverinfo", summary="The appliance's getserverinfo output (text)")
def serverinfo(request, name: str):
    return _agent_text(name, "serverinfo")
