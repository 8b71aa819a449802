"""Jobs."""

from __future__ import annotations

from ninja import Router
from ninja.errors import HttpError

from hapairs.api.schemas import JobOut, job_out
from hapairs.models import Job

router = Router()


# --- jobs ---------------------------------------------------------------------------------
@router.get("/jobs", response=list[JobOut])
def list_jobs(request, limit: int = 50):
    jobs = Job.objects.select_related("pair__primary", "pair__secondary", "appliance", "requested_by")
    return [job_out(job) for job in jobs[: max(1, min(limit, 500))]]


@router.get("/jobs/{job_id}", response=JobOut)
def get_job(request, job_id: int):
    job = (
        Job.objects.select_related("pair__primary", "pair__secondary", "appliance", "requested_by")
        .filter(pk=job_id)
        .first()
    )
    if job is None:
        raise HttpError(404, f"No job #{job_id}.")
    return job_out(job)
