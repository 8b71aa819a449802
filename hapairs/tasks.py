"""Celery tasks: thin wrappers that take ids, never model instances."""

from __future__ import annotations

from celery import shared_task

from hapairs import jobs


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def job_run(job_id: int) -> str | None:
    """Run one job (or nothing, if another worker holds it)."""
    import hapairs.jobsteps  # noqa: F401  (fills jobs.REGISTRY)

    return jobs.run(job_id)


@shared_task(ignore_result=True)
def jobs_resume() -> list[int]:
    """Beat: re-queue jobs whose worker died or whose message was lost."""
    job_ids = jobs.resumable_jobs()
    for job_id in job_ids:
        job_run.delay(job_id)
    return job_ids


@shared_task(ignore_result=True)
def fleet_poll() -> dict:
    """Beat: ask every agent for its HA info and new events."""
    from hapairs import polling

    return polling.poll()


@shared_task(ignore_result=True)
def appliances_refresh(appliance_ids: list[int]) -> dict:
    """Refresh a few appliances at once (after an event push, or a Refresh Status click)."""
    from hapairs import polling

    return polling.poll(appliance_ids)


@shared_task(ignore_result=True)
def heartbeat_samples_prune() -> int:
    """Beat, daily: keep MSEPORTAL_HEARTBEAT_KEEP_DAYS of heartbeat samples."""
    from django.conf import settings

    from hapairs.services.status import heartbeat_samples_prune as prune

    return prune(keep_days=settings.HEARTBEAT_KEEP_DAYS)
