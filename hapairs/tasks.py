"""Celery tasks: thin wrappers that take ids, never model instances."""

from __future__ import annotations

import time

from celery import shared_task
from celery.signals import worker_process_shutdown, worker_shutdown
from django.conf import settings

from hapairs import delivery, dispatch, jobs, polling, sharding
from hapairs.audit import audit_context
from hapairs.choices import AuditSource
from hapairs.delivery import DeliveryRetry
from hapairs.models import ReportSchedule
from hapairs.services import alerts, deliveries, status
from hapairs.services.reports import report_schedule_run


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def job_run(job_id: int) -> str | None:
    """Run one job (or nothing, if another worker holds it); its steps are registered
    at start-up (``HapairsConfig.ready``)."""
    return jobs.run(job_id)


@shared_task(ignore_result=True)
def jobs_resume() -> list[int]:
    """Beat: re-queue jobs whose worker died or whose message was lost."""
    job_ids = jobs.resumable_jobs()
    for job_id in job_ids:
        dispatch.send(dispatch.JOB_RUN, job_id)
    return job_ids


# Polls go last: on Redis a worker takes every other message (refreshes after a push, jobs,
# mail: sent at kombu's default priority, 0) before any poll, so the fast path never waits
# behind the safety net; among themselves the shards' queues are taken in turn.
POLL_PRIORITY = 9


@shared_task(ignore_result=True)
def fleet_poll() -> dict:
    """Beat, every MSEPORTAL_POLL_SECONDS: one ``poll_shard`` per shard, each onto its own
    queue, dropped if no worker starts it within the interval (the next round is coming)."""
    shards, fired_at = settings.POLL_SHARDS, time.time()
    for shard in range(shards):
        dispatch.send(
            dispatch.POLL_SHARD,
            shard,
            shards,
            fired_at,
            queue=sharding.queue(shard),
            expires=float(settings.POLL_SECONDS),
            priority=POLL_PRIORITY,
        )
    return {"fired_at": fired_at, "queues": sharding.queues(shards)}


@shared_task(bind=True, ignore_result=True)
def poll_shard(self, shard: int, shards: int, fired_at: float | None = None) -> dict:
    """Ask the agents of shard ``shard`` (of ``shards``, as beat counted them) for their HA
    info and new events; skipped if another worker is still on the shard's previous round,
    or polled the shard since this round was fired (a worker behind schedule)."""
    return polling.poll_shard(shard, shards, fired_at=fired_at, worker=self.request.hostname or "")


@shared_task(ignore_result=True)
def appliances_refresh(appliance_ids: list[int]) -> dict:
    """Refresh a few appliances at once (after an event push, or a Refresh Status click); on
    the ``refresh`` queue (CELERY_TASK_ROUTES), never behind the polls."""
    return polling.poll(appliance_ids)


@worker_process_shutdown.connect
@worker_shutdown.connect
def _agent_connections_close(**_) -> None:
    """A worker (or a prefork child) stopping closes the agent connections its polls kept."""
    polling.close()


@shared_task(ignore_result=True)
def heartbeat_samples_prune() -> int:
    """Beat, daily: keep MSEPORTAL_HEARTBEAT_KEEP_DAYS of heartbeat samples."""
    return status.heartbeat_samples_prune(keep_days=settings.HEARTBEAT_KEEP_DAYS)


# --- health reports, alerts and their deliveries ------------------------------------------
@shared_task(ignore_result=True)
def report_send_scheduled(schedule_id: int) -> int | None:
    """Beat (each ReportSchedule's PeriodicTask names this): build the report, queue its e-mail."""
    schedule = ReportSchedule.objects.filter(pk=schedule_id).first()
    with audit_context(AuditSource.SCHEDULE, name="schedule"):
        queued = report_schedule_run(schedule=schedule) if schedule is not None else None
    return queued.pk if queued is not None else None


@shared_task(
    bind=True,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(DeliveryRetry,),
    max_retries=5,
    retry_backoff=settings.DELIVERY_RETRY_BACKOFF_SECONDS,
    retry_backoff_max=600,
    retry_jitter=False,
)
def delivery_send(self, delivery_id: int) -> str | None:
    """Send one report or alert (a no-op if it is already sent); retried with backoff."""
    return delivery.attempt(delivery_id, retries=self.request.retries, final=self.request.retries >= self.max_retries)


@shared_task(ignore_result=True)
def alert_dispatch(kind: str, event_id: int) -> int | None:
    """An event worth an alert was recorded: send it, or hold it back by the rate limit."""
    alert = alerts.alert_for_event(kind=kind, event_id=event_id)
    return alert.pk if alert is not None else None


@shared_task(ignore_result=True)
def licenses_expiry_check() -> list[int]:
    """Beat, daily: alert licenses as their expiry nears."""
    return [alert.pk for alert in alerts.license_expiry_check()]


@shared_task(name="hapairs.tasks.licences_expiry_check", ignore_result=True)
def licenses_expiry_check_old_name() -> list[int]:
    """The same, under the name beat sent before the rename (a message queued across the upgrade)."""
    return licenses_expiry_check()


@shared_task(ignore_result=True)
def drills_due() -> list[int]:
    """Beat, every minute: start the scheduled failover drills that are due."""
    from hapairs import services

    with audit_context(AuditSource.SCHEDULE, name="drill schedule"):
        return services.drills_due()


@shared_task(ignore_result=True)
def deliveries_resume() -> list[int]:
    """Beat: re-queue deliveries whose message was lost or whose worker died mid-send."""
    delivery_ids = deliveries.deliveries_resume()
    for delivery_id in delivery_ids:
        dispatch.send(dispatch.DELIVERY_SEND, delivery_id)
    return delivery_ids
