"""Appliances and their HA pairs: status, configure, switchover, failback, maintenance."""

from __future__ import annotations

from typing import Literal

from django.http import HttpResponse
from ninja import Query, Router, Status
from ninja.errors import HttpError

from hapairs import (
    roles,
    selectors,
    services,
)
from hapairs.api.core import answers, appliance_or_404, pair_of_or_404, require
from hapairs.api.schemas import (
    ApplianceIn,
    ApplianceOut,
    CertificateTrustIn,
    HAConfigureIn,
    HAUpdateIn,
    JobOut,
    MaintenanceIn,
    MaintenanceOut,
    ReasonIn,
    RemoveOneSideIn,
    ResetSyncIn,
    appliance_out,
    job_out,
)

router = Router()


# --- appliances -------------------------------------------------------------------------
@router.get("/appliances", response=answers({200: list[ApplianceOut]}, 400), summary="Mobility Services Engines")
def list_appliances(request, limit: int = Query(500, ge=1, le=2000), offset: int = Query(0, ge=0, le=10**9)):
    rows = selectors.appliance_rows(offset=offset, limit=limit)
    return [appliance_out(row.appliance, row.secondary_name) for row in rows]


@router.post(
    "/appliances", response=answers({201: ApplianceOut}, 400, 403, 409, 422), summary="Add Mobility Services Engine"
)
def add_appliance(request, payload: ApplianceIn):
    require(request, roles.ADMINISTER, "add appliances")
    appliance = services.appliance_add(
        name=payload.name,
        ip=payload.ip,
        username=payload.username,
        password=payload.password,
        contact_name=payload.contact_name,
        http_enabled=payload.http_enabled,
        delete_assignments=payload.delete_service_assignments,
        by=request.auth,
    )
    return Status(201, appliance_out(appliance))


@router.get("/appliances/{name}", response=answers({200: ApplianceOut}, 404))
def get_appliance(request, name: str):
    appliance = appliance_or_404(name)
    pair = selectors.pair_for(appliance)
    return appliance_out(
        appliance, pair.secondary.name if pair is not None and pair.primary_id == appliance.pk else None
    )


@router.delete(
    "/appliances/{name}",
    response=answers({204: None}, 400, 403, 404, 409),
    summary="Delete Mobility Services Engine",
)
def delete_appliance(request, name: str, reason: str = Query(..., min_length=1, max_length=500, pattern=r"\S")):
    """Refused (409) while it is in an HA pair, while a job runs on it, or while license files
    are on record for it. Its events stay in the log."""
    require(request, roles.ADMINISTER, "delete appliances")
    try:
        services.appliance_delete(appliance=appliance_or_404(name), by=request.auth, reason=reason)
    except services.ApplianceInUse as exc:
        raise HttpError(409, exc.message) from None
    return Status(204, None)


