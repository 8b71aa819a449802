"""Jobs."""

from __future__ import annotations

from typing import Literal

from ninja import Path, Query, Router, Schema
from ninja.errors import HttpError

from hapairs import roles, services
from hapairs.api.core import answers, require
from hapairs.api.schemas import JobOut, job_out
from hapairs.models import Job

router = Router()


# --- jobs ---------------------------------------------------------------------------------
@router.get("/jobs", response=answers({200: list[JobOut]}, 400))
def list_jobs(request, limit: int = Query(50, ge=1, le=500)):
    jobs = Job.objects.select_related("pair__primary", "pair__secondary", "appliance", "requested_by")
    return [job_out(job) for job in jobs[:limit]]


@router.get("/jobs/{job_id}", response=answers({200: JobOut}, 400, 404))
def get_job(request, job_id: int = Path(..., ge=1, le=2**63 - 1)):
    job = (
        Job.objects.select_related("pair__primary", "pair__secondary", "appliance", "requested_by")
        .filter(pk=job_id)
        .first()
    )
    if job is None:
        raise HttpError(404, f"No job #{job_id}.")
    return job_out(job)


class CancelOut(Schema):
    outcome: Literal["cancelled", "requested"]  # withdrawn before it started, or asked to stop
    job: JobOut


@router.post(
    "/jobs/{job_id}/cancel",
    response=answers({200: CancelOut}, 400, 403, 404, 409),
    summary="Cancel a job: withdrawn if no worker started it, else asked to stop",
    description=(
        "A running job stops at its next step, or within a second if it is waiting; a step already "
        "talking to an agent finishes first. It then ends `cancelled`, its error saying what was done "
        "and what was not. 409 when it has already ended."
    ),
)
def cancel_job(request, job_id: int = Path(..., ge=1, le=2**63 - 1)):
    require(request, roles.OPERATE, "cancel jobs")
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        raise HttpError(404, f"No job #{job_id}.")
    outcome = services.job_cancel(job=job, by=request.auth)
    if outcome is None:
        ended = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        raise HttpError(409, f"Job #{job_id} has already ended ({ended}); there is nothing to cancel.")
    fresh = Job.objects.select_related("pair__primary", "pair__secondary", "appliance", "requested_by").get(pk=job_id)
    return {"outcome": outcome, "job": job_out(fresh)}
