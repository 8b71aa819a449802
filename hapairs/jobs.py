"""Running jobs: claimed with a lease, run step by step, resumable, each step idempotent.

A job is a row first (``services.job_enqueue``); the broker only nudges a worker to
run it. A worker *claims* the row with a conditional update and holds a lease that
it renews while it works. If the worker dies, the lease runs out and the periodic
``jobs_resume`` task re-queues the job; the next worker skips the steps already
recorded in ``steps_done`` and re-sends the current one with the same idempotency key
(``<job id>:<step>``), which the agent answers with its first answer. So a job killed
at any point finishes exactly once.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import OperationalError
from django.db.models import F, Q
from django.utils import timezone

from hapairs import agent_client
from hapairs.choices import JobStatus
from hapairs.jobkeys import job_step_key
from hapairs.models import Job
from hapairs.services._common import deadlock_retried
from hapairs.services.certificates import certificate_refused_record
from hapairs.services.jobs import job_cancelled_event, job_failed_event, job_succeeded_event

log = logging.getLogger(__name__)
CANCEL_CHECK_SECONDS = 0.5  # a wait reads a cancel request at least this often


class StepFailed(Exception):
    """A step cannot succeed; ``message`` is shown to the operator as the job's error."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class LeaseLost(Exception):
    """Another worker took the job over (our lease ran out); stop without writing."""


class CancelRequested(Exception):
    """An operator asked the running job to stop (Job.cancel_requested_by)."""


@dataclass
class Step:
    name: str
    run: Callable[[JobContext], None]
    label: str = ""
    weight: int = 1  # share of the progress bar
    # said after "gave up" when the agent it calls never answered: what the operator can do
    unreachable_hint: str = ""


