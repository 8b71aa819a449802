"""License files: install on the appliance, remove, and the pending ones before a pairing."""

from __future__ import annotations

from hapairs import agent_client
from hapairs.choices import JobKind, LicenseStatus
from hapairs.jobs import JobContext, Step, StepFailed
from hapairs.jobsteps._common import _pair, _post
from hapairs.models import LicenseFile
from hapairs.services.licenses import license_features, license_installed_record, license_removed_record
from nodeagent import protocol

STEPS: dict[str, list[Step]] = {}


# --- licenses --------------------------------------------------------------------------
def _job_license_file(ctx: JobContext) -> LicenseFile:
    found = LicenseFile.objects.select_related("appliance").filter(pk=ctx.params.get("license_file")).first()
    if found is None:
        raise StepFailed("The license file of this job no longer exists.")
    return found


def _install_file(ctx: JobContext, license_file: LicenseFile, *, key: str) -> bool:
    """Send one stored file to its appliance's agent, then record its lines INSTALLED.

    Idempotent: a file with no VERIFIED line left (installed, or removed meanwhile) is
    skipped, and a re-sent request carries the same key, so the agent answers as before.
    """
    lines = list(license_file.licenses.all())
    if not any(line.status == LicenseStatus.VERIFIED for line in lines):
        return False
    appliance = license_file.appliance
    reply = agent_client.call(
        agent_client.target_for(appliance),
        "POST",
        protocol.PATH_LICENSES,
        body={"text": license_file.content, "features": license_features(lines), "cause": {**ctx.cause, "key": key}},
        idempotency_key=key,
    )
    agent_id = reply.get("id") if isinstance(reply, dict) else None
    if not isinstance(agent_id, str) or not agent_id:
        raise agent_client.AgentBadReply(f"{appliance.name} installed the license but did not say under which id.")
    license_installed_record(license_file=license_file, agent_license_id=agent_id, job=ctx.job)
    return True


def install_license(ctx: JobContext) -> None:
    _install_file(ctx, _job_license_file(ctx), key=ctx.idempotency_key)


def remove_license_from_agent(ctx: JobContext) -> None:
    license_file = _job_license_file(ctx)
    if not license_file.agent_license_id:  # never installed: the agent has nothing to drop
        return
    path = protocol.PATH_LICENSE.format(license_id=license_file.agent_license_id)
    try:
        _post(ctx, license_file.appliance, path, {}, method="DELETE")
    except agent_client.AgentRejected as exc:
        if exc.status != 404:  # already gone: fine, the step is done
            raise


def record_license_removed(ctx: JobContext) -> None:
    license_removed_record(license_file=_job_license_file(ctx), job=ctx.job)


def install_pending_licenses(ctx: JobContext) -> None:
    """Licenses uploaded but not installed yet on either node (a VA's activation license,
    uploaded just before pairing) reach their agents before HA is configured."""
    pair = _pair(ctx)
    files = (
        LicenseFile.objects.select_related("appliance")
        .filter(appliance_id__in=[pair.primary_id, pair.secondary_id], licenses__status=LicenseStatus.VERIFIED)
        .distinct()
        .order_by("pk")
    )
    for license_file in files:
        _install_file(ctx, license_file, key=f"{ctx.idempotency_key}:{license_file.pk}")


STEPS[JobKind.INSTALL_LICENSE] = [Step("install_license", install_license, "Installing the license on the appliance")]
STEPS[JobKind.REMOVE_LICENSE] = [
    Step("remove_license", remove_license_from_agent, "Removing the license from the appliance"),
    Step("record_removed", record_license_removed, "Recording the removal"),
]
