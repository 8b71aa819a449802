"""License files: upload, list, remove."""

from __future__ import annotations

from datetime import date, datetime

from django.core.exceptions import SuspiciousOperation
from django.http import UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from ninja import Path, Query, Router, Schema, Status
from ninja.errors import HttpError

from hapairs import (
    licenses,
    roles,
    selectors,
    services,
)
from hapairs.api.core import answers, appliance_or_404, require
from hapairs.api.schemas import JobOut, job_out
from hapairs.models import LicenseFile

router = Router()


# --- licenses -------------------------------------------------------------------------------
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
                "label": licenses.FEATURES[row.feature].label if row.feature in licenses.FEATURES else row.feature,
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


_LICENSE_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "appliance"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "the license file (≤ 64 KiB)"},
                        "appliance": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 63,
                            "description": "the target appliance's name",
                        },
                        "reason": {"type": "string", "maxLength": 500},
                    },
                }
            }
        },
    }
}
_UPLOAD_HINT = (
    "send multipart/form-data with the fields 'file' (the license file) and 'appliance' (the appliance's name)"
)


@router.post(
    "/licenses",
    response=answers({201: LicenseUploadOut}, 400, 403, 404, 409, 413, 422),
    summary="Upload a license file (verified, stored, then installed on the appliance by a job)",
    openapi_extra=_LICENSE_UPLOAD_BODY,
)
def upload_license(request):
    require(request, roles.LICENSES, "upload licenses")
    if request.content_type != "multipart/form-data":
        raise HttpError(400, f"A license is uploaded as a file: {_UPLOAD_HINT}.")
    try:
        fields, files = request.POST, request.FILES
    except (MultiPartParserError, SuspiciousOperation, UnreadablePostError):
        raise HttpError(400, f"The upload could not be read as multipart/form-data: {_UPLOAD_HINT}.") from None
    name = fields.get("appliance", "")
    if not name:
        raise HttpError(400, f"Name the target appliance: {_UPLOAD_HINT}.")
    if len(name) > 63 or len(fields.get("reason", "")) > 500:
        raise HttpError(400, "appliance: at most 63 characters; reason: at most 500.")
    appliance = appliance_or_404(name)
    uploaded = files.get("file")
    if uploaded is None:
        raise HttpError(400, f"No license file was attached: {_UPLOAD_HINT}.")
    try:
        licenses.check_size(uploaded.size or 0)  # before reading: an upload may be huge
    except licenses.LicenseError as exc:
        raise HttpError(413, exc.message) from None
    license_file, job = services.license_upload(
        appliance=appliance,
        filename=uploaded.name or "",
        data=uploaded.read(licenses.MAX_BYTES + 1),
        by=request.auth,
        reason=fields.get("reason", ""),
    )
    return Status(201, {**license_file_out(license_file), "job": job_out(job)})


@router.get(
    "/licenses", response=answers({200: list[LicenseFileOut]}, 400, 404), summary="Uploaded license files, newest first"
)
def list_licenses(request, appliance: str | None = Query(None, max_length=63), limit: int = Query(500, ge=1, le=2000)):
    target = appliance_or_404(appliance) if appliance else None
    rows = selectors.license_files(appliance=target, limit=limit)
    return [license_file_out(row) for row in rows]


@router.delete(
    "/licenses/{license_id}",
    response=answers({202: JobOut}, 400, 403, 404, 409),
    summary="Remove a license file from its appliance (a job)",
)
def remove_license(request, license_id: int = Path(..., ge=1, le=2**63 - 1), reason: str = Query("", max_length=500)):
    require(request, roles.LICENSES, "remove licenses")
    license_file = LicenseFile.objects.select_related("appliance").filter(pk=license_id).first()
    if license_file is None:
        raise HttpError(404, f"No license file #{license_id}.")
    try:
        job = services.license_remove(license_file=license_file, by=request.auth, reason=reason)
    except services.ServiceError as exc:  # already removed, or a license job still running: "not now"
        raise HttpError(409, exc.message) from None
    return Status(202, job_out(job))