@router.post(
    "/appliances/{name}/certificate/trust",
    response=answers({200: ApplianceOut}, 400, 403, 404, 409, 422),
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
@router.get(
    "/appliances/{name}/ha", response=answers({200: dict}, 400, 404), summary="Current High Availability Status"
)
def get_ha(request, name: str, events: int = Query(50, ge=0, le=500)):
    pair = pair_of_or_404(appliance_or_404(name))
    return selectors.pair_status(pair, events_limit=events)


@router.post(
    "/appliances/{name}/ha",
    response=answers({202: JobOut}, 400, 403, 404, 409, 422),
    summary="Configure High Availability Parameters",
)
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


@router.patch(
    "/appliances/{name}/ha",
    response=answers({202: JobOut}, 400, 403, 404, 409, 422),
    summary="Update High Availability Parameters",
)
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


@router.delete(
    "/appliances/{name}/ha", response=answers({202: JobOut}, 400, 403, 404, 409, 422), summary="Delete the secondary"
)
def delete_ha(request, name: str, reason: str = Query("", max_length=500)):
    require(request, roles.OPERATE, "delete a secondary")
    pair = pair_of_or_404(appliance_or_404(name))
    return Status(202, job_out(services.ha_delete_secondary(pair=pair, by=request.auth, reason=reason)))


@router.post(
    "/appliances/{name}/ha/reset-sync",
    response=answers({202: JobOut}, 400, 403, 404, 409, 422),
    summary="Reset a synchronisation stuck at X % (the primary copies the instance again)",
)
def reset_sync(request, name: str, payload: ResetSyncIn):
    require(request, roles.OPERATE, "reset a synchronisation")
    pair = pair_of_or_404(appliance_or_404(name))
    job = services.ha_reset_sync(
        pair=pair,
        by=request.auth,
        reason=payload.reason,
        empty_data=payload.empty_data,
        confirm_empty=payload.confirm_empty,
    )
    return Status(202, job_out(job))


@router.post(
    "/appliances/{name}/ha/remove-from/{side}",
    response=answers({202: JobOut}, 400, 403, 404, 409, 422),
    summary="Remove the pairing from one node only, when the other cannot be reached",
)
def remove_one_side(request, name: str, side: Literal["primary", "secondary"], payload: RemoveOneSideIn):
    """``confirm``: the operator says the other node is down or will be rebuilt (it stands
    down when it comes back still paired). 409 while it answers, or while that would leave
    a node in charge half-paired."""
    require(request, roles.OPERATE, "remove a pairing from one node")
    pair = pair_of_or_404(appliance_or_404(name))
    job = services.ha_remove_one_side(
        pair=pair, side=side, confirmed=payload.confirm, by=request.auth, reason=payload.reason
    )
    return Status(202, job_out(job))


@router.get(
    "/appliances/{name}/ha/preflight",
    response=answers({200: dict}, 400, 404),
    summary="What a switchover or failback would do now",
)
def preflight(request, name: str, action: Literal["switchover", "failback"] = "switchover"):
    pair = pair_of_or_404(appliance_or_404(name))
    check = selectors.preflight(pair, action)
    return {
        "action": check.action,
        "allowed": check.allowed,
        "refusal": check.refusal,
        "checks": [{"label": c.label, "ok": c.ok, "detail": c.detail} for c in check.checks],
        "consequences": check.consequences,
        "after_cancel": check.after_cancel,
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


@router.post(
    "/appliances/{name}/ha/switchover",
    response=answers({202: JobOut}, 400, 403, 404, 409, 422),
    summary="Switchover (manual failover)",
)
def switchover(request, name: str, payload: ReasonIn):
    return _switch(request, name, payload, "switchover")


@router.post(
    "/appliances/{name}/ha/failback", response=answers({202: JobOut}, 400, 403, 404, 409, 422), summary="Failback"
)
def failback(request, name: str, payload: ReasonIn):
    return _switch(request, name, payload, "failback")


@router.post(
    "/appliances/{name}/ha/recover",
    response=answers({202: JobOut}, 400, 403, 404, 409, 422),
    summary="Recover a primary that lost its configuration",
)
def recover(request, name: str, payload: ReasonIn):
    require(request, roles.OPERATE, "recover a primary")
    pair = pair_of_or_404(appliance_or_404(name))
    try:
        job = services.ha_recover_primary(pair=pair, by=request.auth, reason=payload.reason)
    except services.ServiceError as exc:  # nothing to recover now
        raise HttpError(409, exc.message) from None
    return Status(202, job_out(job))


@router.post(
    "/appliances/{name}/ha/maintenance",
    response=answers({200: MaintenanceOut}, 400, 403, 404, 409, 422),
    summary="Maintenance mode on or off",
)
def maintenance(request, name: str, payload: MaintenanceIn):
    require(request, roles.OPERATE, "change maintenance mode")
    pair = pair_of_or_404(appliance_or_404(name))
    pair = services.ha_maintenance_set(pair=pair, on=payload.on, by=request.auth, reason=payload.reason)
    return {"maintenance": pair.maintenance, "reason": pair.maintenance_reason}


@router.post(
    "/appliances/{name}/services/start",
    response=answers({202: JobOut}, 400, 403, 404, 409, 422),
    summary="Start the appliance's services",
)
def start_services(request, name: str, payload: ReasonIn):
    require(request, roles.OPERATE, "start services")
    appliance = appliance_or_404(name)
    job = services.appliance_start_services(appliance=appliance, by=request.auth, reason=payload.reason)
    return Status(202, job_out(job))


def _agent_text(name: str, what: str) -> HttpResponse:
    appliance = appliance_or_404(name)
    text, status = selectors.appliance_output(appliance, what)
    if status != 200:
        raise HttpError(status, text)
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


@router.get(
    "/appliances/{name}/hainfo",
    response=answers({200: str}, 404, 502, 503),
    summary="The appliance's gethainfo output (text)",
)
def hainfo(request, name: str):
    return _agent_text(name, "hainfo")


@router.get(
    "/appliances/{name}/serverinfo",
    response=answers({200: str}, 404, 502, 503),
    summary="The appliance's getserverinfo output (text)",
)
def serverinfo(request, name: str):
    return _agent_text(name, "serverinfo")
