"""Licenses: upload (verify, store, queue the install), remove (the agent drops it).

A license file is a security object (docs/licenses.md): every line is verified —
signature, format, expiry, host binding to the appliance's UDI — and a duplicate is
refused before anything is stored. A refusal is one ``ServiceError`` on the ``file``
field carrying the verifier's sentence, and leaves nothing behind: no row, no event, no
job, so nothing ever reaches the agent. What is accepted is stored in one transaction
with its lines (VERIFIED) and the job that installs it on the agent.
"""

from __future__ import annotations

import re

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from hapairs import licenses, selectors
from hapairs.audit import audit_record, audited
from hapairs.choices import ACTIVE_JOB_STATUSES, EventCode, JobKind, LicenseStatus
from hapairs.models import Appliance, Job, License, LicenseFile
from hapairs.services._common import ServiceError, actor_name, event_record
from hapairs.services.jobs import job_enqueue

FIELD = "file"
_FILENAME_JUNK = re.compile(r"[\x00-\x1f\x7f]")


def license_file_name(filename: str) -> str:
    """The name to store: the last path component, without control characters, ≤ 255 characters."""
    name = _FILENAME_JUNK.sub("", filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or "license.lic"


def license_features(lines) -> dict[str, int]:
    """Summary label → total count, what the agent shows for an installed file."""
    features: dict[str, int] = {}
    for line in lines:
        label = licenses.FEATURES[line.feature].label if line.feature in licenses.FEATURES else line.feature
        features[label] = features.get(label, 0) + line.count
    return features


def license_line_remark(line) -> str:
    """``CAS_ELEMENTS × 100 (evaluation until 2027-01-24)`` for events and messages."""
    text = f"{line.feature} × {line.count}"
    if line.expires_on is not None:
        text += f" ({'evaluation' if line.is_evaluation else 'valid'} until {line.expires_on.isoformat()})"
    if line.host_udi != licenses.ANY_HOST:
        text += f" for {line.host_udi}"
    return text


def license_verify(*, appliance: Appliance, data: bytes) -> licenses.VerifiedLicenseFile:
    """Every check that needs no database: keys, format, signatures, expiry, host binding.
    ``appliance`` may be one not recorded yet (the secondary the configure screen pairs)."""
    try:
        keys = licenses.trusted_keys_from_settings()
        verified = licenses.parse_and_verify(data, trusted_keys=keys, today=timezone.localdate())
        licenses.check_host(verified, appliance.udi, appliance=appliance.name)
    except licenses.LicenseError as exc:
        raise ServiceError(exc.message, field=FIELD) from None
    if not appliance.is_virtual:
        for line in verified.lines:
            if line.feature == licenses.ACTIVATION_FEATURE:
                raise ServiceError(
                    f"Line {line.line_no}: {line.feature}: {appliance.name} is a "
                    f"{appliance.get_device_type_display()}, which needs no activation license "
                    "(only virtual appliances are activated).",
                    field=FIELD,
                )
    return verified


def _refuse_duplicates(appliance: Appliance, verified: licenses.VerifiedLicenseFile) -> None:
    """The same file again (anywhere), or a line this appliance already holds (not removed)."""
    same = LicenseFile.objects.select_related("appliance").filter(sha256=verified.sha256).first()
    if same is not None:
        raise ServiceError(
            f"This license file was already uploaded for {same.appliance.name} "
            f"on {timezone.localtime(same.uploaded_at):%Y-%m-%d %H:%M} (as {same.filename}).",
            field=FIELD,
        )
    features = {line.feature for line in verified.lines}
    held = {
        row.canonical: row
        for row in License.objects.select_related("source_file")
        .filter(source_file__appliance=appliance, feature__in=features)
        .exclude(status=LicenseStatus.REMOVED)
    }
    for line in verified.lines:
        row = held.get(line.canonical)
        if row is not None:
            raise ServiceError(
                f"Line {line.line_no}: {line.feature}: {appliance.name} already holds this license "
                f"(uploaded in {row.source_file.filename}); the same license cannot be counted twice.",
                field=FIELD,
            )


@audited("license.upload")
def license_upload(
    *,
    appliance: Appliance,
    filename: str,
    data: bytes,
    by: AbstractBaseUser | None = None,
    reason: str = "",
) -> tuple[LicenseFile, Job]:
    """Verify a license file for ``appliance``, store it and queue the job that installs it.

    Refused with ``ServiceError(field="file")`` — the verifier's sentence — for a file that
    is empty, not text, too big, malformed, unsigned or signed by an untrusted key, changed
    after signing, expired, bound to another appliance, or already uploaded (the same file,
    or a line the appliance already holds). Nothing is stored then.
    """
    verified = license_verify(appliance=appliance, data=data)
    name = license_file_name(filename)
    remarks = f"{name}: " + ", ".join(license_line_remark(line) for line in verified.lines)
    try:
        with transaction.atomic():
            # One upload per appliance at a time: the duplicate check then sees every line.
            locked = Appliance.objects.select_for_update().get(pk=appliance.pk)
            _refuse_duplicates(locked, verified)
            license_file = LicenseFile.objects.create(
                filename=name,
                sha256=verified.sha256,
                content=verified.text,
                appliance=locked,
                uploaded_by=by,
            )
            License.objects.bulk_create(
                [
                    License(
                        source_file=license_file,
                        feature=line.feature,
                        sku=line.sku,
                        vendor_string=line.vendor_string,
                        version=line.version,
                        count=line.count,
                        host_udi=line.host_udi,
                        expires_on=line.expires_on,
                        is_evaluation=line.is_evaluation,
                        status=LicenseStatus.VERIFIED,
                    )
                    for line in verified.lines
                ]
            )
            event_record(
                code=EventCode.LICENSE_UPLOADED,
                description="License file uploaded",
                generated_by=actor_name(by),
                appliance=locked,
                pair=selectors.pair_for(locked),
                remarks=remarks,
            )
            job = job_enqueue(
                kind=JobKind.INSTALL_LICENSE,
                appliance=locked,
                params={"license_file": license_file.pk},
                by=by,
                reason=reason,
            )
    except IntegrityError:  # the same file, uploaded at the same moment by someone else
        raise ServiceError("This license file was uploaded at the same moment by someone else.", field=FIELD) from None
    return license_file, job


@audited("license.remove", target="license_file")
def license_remove(*, license_file: LicenseFile, by: AbstractBaseUser | None = None, reason: str = "") -> Job:
    """ "Delete Secondary Activation license": a job deletes the file from the agent and
    marks its lines REMOVED (kept for the record; they no longer count)."""
    with transaction.atomic():
        locked = LicenseFile.objects.select_for_update().select_related("appliance").filter(pk=license_file.pk).first()
        if locked is None:
            raise ServiceError("This license file no longer exists.")
        appliance = locked.appliance
        if not locked.licenses.exclude(status=LicenseStatus.REMOVED).exists():
            raise ServiceError(f"{locked.filename} was already removed from {appliance.name}.")
        pairs = selectors.pairs_of(appliance)
        holds_activation = (
            locked.licenses.filter(feature=licenses.ACTIVATION_FEATURE).exclude(status=LicenseStatus.REMOVED).exists()
        )
        if holds_activation and appliance.is_virtual and pairs.exists():
            raise ServiceError(
                f"{appliance.name} is a virtual appliance in high availability, which it may only be while "
                f"activated: delete the secondary from the pair first, then its activation license."
            )
        busy = (
            Job.objects.filter(status__in=ACTIVE_JOB_STATUSES)
            .filter(
                Q(kind=JobKind.INSTALL_LICENSE, appliance=appliance)
                | Q(kind=JobKind.REMOVE_LICENSE, appliance=appliance, params__license_file=locked.pk)
                | Q(kind=JobKind.CONFIGURE_HA, pair__in=pairs)
            )
            .first()
        )
        if busy is not None:
            raise ServiceError(
                f"{busy.get_kind_display()} (job #{busy.pk}) is {busy.get_status_display().lower()} on "
                f"{appliance.name}; remove the license once it has finished."
            )
        return job_enqueue(
            kind=JobKind.REMOVE_LICENSE,
            appliance=appliance,
            params={"license_file": locked.pk},
            by=by,
            reason=reason or f"{locked.filename}",
        )


# --- what the job steps record (hapairs.jobsteps) -----------------------------------------
@transaction.atomic
def license_installed_record(*, license_file: LicenseFile, agent_license_id: str, job: Job | None = None) -> int:
    """The agent holds the file: its VERIFIED lines become INSTALLED on the appliance.

    Conditional, so a step re-run (or a configure job installing the same file) records
    the installation once.
    """
    appliance = license_file.appliance
    if agent_license_id and license_file.agent_license_id != agent_license_id:
        license_file.agent_license_id = agent_license_id[:64]
        license_file.save(update_fields=["agent_license_id"])
    return _lines_move(
        license_file,
        License.objects.filter(status=LicenseStatus.VERIFIED),
        {"status": LicenseStatus.INSTALLED, "installed_on": appliance},
        EventCode.LICENSE_INSTALLED,
        "on",
        job,
    )


@transaction.atomic
def license_removed_record(*, license_file: LicenseFile, job: Job | None = None) -> int:
    """The agent no longer holds the file: its lines become REMOVED and stop counting."""
    return _lines_move(
        license_file,
        License.objects.exclude(status=LicenseStatus.REMOVED),
        {"status": LicenseStatus.REMOVED},
        EventCode.LICENSE_REMOVED,
        "from",
        job,
    )


def _lines_move(license_file: LicenseFile, candidates, changes: dict, code: str, preposition: str, job) -> int:
    """Move the file's lines that are still ``candidates`` to ``changes``, conditionally (a
    step re-run records the move once), with one event naming them."""
    appliance = license_file.appliance
    description = EventCode(code).label
    lines = list(candidates.filter(source_file=license_file))
    updated = candidates.filter(pk__in=[row.pk for row in lines]).update(**changes)
    if updated:
        event_record(
            code=code,
            description=description,
            generated_by="mseportal",
            appliance=appliance,
            pair=selectors.pair_for(appliance),
            job=job,
            remarks=f"{license_file.filename} {preposition} {appliance.name}: "
            + ", ".join(license_line_remark(row) for row in lines),
        )
        # the worker's write, in the job's name (who asked, and why)
        audit_record(
            "license.installed" if code == EventCode.LICENSE_INSTALLED else "license.removed",
            target=license_file,
            before={"lines": {str(row.pk): row.status for row in lines}},
            after={"lines": {str(row.pk): changes["status"] for row in lines}, "job": job.pk if job else None},
            reason=job.reason if job else "",
            by=job.requested_by if job else None,
        )
    return updated


__all__ = [
    "license_features",
    "license_file_name",
    "license_installed_record",
    "license_remove",
    "license_removed_record",
    "license_upload",
]
