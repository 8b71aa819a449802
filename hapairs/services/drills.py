"""Failover drills: started by an operator or by a pair's drill schedule, refused (with the
pre-flight check's reasons) unless a switchover could run now. One job runs the drill
(hapairs.jobsteps.drills); its scorecard is kept on the ``Drill`` row."""

from __future__ import annotations

import datetime as dt

from celery.schedules import crontab as celery_crontab
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from hapairs import selectors
from hapairs.audit import audited
from hapairs.choices import EventCode, JobKind
from hapairs.models import Drill, DrillSchedule, HAPair
from hapairs.services._common import ServiceError, actor_name, event_record
from hapairs.services.jobs import job_enqueue
from hapairs.services.reports import check_crontab

NO_OTHER_JOB = "No other job running"  # the pre-flight check's label (hapairs.selectors.preflight)


def drill_refusal(pair: HAPair, *, running: bool = False) -> str:
    """Why a drill may not start on the pair now ("" when it may). ``running``: asked by the
    drill's own job, which is the pair's running job."""
    check = selectors.preflight(pair, "switchover")
    failed = [c.detail for c in check.checks if not c.ok and not (running and c.label == NO_OTHER_JOB)]
    if failed:
        return " ".join(failed)
    if not (pair.primary.tls_fingerprint and pair.secondary.tls_fingerprint):
        return (
            "The probe writes through the VIP only to a pinned certificate, and the portal has not pinned "
            f"{pair.primary.name if not pair.primary.tls_fingerprint else pair.secondary.name}'s yet."
        )
    return ""


@audited("pair.drill", target="pair")
def drill_start(
    *,
    pair: HAPair,
    by: AbstractBaseUser | None = None,
    reason: str = "",
    schedule: DrillSchedule | None = None,
) -> Drill:
    """Queue a drill: a switchover, then after the stabilisation window a failback, while a
    probe writes through the VIP. Refused, saying why, when the pre-flight check fails."""
    reason = reason.strip()
    if not reason:
        raise ServiceError("Say why the drill runs; everyone will see it.", field="reason")
    refusal = drill_refusal(pair)
    if refusal:
        raise ServiceError(f"The drill cannot start: {refusal}", conflict=True)
    with transaction.atomic():
        job = job_enqueue(kind=JobKind.DRILL, pair=pair, by=by, reason=reason, params={"generation": pair.generation})
        return Drill.objects.create(
            pair=pair, pair_name=str(pair), job=job, requested_by=by, reason=reason[:500], schedule=schedule
        )


@audited("pair.drill_schedule", target="pair")
def drill_schedule_set(
    *, pair: HAPair, crontab: str, reason: str, enabled: bool = True, by: AbstractBaseUser | None = None
) -> DrillSchedule:
    """Run a drill on the pair on a crontab (the portal's time zone); the pair keeps one."""
    crontab = check_crontab(crontab)
    if len(crontab) > DrillSchedule._meta.get_field("crontab").max_length:
        raise ServiceError(f"“{crontab[:40]}…” is too long a crontab: at most 100 characters.", field="crontab")
    reason = reason.strip()
    if not reason:
        raise ServiceError("Say why the drills run; every drill will carry it.", field="reason")
    schedule, _ = DrillSchedule.objects.update_or_create(
        pair=pair,
        defaults={"crontab": crontab, "reason": reason[:500], "enabled": enabled, "created_by": by},
    )
    event_record(
        code=EventCode.DRILL_SCHEDULED,
        generated_by=actor_name(by),
        pair=pair,
        remarks=f"Cron “{crontab}”{'' if enabled else ' (disabled)'}: {reason}"[:500],
    )
    return schedule


def _cron(expression: str) -> celery_crontab:
    minute, hour, day_of_month, month_of_year, day_of_week = expression.split(" ")
    return celery_crontab(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year, day_of_week=day_of_week
    )


def drills_due(*, now: dt.datetime | None = None) -> list[int]:
    """Beat, every minute: start the drills whose crontab came round since they last ran.
    A refused one is an event with the pre-flight check's reasons (and no retry until the
    next time round). Returns the drills started."""
    now = now or timezone.now()
    local = timezone.localtime(now)
    started = []
    for schedule in DrillSchedule.objects.filter(enabled=True).select_related("pair__primary", "pair__secondary"):
        cron = _cron(schedule.crontab)
        cron.nowfun = lambda local=local: local
        last = timezone.localtime(schedule.last_run_at or schedule.created_at)
        if not cron.is_due(last).is_due:
            continue
        DrillSchedule.objects.filter(pk=schedule.pk).update(last_run_at=now)
        try:
            drill = drill_start(pair=schedule.pair, by=schedule.created_by, reason=schedule.reason, schedule=schedule)
        except ServiceError as exc:
            event_record(
                code=EventCode.DRILL_REFUSED,
                generated_by="mseportal",
                pair=schedule.pair,
                remarks=f"Scheduled drill (cron “{schedule.crontab}”) not started: {exc.message}"[:500],
                why={
                    "rule": "drill.preflight",
                    "text": f"Scheduled drill refused: {exc.message}"[:300],
                    "inputs": {"crontab": schedule.crontab},
                },
            )
        else:
            started.append(drill.pk)
    return started


def drill_history(pair: HAPair, *, limit: int = 10) -> list[Drill]:
    return list(Drill.objects.filter(pair=pair).select_related("job", "requested_by").order_by("-created_at")[:limit])


@audited("pair.drill_schedule_remove", target="pair")
def drill_schedule_remove(*, pair: HAPair, by: AbstractBaseUser | None = None) -> None:
    DrillSchedule.objects.filter(pair=pair).delete()
