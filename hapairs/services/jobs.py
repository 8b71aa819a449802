"""Jobs: a row first, queued after commit; one active job per pair (the database says so)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from hapairs import dispatch
from hapairs.audit import audited
from hapairs.choices import ACTIVE_JOB_STATUSES, EventCode, JobStatus, Severity
from hapairs.models import Appliance, HAPair, Job
from hapairs.services._common import ServiceError, actor_name, event_record, rows_lock
from hapairs.services.alerts import alert_queue


class JobConflict(ServiceError):
    """The pair already has a job in progress."""


def _conflict_message(pair: HAPair) -> str:
    running = Job.objects.filter(pair=pair, status__in=ACTIVE_JOB_STATUSES).select_related("requested_by").first()
    if running is None:
        return f"Another job on {pair} started at the same moment; try again when it has finished."
    who = running.requested_by.get_username() if running.requested_by else "the portal"
    return (
        f"{running.get_kind_display()} (job #{running.pk}, requested by {who}) is already "
        f"{running.get_status_display().lower()} on {pair}; wait for it to finish."
    )


def job_enqueue(
    *,
    kind: str,
    pair: HAPair | None = None,
    appliance: Appliance | None = None,
    params: dict | None = None,
    by: AbstractBaseUser | None = None,
    reason: str = "",
) -> Job:
    """Write the job row and queue it once the surrounding transaction commits."""
    if pair is not None and Job.objects.filter(pair=pair, status__in=ACTIVE_JOB_STATUSES).exists():
        raise JobConflict(_conflict_message(pair))
    try:
        with transaction.atomic():
            # the rows the job refers to, locked in the poller's order before the insert takes
            # its key-share locks on them (the insert alone locked the pair, then the appliance,
            # and the poll the other way round)
            rows_lock(appliance, pair=pair, no_key=True)
            job = Job.objects.create(
                kind=kind,
                pair=pair,
                appliance=appliance,
                params=params or {},
                requested_by=by,
                reason=reason[:500],
                status=JobStatus.PENDING,
            )
    except IntegrityError:
        raise JobConflict(_conflict_message(pair)) from None
    event_record(
        code=EventCode.JOB_REQUESTED,
        description=f"{job.get_kind_display()} requested",
        generated_by=actor_name(by),
        pair=pair,
        appliance=appliance,
        job=job,
        remarks=reason[:500],
    )
    dispatch.on_commit(dispatch.JOB_RUN, job.pk)
    return job


@transaction.atomic  # the event and its alert together: a deadlock's victim is retried whole
def job_failed_event(*, job: Job) -> None:
    job.refresh_from_db(fields=["error"])
    event = event_record(
        code=EventCode.JOB_FAILED,
        description=f"{job.get_kind_display()} failed",
        generated_by="mseportal",
        pair=job.pair,
        appliance=job.appliance,
        job=job,
        remarks=job.error[:500],
        severity=Severity.WARNING,
    )
    alert_queue(kind="job_failed", event=event)  # sent by a worker, after commit


@transaction.atomic  # one transaction: a deadlock's victim is retried whole (jobs._end_event)
def job_succeeded_event(*, job: Job) -> None:
    event_record(
        code=EventCode.JOB_COMPLETED,
        description=f"{job.get_kind_display()} completed",
        generated_by="mseportal",
        pair=job.pair,
        appliance=job.appliance,
        job=job,
    )


@transaction.atomic  # one transaction: a deadlock's victim is retried whole (jobs._end_event)
def job_cancelled_event(*, job: Job, by: str) -> None:
    """A running job its worker stopped at an operator's request (hapairs.jobs)."""
    event_record(
        code=EventCode.JOB_CANCELLED,
        description=f"{job.get_kind_display()} cancelled",
        generated_by=by,
        pair=job.pair,
        job=job,
        remarks=job.error[:500] if job.error else "",
    )


@transaction.atomic
@audited("job.cancel", target="job")
def job_cancel(*, job: Job, by: AbstractBaseUser | None = None) -> str | None:
    """Withdraw a job no worker has claimed yet ("cancelled"), or ask a running one to stop
    ("requested": its worker ends it cancelled at its next step or within a second of a
    wait, saying which steps ran; a step already talking to an agent finishes first).
    None: it has ended already."""
    cancelled = Job.objects.filter(pk=job.pk, status=JobStatus.PENDING).update(status=JobStatus.CANCELLED)
    if cancelled:
        event_record(
            code=EventCode.JOB_CANCELLED,
            description=f"{job.get_kind_display()} cancelled",
            generated_by=actor_name(by),
            pair=job.pair,
            job=job,
        )
        return "cancelled"
    asked = Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, cancel_requested_by="").update(
        cancel_requested_by=actor_name(by)[:150] or "mseportal"
    )
    if asked or Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING).exists():
        return "requested"
    return None
