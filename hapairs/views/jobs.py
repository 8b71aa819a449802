"""Jobs: the list and one job's progress, steps and events (live while it runs)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_POST

from hapairs import roles, services
from hapairs.choices import ACTIVE_JOB_STATUSES, JobStatus
from hapairs.models import HAEvent, Job
from hapairs.views._common import Pager, render_polled, requires

JOB_RELATED = ("pair__primary", "pair__secondary", "appliance", "requested_by")


@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", "")
    jobs = Job.objects.select_related(*JOB_RELATED)
    if status == "active":
        jobs = jobs.filter(status__in=ACTIVE_JOB_STATUSES)
    elif status in JobStatus.values:
        jobs = jobs.filter(status=status)
    pager = Pager(request, jobs.count())
    page = list(jobs.order_by("-created_at", "-pk")[pager.offset : pager.offset + pager.per_page])
    live = any(job.is_active for job in page)
    context = {
        "jobs": page,
        "pager": pager,
        "status": status,
        "live": live,
        "statuses": [("", "All"), ("active", "In progress"), *JobStatus.choices],
    }
    return render_polled(request, "hapairs/job_list.html", context, target="job-table", partial="table", live=live)


@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related(*JOB_RELATED), pk=job_id)
    events = HAEvent.objects.filter(job=job).order_by("timestamp", "pk")[:200]
    context = {"job": job, "events": events, "can_operate": request.user.has_perm(roles.OPERATE)}
    return render_polled(
        request, "hapairs/job_detail.html", context, target="job-progress", partial="progress", live=job.is_active
    )


@require_POST
@requires(roles.OPERATE, "cancel jobs")
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    """Withdraw a job no worker has started yet, or ask a running one to stop: its worker
    ends it at its next step, or within a second of a wait, and says which steps ran (a step
    already talking to an agent finishes first)."""
    job = get_object_or_404(Job, pk=job_id)
    outcome = services.job_cancel(job=job, by=request.user)
    if outcome == "cancelled":
        messages.success(request, f"Job #{job.pk} cancelled before it started.")
    elif outcome == "requested":
        messages.success(request, f"Job #{job.pk} will stop at its next step, or within a second if it is waiting.")
    else:
        messages.error(request, f"Job #{job.pk} has already finished; it cannot be cancelled.")
    return redirect("job_detail", job_id=job.pk)
