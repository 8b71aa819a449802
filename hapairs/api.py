"""REST API under /api/v1 (django-ninja; OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs).

Authentication: ``Authorization: Bearer TOKEN`` (``manage.py api_token USER``) or the
browser session (with CSRF). The same roles as the UI: a Monitor reads, an Operator
also pairs and switches, an Admin also adds appliances. Errors are always
``{"detail": "<sentence>"}`` (plus ``errors`` by field where there are several), with
400 for refused input, 401/403 for who you are, 404, 409 for "not now", never 500.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from datetime import date, datetime
from typing import Literal

from django.contrib.auth.decorators import login_required
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI, Path, Schema, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import HttpBearer, django_auth
from pydantic import Field

from hapairs import agent_client, agent_replies, dispatch, licences, roles, selectors, services
from hapairs.crypto import SecretUnreadable
from hapairs.models import Appliance, HAPair, Job, LicenseFile
from nodeagent import protocol

log = logging.getLogger(__name__)


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str):
        user = services.api_token_user(token)
        if user is not None:
            request.user = user
        return user


api = NinjaAPI(
    title="mseportal API",
    version="1",
    urls_namespace="api-v1",
    auth=[BearerToken(), django_auth],
    docs_decorator=login_required,
    description=__doc__,
)


# --- errors: one shape, the right status, never a 500 for bad input -----------------
@api.exception_handler(services.JobConflict)
def _job_conflict(request, exc: services.JobConflict):
    return api.create_response(request, {"detail": exc.message}, status=409)


@api.exception_handler(services.ServiceError)
def _service_error(request, exc: services.ServiceError):
    return api.create_response(request, {"detail": exc.message, "errors": exc.errors}, status=400)


@api.exception_handler(NinjaValidationError)
def _validation_error(request, exc: NinjaValidationError):
    problems = []
    for error in exc.errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "payload"))
        problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", "invalid"))
    return api.create_response(request, {"detail": "Invalid request. " + "; ".join(problems)}, status=400)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    return api.create_response(
        request, {"detail": "Authentication required: send 'Authorization: Bearer TOKEN' or log in."}, status=401
    )


def require(request: HttpRequest, permission: str, what: str) -> None:
    refusal = roles.refusal(request.auth, permission, what)
    if refusal:
        raise HttpError(403, refusal)


def appliance_or_404(name: str) -> Appliance:
    appliance = Appliance.objects.filter(name=name).first()
    if appliance is None:
        raise HttpError(404, f"No appliance named {name!r}.")
    return appliance


def pair_of_or_404(appliance: Appliance) -> HAPair:
    pair = selectors.pair_for(appliance)
    if pair is None:
        raise HttpError(404, f"{appliance.name} is not part of an HA pair.")
    return pair


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
    }


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


class HAConfigureIn(Schema):
    secondary_name: str = Name
    secondary_ip: str = Field(..., max_length=15)
    secondary_password: str = Field(..., min_length=1, max_length=256)
    failover_type: SwitchTypeIn = "manual"
    failback_type: SwitchTypeIn = "manual"
    long_failover_wait: int = Field(10, ge=-(2**31), le=2**31)
    reason: str = Field("", max_length=500)


class HAUpdateIn(Schema):
    failover_type: SwitchTypeIn | None = None
    failback_type: SwitchTypeIn | None = None
    long_failover_wait: int | None = Field(None, ge=-(2**31), le=2**31)
    reason: str = Field("", max_length=500)


class ReasonIn(Schema):
    reason: str = Field("", max_length=500)


class MaintenanceIn(Schema):
    on: bool
    reason: str = Field("", max_length=500)


# --- appliances -------------------------------------------------------------------------
@api.get("/appliances", response=list[ApplianceOut], summary="Mobility Services Engines")
def list_appliances(request, limit: int = 500, offset: int = 0):
    limit = max(1, min(limit, 2000))
    rows = selectors.appliance_rows(offset=max(0, offset), limit=limit)
    return [appliance_out(row.appliance, row.secondary_name) for row in rows]


@api.post("/appliances", response={201: ApplianceOut}, summary="Add Mobility Services Engine")
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


@api.get("/appliances/{name}", response=ApplianceOut)
def get_appliance(request, name: str):
    appliance = appliance_or_404(name)
    pair = selectors.pair_for(appliance)
    return appliance_out(appliance, pair.secondary.name if pair is not None and pair.primary_id == appliance.pk else None)


# --- HA ----------------------------------------------------------------------------------
@api.get("/appliances/{name}/ha", summary="Current High Availability Status")
def get_ha(request, name: str, events: int = 50):
    pair = pair_of_or_404(appliance_or_404(name))
    return selectors.pair_status(pair, events_limit=max(0, min(events, 500)))


@api.post("/appliances/{name}/ha", response={202: JobOut}, summary="Configure High Availability Parameters")
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
        by=request.auth,
        reason=payload.reason,
    )
    return Status(202, job_out(job))


@api.patch("/appliances/{name}/ha", response={202: JobOut}, summary="Update High Availability Parameters")
def update_ha(request, name: str, payload: HAUpdateIn):
    require(request, roles.OPERATE, "change high availability parameters")
    pair = pair_of_or_404(appliance_or_404(name))
    job = services.ha_update(
        pair=pair,
        failover_type=(payload.failover_type or pair.failover_type).lower(),
        failback_type=(payload.failback_type or pair.failback_type).lower(),
        failover_wait=payload.long_failover_wait if payload.long_failover_wait is not None else pair.failover_wait,
        by=request.auth,
        reason=payload.reason,
    )
    return Status(202, job_out(job))


@api.delete("/appliances/{name}/ha", response={202: JobOut}, summary="Delete the secondary")
def delete_ha(request, name: str, reason: str = ""):
    require(request, roles.OPERATE, "delete a secondary")
    pair = pair_of_or_404(appliance_or_404(name))
    return Status(202, job_out(services.ha_delete_secondary(pair=pair, by=request.auth, reason=reason[:500])))


@api.get("/appliances/{name}/ha/preflight", summary="What a switchover or failback would do now")
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


@api.post("/appliances/{name}/ha/switchover", response={202: JobOut}, summary="Switchover (manual failover)")
def switchover(request, name: str, payload: ReasonIn | None = None):
    return _switch(request, name, payload or ReasonIn(), "switchover")


@api.post("/appliances/{name}/ha/failback", response={202: JobOut}, summary="Failback")
def failback(request, name: str, payload: ReasonIn | None = None):
    return _switch(request, name, payload or ReasonIn(), "failback")


@api.post("/appliances/{name}/ha/recover", response={202: JobOut}, summary="Recover a primary that lost its configuration")
def recover(request, name: str, payload: ReasonIn | None = None):
    require(request, roles.OPERATE, "recover a primary")
    pair = pair_of_or_404(appliance_or_404(name))
    try:
        job = services.ha_recover_primary(pair=pair, by=request.auth, reason=(payload or ReasonIn()).reason)
    except services.ServiceError as exc:  # nothing to recover now
        raise HttpError(409, exc.message) from None
    return Status(202, job_out(job))


@api.post("/appliances/{name}/ha/maintenance", summary="Maintenance mode on or off")
def maintenance(request, name: str, payload: MaintenanceIn):
    require(request, roles.OPERATE, "change maintenance mode")
    pair = pair_of_or_404(appliance_or_404(name))
    pair = services.ha_maintenance_set(pair=pair, on=payload.on, by=request.auth, reason=payload.reason)
    return {"maintenance": pair.maintenance, "reason": pair.maintenance_reason}


@api.post("/appliances/{name}/services/start", response={202: JobOut}, summary="Start the appliance's services")
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


@api.get("/appliances/{name}/hainfo", summary="The appliance's gethainfo output (text)")
def hainfo(request, name: str):
    return _agent_text(name, "hainfo")


@api.get("/appliances/{name}/serverinfo", summary="The appliance's getserverinfo output (text)")
def serverinfo(request, name: str):
    return _agent_text(name, "serverinfo")


# --- jobs ---------------------------------------------------------------------------------
@api.get("/jobs", response=list[JobOut])
def list_jobs(request, limit: int = 50):
    jobs = Job.objects.select_related("pair__primary", "pair__secondary", "appliance", "requested_by")
    return [job_out(job) for job in jobs[: max(1, min(limit, 500))]]


@api.get("/jobs/{job_id}", response=JobOut)
def get_job(request, job_id: int):
    job = Job.objects.select_related("pair__primary", "pair__secondary", "appliance", "requested_by").filter(pk=job_id).first()
    if job is None:
        raise HttpError(404, f"No job #{job_id}.")
    return job_out(job)



# --- licences -------------------------------------------------------------------------------
class LicenseOut(Schema):
    feature: str
    label: str
    sku: str
    version: str
    count: int
    host_udi: str
    expires_on: date | None
    is_evaluation: bool
    status: str
    installed_on: str | None


class LicenseFileOut(Schema):
    id: int
    filename: str
    appliance: str
    sha256: str
    uploaded_at: datetime
    uploaded_by: str | None
    licenses: list[LicenseOut]


class LicenseUploadOut(LicenseFileOut):
    job: JobOut


def license_file_out(license_file: LicenseFile) -> dict:
    return {
        "id": license_file.pk,
        "filename": license_file.filename,
        "appliance": license_file.appliance.name,
        "sha256": license_file.sha256,
        "uploaded_at": license_file.uploaded_at,
        "uploaded_by": license_file.uploaded_by.get_username() if license_file.uploaded_by_id else None,
        "licenses": [
            {
                "feature": row.feature,
                "label": licences.FEATURES[row.feature].label if row.feature in licences.FEATURES else row.feature,
                "sku": row.sku,
                "version": row.version,
                "count": row.count,
                "host_udi": row.host_udi,
                "expires_on": row.expires_on,
                "is_evaluation": row.is_evaluation,
                "status": row.status,
                "installed_on": row.installed_on.name if row.installed_on_id else None,
            }
            for row in license_file.licenses.all()
        ],
    }


_LICENCE_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "appliance"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "the licence file (≤ 64 KiB)"},
                        "appliance": {"type": "string", "description": "the target appliance's name"},
                        "reason": {"type": "string", "maxLength": 500},
                    },
                }
            }
        },
    }
}
_UPLOAD_HINT = "send multipart/form-data with the fields 'file' (the licence file) and 'appliance' (the appliance's name)"


@api.post(
    "/licenses",
    response={201: LicenseUploadOut},
    summary="Upload a licence file (verified, stored, then installed on the appliance by a job)",
    openapi_extra=_LICENCE_UPLOAD_BODY,
)
def upload_licence(request):
    require(request, roles.LICENCES, "upload licences")
    if request.content_type != "multipart/form-data":
        raise HttpError(400, f"A licence is uploaded as a file: {_UPLOAD_HINT}.")
    try:
        fields, files = request.POST, request.FILES
    except (MultiPartParserError, SuspiciousOperation, UnreadablePostError):
        raise HttpError(400, f"The upload could not be read as multipart/form-data: {_UPLOAD_HINT}.") from None
    name = fields.get("appliance", "").strip()
    if not name:
        raise HttpError(400, f"Name the target appliance: {_UPLOAD_HINT}.")
    appliance = appliance_or_404(name)
    uploaded = files.get("file")
    if uploaded is None:
        raise HttpError(400, f"No licence file was attached: {_UPLOAD_HINT}.")
    try:
        licences.check_size(uploaded.size or 0)  # before reading: an upload may be huge
    except licences.LicenceError as exc:
        raise services.ServiceError(exc.message, field="file") from None
    license_file, job = services.licence_upload(
        appliance=appliance,
        filename=uploaded.name or "",
        data=uploaded.read(licences.MAX_BYTES + 1),
        by=request.auth,
        reason=fields.get("reason", "")[:500],
    )
    return Status(201, {**license_file_out(license_file), "job": job_out(job)})


@api.get("/licenses", response=list[LicenseFileOut], summary="Uploaded licence files, newest first")
def list_licences(request, appliance: str | None = None, limit: int = 500):
    target = appliance_or_404(appliance) if appliance else None
    rows = selectors.license_files(appliance=target, limit=max(1, min(limit, 2000)))
    return [license_file_out(row) for row in rows]


@api.delete(
    "/licenses/{license_id}", response={202: JobOut}, summary="Remove a licence file from its appliance (a job)"
)
def remove_licence(request, license_id: int = Path(..., ge=1, le=2**63 - 1), reason: str = ""):
    require(request, roles.LICENCES, "remove licences")
    license_file = LicenseFile.objects.select_related("appliance").filter(pk=license_id).first()
    if license_file is None:
        raise HttpError(404, f"No licence file #{license_id}.")
    try:
        job = services.licence_remove(license_file=license_file, by=request.auth, reason=reason[:500])
    except services.ServiceError as exc:  # already removed, or a licence job still running: "not now"
        raise HttpError(409, exc.message) from None
    return Status(202, job_out(job))


# --- agents' event pushes (trap destination) -----------------------------------------------
_ingest_replays = protocol.ReplayCache()


@api.post("/ingest/events", auth=None, include_in_schema=True, summary="Agents push their events here (signed)")
def ingest_events(request):
    """Signed by the sending agent with its own password (the one the portal holds)."""
    body = request.body
    if len(body) > 2 * 1024 * 1024:
        raise HttpError(413, "Event push larger than 2 MiB.")
    try:
        push = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "The body is not JSON.") from None
    hm_ip = push.get("hm_ip") if isinstance(push, dict) else None
    try:  # an address before any query (PostgreSQL's inet refuses junk with an error)
        hm_ip = str(ipaddress.IPv4Address(hm_ip)) if isinstance(hm_ip, str) else None
    except ValueError:
        hm_ip = None
    appliance = Appliance.objects.filter(hm_ip=hm_ip).first() if hm_ip is not None else None
    if appliance is None:
        raise HttpError(401, "Unknown sender.")
    headers = {key: value for key, value in request.headers.items()}
    try:
        protocol.verify_request(
            appliance.get_password(), request.method, request.get_full_path(), body, headers, replay_cache=_ingest_replays
        )
    except (protocol.SignatureError, SecretUnreadable):
        raise HttpError(401, "Bad or missing signature.") from None
    try:
        protocol.check_version(request.headers.get(protocol.HEADER_PROTOCOL), who=f"the agent {appliance.name}")
    except protocol.ProtocolMismatch as exc:
        raise HttpError(400, str(exc)) from None
    try:
        events = agent_replies.parse_events(push.get("events", []), source=appliance.name)
    except agent_client.AgentBadReply as exc:
        raise HttpError(400, exc.message) from None
    stored = services.events_ingest(appliance=appliance, events=events)
    if stored:
        peers = {pk for both in selectors.pairs_of(appliance).values_list("primary_id", "secondary_id") for pk in both}
        dispatch.on_commit(dispatch.APPLIANCES_REFRESH, [appliance.pk, *sorted(peers - {appliance.pk})])
    return {"stored": stored}