@dataclass
class JobContext:
    job: Job
    step: Step
    worker: str
    progress_floor: int
    progress_span: int

    @property
    def idempotency_key(self) -> str:
        return job_step_key(self.job.pk, self.step.name)

    @property
    def cause(self) -> dict[str, str]:
        """What every command of the job carries (``protocol.Cause``): the agent echoes it on
        the events the command causes, on both nodes."""
        user = self.job.requested_by
        return {
            "key": self.idempotency_key,
            "by": user.get_username() if user is not None else "mseportal",
            "reason": self.job.reason,
        }

    @property
    def params(self) -> dict:
        return self.job.params

    def progress(self, percent_of_step: float) -> None:
        """Report progress inside the current step (0–100) and renew the lease."""
        percent_of_step = max(0.0, min(100.0, percent_of_step))
        overall = self.progress_floor + int(self.progress_span * percent_of_step / 100)
        renew_lease(self.job, self.worker, progress=min(overall, 99))

    def wait_until(self, check: Callable[[], float | bool], *, timeout: float, every: float = 0.5, what: str) -> None:
        """Poll ``check`` (True, or a percentage that reaches 100) until done or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            outcome = check()
            if outcome is True or (not isinstance(outcome, bool) and outcome >= 100):
                self.progress(100)
                return
            if not isinstance(outcome, bool):
                self.progress(outcome)
            else:
                renew_lease(self.job, self.worker)
            if time.monotonic() > deadline:
                raise StepFailed(f"Timed out after {timeout:g} s waiting for {what}.")
            time.sleep(min(every, CANCEL_CHECK_SECONDS))  # the next pass reads a cancel request


# kind → steps; filled at start-up by HapairsConfig.ready() (hapairs.jobsteps.register_all)
REGISTRY: dict[str, list[Step]] = {}
# kind → what to do in this process when one of its jobs stops running here, however it
# ends (a drill's probe thread is stopped)
AT_JOB_END: dict[str, Callable[[int], None]] = {}


def register(kind: str, steps: list[Step], *, at_end: Callable[[int], None] | None = None) -> None:
    REGISTRY[kind] = steps
    if at_end is not None:
        AT_JOB_END[kind] = at_end


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_seconds() -> int:
    return settings.JOB_LEASE_SECONDS


def claim(job_id: int, worker: str) -> Job | None:
    """Take the job if it is pending, or running under a lease that has run out."""
    now = timezone.now()
    claimed = (
        Job.objects.filter(pk=job_id)
        .filter(Q(status=JobStatus.PENDING) | Q(status=JobStatus.RUNNING, lease_until__lt=now))
        .update(
            status=JobStatus.RUNNING,
            worker=worker,
            lease_until=now + timedelta(seconds=lease_seconds()),
            attempts=F("attempts") + 1,
        )
    )
    if not claimed:
        return None
    Job.objects.filter(pk=job_id, started_at__isnull=True).update(started_at=now)
    return Job.objects.select_related("pair__primary", "pair__secondary", "appliance", "requested_by").get(pk=job_id)


def renew_lease(job: Job, worker: str, *, progress: int | None = None, step: str | None = None) -> None:
    values: dict = {"lease_until": timezone.now() + timedelta(seconds=lease_seconds())}
    if progress is not None:
        values["progress"] = progress
        job.progress = progress
    if step is not None:
        values["step"] = step[:100]
        job.step = step[:100]
    if not Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, worker=worker, cancel_requested_by="").update(
        **values
    ):
        _lost_or_cancelled(job, worker)


def _lost_or_cancelled(job: Job, worker: str) -> None:
    """An update of our running job changed nothing: a cancel was asked, or it is not ours."""
    if Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, worker=worker).exclude(cancel_requested_by="").exists():
        raise CancelRequested(job.pk)
    raise LeaseLost(f"job {job.pk} is no longer ours")


def _cancelled_summary(job: Job, steps: list[Step], by: str) -> str:
    done = [step.label or step.name for step in steps if step.name in job.steps_done]
    not_done = [step.label or step.name for step in steps if step.name not in job.steps_done]
    during = f" during “{job.step}”" if job.step and job.step in not_done else ""
    return (
        f"Cancelled by {by}{during}. Done: {'; '.join(done) or 'nothing'}. "
        f"Not done: {'; '.join(not_done) or 'nothing'}. A step that had already asked an agent "
        "may have acted there: the pair's status and its pre-flight check say what it is now."
    )


def _mark_step_done(job: Job, worker: str, step: Step, progress: int) -> None:
    job.steps_done = [*job.steps_done, step.name]
    job.progress = progress
    # recorded even when a cancel was asked meanwhile: the step did run
    updated = Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, worker=worker).update(
        steps_done=job.steps_done, progress=progress, lease_until=timezone.now() + timedelta(seconds=lease_seconds())
    )
    if not updated:
        raise LeaseLost(f"job {job.pk} is no longer ours")


def _finish(job: Job, worker: str, status: str, error: str = "") -> bool:
    values = {"status": status, "finished_at": timezone.now(), "lease_until": None, "error": error[:4000]}
    if status == JobStatus.SUCCEEDED:
        values["progress"] = 100
    return bool(Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, worker=worker).update(**values))


def run(job_id: int, *, worker: str | None = None) -> str | None:
    """Claim and run a job to its end. Returns the final status, or None if not ours."""
    worker = worker or worker_name()
    job = claim(job_id, worker)
    if job is None:
        return None
    steps = REGISTRY.get(job.kind)
    if steps is None:
        _finish(job, worker, JobStatus.FAILED, f"No steps are defined for {job.get_kind_display()} jobs.")
        return JobStatus.FAILED
    try:
        return _run_steps(job, worker, steps)
    finally:
        at_end = AT_JOB_END.get(job.kind)
        if at_end is not None:
            at_end(job.pk)


def _run_steps(job: Job, worker: str, steps: list[Step]) -> str | None:
    total = sum(step.weight for step in steps)
    done_weight = 0
    try:
        for step in steps:
            floor = int(100 * done_weight / total)
            span = int(100 * step.weight / total)
            done_weight += step.weight
            if step.name in job.steps_done:
                continue
            renew_lease(job, worker, progress=floor, step=step.label or step.name)
            context = JobContext(job=job, step=step, worker=worker, progress_floor=floor, progress_span=span)
            _run_step_with_retries(context)
            _fault_pause(job, step)
            _mark_step_done(job, worker, step, min(int(100 * done_weight / total), 99))
    except LeaseLost:
        log.warning("job %s: lease lost; another worker carries on", job.pk)
        return None
    except CancelRequested:
        by = Job.objects.filter(pk=job.pk).values_list("cancel_requested_by", flat=True).first() or "an operator"
        summary = _cancelled_summary(job, steps, by)
        if _finish(job, worker, JobStatus.CANCELLED, summary):
            job.error = summary
            _end_event(job, functools.partial(job_cancelled_event, job=job, by=by))
        return JobStatus.CANCELLED
    except StepFailed as exc:
        if _finish(job, worker, JobStatus.FAILED, exc.message):
            _end_event(job, functools.partial(job_failed_event, job=job))
        return JobStatus.FAILED
    except Exception as exc:  # a bug must still leave a clear, terminal record
        log.exception("job %s crashed in step %s", job.pk, job.step)
        message = f"Internal error in step “{job.step}”: {type(exc).__name__}. The administrator can find details in the worker log."
        if _finish(job, worker, JobStatus.FAILED, message):
            _end_event(job, functools.partial(job_failed_event, job=job))
        return JobStatus.FAILED
    if _finish(job, worker, JobStatus.SUCCEEDED):
        _end_event(job, functools.partial(job_succeeded_event, job=job))
    return JobStatus.SUCCEEDED


def _end_event(job: Job, record) -> None:
    """A job's end event, in its own transaction, done again if it is a deadlock's victim."""
    deadlock_retried(record, what=f"job {job.pk}'s end event")


def _fault_pause(job: Job, step: Step) -> None:
    """Fault injection for the crash tests (DEBUG only): stall after a step has acted on the
    agents but before it is recorded, so a test can kill the worker in the worst place."""
    if settings.DEBUG and settings.JOB_FAULT_PAUSE_AFTER_STEP == step.name:
        log.warning("fault injection: pausing after step %s of job %s", step.name, job.pk)
        time.sleep(300)


def _run_step_with_retries(context: JobContext) -> None:
    """Transport failures are retried with backoff (same idempotency key); refusals are final."""
    attempts = settings.JOB_STEP_RETRIES
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            context.step.run(context)
            return
        except agent_client.AgentCertificateChanged as exc:  # never retried: refused until an Admin trusts it
            record = functools.partial(certificate_refused_record, hm_ip=exc.host, presented=exc.got)
            deadlock_retried(record, what="a refused certificate's record")
            raise StepFailed(exc.message) from None
        except agent_client.AgentRejected as exc:
            raise StepFailed(exc.message) from None
        except agent_client.AgentBadReply as exc:
            raise StepFailed(exc.message) from None
        except (agent_client.AgentUnavailable, OperationalError) as exc:
            message = getattr(exc, "message", None) or f"database busy ({type(exc).__name__})"
            if attempt == attempts:
                hint = f" {context.step.unreachable_hint}" if context.step.unreachable_hint else ""
                raise StepFailed(f"{message} (gave up after {attempts} attempts).{hint}") from None
            log.info("job %s step %s: %s; retrying in %.1f s", context.job.pk, context.step.name, message, delay)
            _pause(context, delay)
            delay = min(delay * 2, 5.0)


def _pause(context: JobContext, seconds: float) -> None:
    """Sleep before a retry, renewing the lease (and so reading a cancel request) at least
    twice a second. The database away meanwhile (the retry may be for that) does not end the
    pause: the lease outlasts it, and the step is tried again after."""
    deadline = time.monotonic() + seconds
    renew_lease(context.job, context.worker)
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, CANCEL_CHECK_SECONDS))
        try:
            renew_lease(context.job, context.worker)
        except OperationalError:
            pass


def resumable_jobs(*, pending_grace_seconds: int = 30) -> list[int]:
    """Jobs whose worker died (lease ran out) or whose queue message was lost."""
    now = timezone.now()
    return list(
        Job.objects.filter(
            Q(status=JobStatus.RUNNING, lease_until__lt=now)
            | Q(status=JobStatus.PENDING, created_at__lt=now - timedelta(seconds=pending_grace_seconds))
        ).values_list("pk", flat=True)
    )


__all__ = ["CancelRequested", "JobContext", "Step", "StepFailed", "register", "run", "resumable_jobs"]
