"""Jobs."""

from __future__ import annotations

from ninja import Path, Query, Router
from ninja.errors import HttpError

from hapairs.api.core import answers
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
