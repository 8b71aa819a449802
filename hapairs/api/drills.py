"""Failover drills of a pair: start one (refused with the pre-flight check's reasons), read
its history with the scorecards, and set the pair's drill schedule."""

from __future__ import annotations

from datetime import datetime

from ninja import Router, Schema, Status
from ninja.errors import HttpError

from hapairs import roles, services
from hapairs.api.core import answers, appliance_or_404, pair_of_or_404, require
from hapairs.api.schemas import Input, JobOut, Reason, ReasonIn, job_out
from hapairs.models import Drill

router = Router()


class DrillOut(Schema):
    id: int
    pair: str
    status: str  # the job's: pending, running, succeeded, failed, cancelled
    step: str
    requested_by: str | None
    reason: str
    created_at: datetime
    finished_at: datetime | None
    error: str
    scheduled: bool  # started by the pair's drill schedule
    scorecard: dict | None  # hapairs.drills.SCORECARD: seconds and counts; null until it ends


class DrillStarted(Schema):
    drill: DrillOut
    job: JobOut


class DrillScheduleIn(Input):
    crontab: str
    reason: str = Reason
    enabled: bool = True


class DrillScheduleOut(Schema):
    crontab: str
    reason: str
    enabled: bool
    last_run_at: datetime | None


def drill_out(drill: Drill) -> dict:
    job = drill.job
    return {
        "id": drill.pk,
        "pair": drill.pair_name,
        "status": job.status if job else "failed",
        "step": job.step if job else "",
        "requested_by": drill.requested_by.get_username() if drill.requested_by else None,
        "reason": drill.reason,
        "created_at": drill.created_at,
        "finished_at": drill.finished_at,
        "error": job.error if job else "",
        "scheduled": drill.schedule_id is not None,
        "scorecard": drill.scorecard,
    }


@router.post(
    "/appliances/{name}/ha/drills",
    response=answers({202: DrillStarted}, 400, 403, 404, 409, 422),
    summary="Start a failover drill (switchover, stabilisation window, failback) with its client probe",
)
def drill_start(request, name: str, payload: ReasonIn):
    require(request, roles.OPERATE, "run a failover drill")
    pair = pair_of_or_404(appliance_or_404(name))
    try:
        drill = services.drill_start(pair=pair, by=request.auth, reason=payload.reason)
    except services.ServiceError as exc:  # the pre-flight check refused it, or a job runs
        raise HttpError(409, exc.message) from None
    return Status(202, {"drill": drill_out(drill), "job": job_out(drill.job)})


@router.get(
    "/appliances/{name}/ha/drills",
    response=answers({200: list[DrillOut]}, 400, 404),
    summary="The pair's drills, newest first, with their scorecards",
)
def drill_list(request, name: str):
    pair = pair_of_or_404(appliance_or_404(name))
    return [drill_out(drill) for drill in services.drill_history(pair, limit=50)]


@router.put(
    "/appliances/{name}/ha/drill-schedule",
    response=answers({200: DrillScheduleOut}, 400, 403, 404, 422),
    summary="Run drills on the pair on a crontab (the portal's time zone)",
)
def drill_schedule_put(request, name: str, payload: DrillScheduleIn):
    require(request, roles.OPERATE, "schedule failover drills")
    pair = pair_of_or_404(appliance_or_404(name))
    try:
        schedule = services.drill_schedule_set(
            pair=pair, crontab=payload.crontab, reason=payload.reason, enabled=payload.enabled, by=request.auth
        )
    except services.ServiceError as exc:
        raise HttpError(422, exc.message) from None
    return {k: getattr(schedule, k) for k in ("crontab", "reason", "enabled", "last_run_at")}


@router.delete(
    "/appliances/{name}/ha/drill-schedule",
    response=answers({204: None}, 400, 403, 404),
    summary="Stop the pair's scheduled drills",
)
def drill_schedule_delete(request, name: str):
    require(request, roles.OPERATE, "schedule failover drills")
    services.drill_schedule_remove(pair=pair_of_or_404(appliance_or_404(name)), by=request.auth)
    return Status(204, None)
